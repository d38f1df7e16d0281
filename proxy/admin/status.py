"""`edgeproxy status` and `edgeproxy blocklist status`: one-screen summaries of a running node
from its admin API, in one form (issue 17: the two used to disagree).

Both take the same options (`--admin`, default `$EDGEPROXY_ADMIN_URL` or http://127.0.0.1:8081;
`--timeout`; `--json`, the admin API's answer as is), read the token from
`$EDGEPROXY_ADMIN_TOKEN`, print a headline `edgeproxy … at URL: …` followed by indented
`name: value` lines and one line per worker, give times as `YYYY-MM-DD HH:MM:SSZ (N ago)`, and
on failure print `edgeproxy … status: why` to stderr and exit 1.

Two reads of `/status`, `interval_s` apart, give the request rate; everything else comes from
the second read. Fields a node does not report (an older version, a worker that did not answer)
show as "-" rather than failing: this is what an operator runs when something is already wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

ADMIN_URL_ENV = "EDGEPROXY_ADMIN_URL"
TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"
DEFAULT_ADMIN = "http://127.0.0.1:8081"
BLOCK_TYPES = ("url", "prefix", "host", "sha256")

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


def fmt_loading(job: Any) -> str | None:
    """A running compile job (`NodeBlocklist.loading_status`) as one line; None when none."""
    if not isinstance(job, dict):
        return None
    done, total = _num(job, "entries_done"), _num(job, "entries_total")
    share = f" ({done / total:.0%})" if total else ""
    eta = job.get("eta_s")
    eta_text = fmt_duration(eta) if isinstance(eta, int | float) else "-"
    return (
        f"loading ({job.get('what', '-')}, pid {job.get('pid', '-')}): {job.get('phase', '-')} "
        f"{done:,.0f} of {total:,.0f} entries{share}, "
        f"{_num(job, 'entries_per_s'):,.0f} entries/s, eta {eta_text}, "
        f"running {fmt_duration(_num(job, 'running_s'))}"
    )


def _num(d: Any, key: str) -> float:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int | float) else 0


def _counts(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {str(k): v for k, v in d.items() if isinstance(v, int | float)}


class StatusUnavailable(Exception):
    pass


def admin_base(admin: str | None) -> str:
    """`--admin` as given, else `$EDGEPROXY_ADMIN_URL`, else the default; scheme added."""
    base = (admin or os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN).rstrip("/")
    return base if "://" in base else "http://" + base


async def fetch_json(session: aiohttp.ClientSession, base: str, path: str) -> dict[str, Any]:
    async with session.get(base + path) as r:
        if r.status != 200:
            text = (await r.text())[:200]
            hint = f" (is {TOKEN_ENV} set?)" if r.status in (401, 403) else ""
            raise StatusUnavailable(f"{base}{path} answered {r.status}: {text}{hint}")
        try:
            data = await r.json(content_type=None)
        except ValueError as e:
            raise StatusUnavailable(f"{base}{path} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise StatusUnavailable(f"{base}{path} is not a JSON object")
    return data


async def fetch_status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    return await fetch_json(session, base, "/status")


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
    if (loading := fmt_loading(second.get("blocklist_loading"))) is not None:
        lines.append(f"    {loading}")
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


def render_blocklist(base: str, answer: dict[str, Any], now: float | None = None) -> str:
    """`edgeproxy blocklist status`: the node's version, entries by type, each worker's version
    and when it applied it (the takedown proof), and the version history."""
    now = now if now is not None else time.time()
    version = answer.get("version", "-")
    workers = [w for w in answer.get("workers") or [] if isinstance(w, dict)]
    counts = _counts(answer.get("counts"))
    lines = [
        f"edgeproxy blocklist at {base}: version {version}, {len(workers)} workers, "
        f"{sum(counts.values()):.0f} entries"
    ]
    lines.append(f"  applied: {fmt_when(answer.get('applied_at'), now)}")
    lines.append(
        "  entries: "
        + ", ".join(f"{t} {counts.get(t, 0):.0f}" for t in BLOCK_TYPES)
        + f" ({_num(answer, 'pushed_entries'):.0f} pushed)"
    )
    failures = answer.get("reload_failures", "-")
    lines.append(f"  reload failures: {failures}")
    if (loading := fmt_loading(answer.get("loading"))) is not None:
        lines.append(f"  {loading}")
    lines.append("  workers:")
    for w in sorted(workers, key=lambda w: _num(w, "worker")):
        wv = w.get("version", "-")
        behind = (
            "  (BEHIND the node)"
            if isinstance(wv, int) and isinstance(version, int) and wv < version
            else ""
        )
        lines.append(
            f"    worker {w.get('worker', '?')} (pid {w.get('pid', '-')}): "
            f"blocklist version {wv} applied {fmt_when(w.get('applied_at'), now)}{behind}"
        )
    history = [h for h in answer.get("history") or [] if isinstance(h, dict)]
    if history:
        lines.append("  history:")
        for h in history:
            lines.append(
                f"    version {h.get('version', '-')} applied "
                f"{fmt_when(h.get('applied_at'), now)} from {h.get('source', '-')}"
            )
    return "\n".join(lines)


def _session(timeout_s: float, token: str | None = None) -> aiohttp.ClientSession:
    token = os.environ.get(TOKEN_ENV, "").strip() if token is None else token
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"} if token else {}
    return aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s))


def _fail(command: str, base: str, e: BaseException) -> int:
    if isinstance(e, StatusUnavailable):
        print(f"{command}: {e}", file=sys.stderr)
    else:
        print(f"{command}: cannot reach {base}: {e or type(e).__name__}", file=sys.stderr)
    return 1


async def show_status(
    admin: str | None,
    token: str | None = None,
    *,
    interval_s: float = 1.0,
    timeout_s: float = 10.0,
    as_json: bool = False,
) -> int:
    """`edgeproxy status`. `token` overrides `$EDGEPROXY_ADMIN_TOKEN` (None: the variable)."""
    base = admin_base(admin)
    if as_json:
        interval_s = 0.0  # the node's answer as is: no rate to compute
    try:
        async with _session(timeout_s, token) as s:
            first: dict[str, Any] | None = None
            t1 = time.monotonic()
            if interval_s > 0:
                first = await fetch_status(s, base)
                t1 = time.monotonic()
                await asyncio.sleep(interval_s)
            second = await fetch_status(s, base)
            t2 = time.monotonic()
    except (aiohttp.ClientError, TimeoutError, StatusUnavailable) as e:
        return _fail("edgeproxy status", base, e)
    print(json.dumps(second, indent=2) if as_json else render(base, first, second, t2 - t1))
    return 0


async def show_blocklist_status(
    admin: str | None, *, timeout_s: float = 10.0, as_json: bool = False
) -> int:
    """`edgeproxy blocklist status`."""
    base = admin_base(admin)
    try:
        async with _session(timeout_s) as s:
            answer = await fetch_json(s, base, "/blocklist")
    except (aiohttp.ClientError, TimeoutError, StatusUnavailable) as e:
        return _fail("edgeproxy blocklist status", base, e)
    print(json.dumps(answer, indent=2) if as_json else render_blocklist(base, answer))
    return 0


def add_status_options(p: Any) -> None:
    """The options both status commands take (argparse parser)."""
    p.add_argument(
        "--admin",
        default=None,
        help=f"admin API URL (default ${ADMIN_URL_ENV} or {DEFAULT_ADMIN}); token from ${TOKEN_ENV}",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON answer")
