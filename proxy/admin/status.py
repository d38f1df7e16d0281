"""`edgeproxy status`: a one-screen summary of a running node from its admin API."""

from __future__ import annotations

import time

import aiohttp


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


async def show_status(admin: str, token: str, *, interval_s: float = 1.0) -> int:
    base = admin.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as s:
        try:
            async with s.get(base + "/status") as r1:
                first = await r1.json()
            t1 = time.monotonic()
            await __import__("asyncio").sleep(interval_s)
            async with s.get(base + "/status") as r2:
                second = await r2.json()
            t2 = time.monotonic()
        except aiohttp.ClientError as e:
            print(f"edgeproxy status: cannot reach {base}: {e}")
            return 1
    total1 = sum(first["requests"].values())
    total2 = sum(second["requests"].values())
    req = second["requests"]
    served = (
        req.get("hit", 0) + req.get("stale", 0) + req.get("miss", 0) + req.get("revalidated", 0)
    )
    ratio = (req.get("hit", 0) + req.get("stale", 0)) / served if served else 0.0
    print(
        f"edgeproxy at {base}: up {second['uptime_s']:.0f} s, {len(second['workers'])} workers, "
        f"{second['restarts']} restarts"
    )
    print(f"  requests: {total2} total, {(total2 - total1) / (t2 - t1):.1f} req/s now")
    print("  by result: " + ", ".join(f"{k} {v}" for k, v in req.items()))
    print(f"  hit ratio: {ratio:.1%} (hits+stale of cache-served)")
    print("  blocked: " + ", ".join(f"{k} {v}" for k, v in second["blocked"].items()))
    used = sum(w["cache_bytes"] for w in second["workers"])
    cap = sum(w["cache_max_bytes"] for w in second["workers"]) or 1
    objs = sum(w["cache_objects"] for w in second["workers"])
    print(f"  cache: {objs} objects, {_fmt_bytes(used)} of {_fmt_bytes(cap)} ({used / cap:.1%})")
    print(f"  blocklist: node version {second['blocklist_version']}")
    for w in second["workers"]:
        at = w["blocklist_applied_at"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"
        print(
            f"    worker {w['worker']} (pid {w['pid']}): version {w['blocklist_version']} "
            f"applied {when}, {w['connections']} connections"
        )
    return 0
