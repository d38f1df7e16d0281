"""Scenario `fleet`: push → enforced on every node of a fleet following the feed on Redis,
against the admin-API fan-out it replaces (issue 13).

Starts redis-server and N edge nodes (`proxy/fleet/demo.py` `FleetProcesses`, each node a real
`edgeproxy serve --fleet` process with one worker) in front of a tiny origin, then, per push:

- **fleet**: sign a delta adding one url entry onto the feed's head and publish it (one Lua
  script call); the time until every node's acknowledgement is seen on the ack stream
  (`acked`), and until the last node's own `enforced_at` (`enforced`, the proof timestamp:
  every worker of that node answered that it enforces the version);
- **admin fan-out**: POST the same kind of entry to every node's admin API at once, as the
  takedown service's per-edge workers do; the time until the last node answers (each answers
  once all its workers enforce it).

Then a sample of the pushed URLs is fetched from every node: each must be 451.

    python -m benchmarks.fleet --nodes 5 --pushes 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.blocklist.format import render_version
from proxy.blocklist.model import Entry, EntryType
from proxy.config import FleetConfig
from proxy.fleet import feed
from proxy.fleet.demo import DEMO_TOKEN, FleetProcesses


def pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)],
        "max": ordered[-1],
        "n": len(ordered),
    }


async def _origin() -> tuple[web.AppRunner, int]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="x", headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


async def _acked_by_all(r: Any, keys: feed.Keys, names: list[str], seq: int, last_id: str) -> str:
    """Block on the ack stream until every node acknowledged `seq`; the last id read."""
    waiting = set(names)
    while waiting:
        got = await r.xread({keys.ack_stream: last_id}, block=5000, count=100)
        if not got:
            raise TimeoutError(f"nodes {sorted(waiting)} did not acknowledge version {seq}")
        for _stream, entries in got:
            for entry_id, fields in entries:
                last_id = feed._s(entry_id)
                if int(fields[b"seq"]) >= seq:
                    waiting.discard(feed._s(fields[b"node"]))
    return last_id


async def run(nodes: int = 5, pushes: int = 100, root: Path | None = None) -> dict[str, Any]:
    root = root or Path(tempfile.mkdtemp(prefix="edgeproxy-bench-fleet-"))
    origin, origin_port = await _origin()
    fleet = FleetProcesses(root, nodes, f"http://127.0.0.1:{origin_port}")
    try:
        await fleet.start_redis()
        fleet.seed()
        r = feed.connect(FleetConfig(redis_url=fleet.redis_url, block_s=10.0))
        keys = feed.Keys()
        await feed.publish(r, keys, (fleet.drop / "blocklist-0000000001.jsonl").read_bytes())
        await fleet.start_nodes()
        names = fleet.names()
        last = await r.xrevrange(keys.ack_stream, count=1)
        last_id = feed._s(last[0][0]) if last else "0-0"
        last_id = await _acked_by_all(r, keys, names, 1, "0-0")
        nonce = uuid.uuid4().hex[:6]
        acked, enforced = [], []
        for i in range(pushes):
            seq = i + 2
            e = Entry(f"f-{nonce}-{i}", EntryType.URL, f"http://127.0.0.1/fleet-{nonce}-{i}")
            data = render_version(seq, [e], base=seq - 1, private_key_pem=fleet.private)
            t_wall, t0 = time.time(), time.perf_counter()
            await feed.publish(r, keys, data)
            last_id = await _acked_by_all(r, keys, names, seq, last_id)
            acked.append((time.perf_counter() - t0) * 1e3)
            ats = [float(v) for v in (await r.hgetall(keys.acks(seq))).values()]
            enforced.append((max(ats) - t_wall) * 1e3)
        fanout = await _fanout(fleet, pushes, nonce)
        wrong = await _check_451(fleet, nonce, pushes)
        await r.aclose()
        return {
            "nodes": nodes,
            "pushes": pushes,
            "fleet_acked_ms": pcts(acked),
            "fleet_enforced_ms": pcts(enforced),
            "admin_fanout_ms": pcts(fanout),
            "not_451": wrong,
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        }
    finally:
        await fleet.stop()
        await origin.cleanup()


async def _fanout(fleet: FleetProcesses, pushes: int, nonce: str) -> list[float]:
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    out = []
    async with aiohttp.ClientSession(headers=headers) as s:

        async def one(admin: int, body: dict[str, Any]) -> None:
            async with s.post(f"http://127.0.0.1:{admin}/blocklist/entries", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"admin {admin}: HTTP {resp.status}")
                await resp.read()

        for i in range(pushes):
            body = {"entries": [{"id": f"a-{nonce}-{i}", "type": "url",
                                 "value": f"http://127.0.0.1/admin-{nonce}-{i}"}]}  # fmt: skip
            t0 = time.perf_counter()
            await asyncio.gather(*(one(admin, body) for _, admin in fleet.ports))
            out.append((time.perf_counter() - t0) * 1e3)
    return out


async def _check_451(fleet: FleetProcesses, nonce: str, pushes: int) -> int:
    wrong = 0
    async with aiohttp.ClientSession() as s:
        for listen, _ in fleet.ports:
            for i in range(0, pushes, max(1, pushes // 10)):
                for path in (f"/fleet-{nonce}-{i}", f"/admin-{nonce}-{i}"):
                    async with s.get(f"http://127.0.0.1:{listen}{path}") as resp:
                        wrong += resp.status != 451
    return wrong


def table(result: dict[str, Any]) -> str:
    rows = [
        ("fleet feed: every node's ack seen", result["fleet_acked_ms"]),
        ("fleet feed: last node's enforced_at", result["fleet_enforced_ms"]),
        ("admin API fan-out: last answer", result["admin_fanout_ms"]),
    ]
    lines = [
        f"{result['nodes']} nodes, {result['pushes']} pushes, one worker each; "
        f"load average at the end {result['loadavg'][0]:.2f} on {result['cpus']} CPUs; "
        f"pushed URLs not answering 451: {result['not_451']}",
        "",
        "| push → enforced on every node | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {n} | {p['p50']:.1f} | {p['p99']:.1f} | {p['max']:.1f} |" for n, p in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--pushes", type=int, default=100)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    result = asyncio.run(run(args.nodes, args.pushes))
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
