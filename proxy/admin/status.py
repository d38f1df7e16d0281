"""`edgeproxy status`: a one-screen summary of a running node from its admin API.

Two reads of `/status`, `interval_s` apart, give the request rate; everything else comes from
the second read. Fields a node does not report (an older version, a worker that did not answer)
show as "-" rather than failing: this is what an operator runs when something is already wrong.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

RESULT_ORDER = ("hit", "stale", "miss", "revalidated", "pass", "blocked", "error")
LOOKUPS = ("hit", "stale", "miss", "revalidated")  # requests the cache could have answered


def fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def fmt_duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def fmt_when(at: Any, now: float) -> str:
    if not isinstance(at, int | float) or at <= 0:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
    return f"{stamp} ({fmt_duration(max(0.0, now - at))} ago)"


def _num(d: Any, key: str) -> float:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int | float) else 0


def _counts(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {str(k): v for k, v in d.items() if isinstance(v, int | float)}


class StatusUnavailable(Exception):
    pass


async def fetch_status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/status") as r:
        if r.status != 200:
            text = (await r.text())[:200]
            raise StatusUnavailable(f"{base}/status answered {r.status}: {text}")
        try:
            data = await r.json(content_type=None)
        except ValueError as e:
            raise StatusUnavailable(f"{base}/status is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise StatusUnavailable(f"{base}/status is not a JSON object")
    return data


def render(
    base: str, first: dict[str, Any] | None, second: dict[str, Any], elapsed_s: float
) -> str:
    """The summary text; `first` (an earlier read) gives the rate, when there is one."""
    now = _num(second, "now") or time.time()
    workers = [w for w in second.get("workers") or [] if isinstance(w, dict)]
    req = _counts(second.get("requests"))
    total = sum(req.values())
    lines = []
    uptime = second.get("uptime_s")
    up = fmt_duration(uptime) if isinstance(uptime, int | float) else "-"
    restarts = second.get("restarts", "-")
    lines.append(f"edgeproxy at {base}: up {up}, {len(workers)} workers, {restarts} restarts")

    if first is not None and elapsed_s > 0:
        rate = f"{(total - sum(_counts(first.get('requests')).values())) / elapsed_s:.1f} req/s"
    else:
        rate = "- req/s"
    lines.append(f"  requests: {total} total, {rate} now")
    order = [r for r in RESULT_ORDER if r in req] + [r for r in req if r not in RESULT_ORDER]
    lines.append("  by result: " + (", ".join(f"{r} {req[r]}" for r in order) or "-"))
    lookups = sum(req.get(r, 0) for r in LOOKUPS)
    if lookups:
        ratio = (req.get("hit", 0) + req.get("stale", 0)) / lookups
        lines.append(f"  hit ratio: {ratio:.1%} (hit+stale of {lookups} cache lookups)")
    else:
        lines.append("  hit ratio: - (no cache lookups yet)")

    blocked = _counts(second.get("blocked"))
    detail = ", ".join(f"{t} {n}" for t, n in blocked.items() if n)
    lines.append(f"  blocked: {sum(blocked.values())}" + (f" ({detail})" if detail else ""))

    used = sum(_num(w, "cache_bytes") for w in workers)
    cap = sum(_num(w, "cache_max_bytes") for w in workers)
    objs = sum(_num(w, "cache_objects") for w in workers)
    fill = f" ({used / cap:.1%})" if cap else ""
    cap_text = fmt_bytes(cap) if cap else "-"
    lines.append(f"  cache: {objs:.0f} objects, {fmt_bytes(used)} of {cap_text}{fill}")

    node_version = second.get("blocklist_version", "-")
    lines.append(f"  blocklist: node version {node_version}")
    for w in sorted(workers, key=lambda w: _num(w, "worker")):
        version = w.get("blocklist_version", "-")
        behind = (
            "  (BEHIND the node)"
            if isinstance(version, int) and isinstance(node_version, int) and version < node_version
            else ""
        )
        lines.append(
            f"    worker {w.get('worker', '?')} (pid {w.get('pid', '-')}): "
            f"blocklist version {version} applied {fmt_when(w.get('blocklist_applied_at'), now)}, "
            f"{_num(w, 'requests'):.0f} requests, {_num(w, 'connections'):.0f} connections, "
            f"{_num(w, 'cache_objects'):.0f} objects"
            f"{behind}"
        )
    return "\n".join(lines)


async def show_status(admin: str, token: str, *, interval_s: float = 1.0) -> int:
    base = admin.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as s:
            first: dict[str, Any] | None = None
            t1 = time.monotonic()
            if interval_s > 0:
                first = await fetch_status(s, base)
                t1 = time.monotonic()
                await asyncio.sleep(interval_s)
            second = await fetch_status(s, base)
            t2 = time.monotonic()
    except (aiohttp.ClientError, TimeoutError) as e:
        print(f"edgeproxy status: cannot reach {base}: {e or type(e).__name__}")
        return 1
    except StatusUnavailable as e:
        print(f"edgeproxy status: {e}")
        return 1
    print(render(base, first, second, t2 - t1))
    return 0
