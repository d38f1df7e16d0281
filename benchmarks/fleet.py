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

Before the pushes, **the takedown service** (`edgeproxy takedown serve --fleet … --fleet-node …`,
its own process, its file drop mirrored into the same feed) is driven for `--service-s` seconds
by `--clients` concurrent clients, each filing a notice (a submitter's account, one new URL per
notice, so one case each) and deciding it at once (an operator's account): notices/s accepted,
decisions/s, published versions/s, and per case decision → published and decision → enforced
on every node (the last node's enforced_at, from the service's own delivery records), after
the service has been given `--drain-s` to deliver what was decided.

    python -m benchmarks.fleet --nodes 5 --pushes 100 --service-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from proxy.blocklist.format import render_version
from proxy.blocklist.model import Entry, EntryType
from proxy.config import FleetConfig
from proxy.fleet import feed
from proxy.fleet.demo import DEMO_TOKEN, FleetProcesses, demo_notice, free_port, until


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


async def run(
    nodes: int = 5,
    pushes: int = 100,
    root: Path | None = None,
    *,
    service_s: float = 5.0,
    clients: int = 8,
    drain_s: float = 60.0,
) -> dict[str, Any]:
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
        last_id = await _acked_by_all(r, keys, names, 1, "0-0")
        service = None
        if service_s > 0:
            service = await run_service(fleet, root, service_s, clients, drain_s)
        head, _ = await feed.read_head(r, keys)
        last_id = await _acked_by_all(r, keys, names, head, "0-0")
        nonce = uuid.uuid4().hex[:6]
        acked, enforced = [], []
        for i in range(pushes):
            seq = head + 1 + i
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
            "not_451": wrong + (service["not_451"] if service else 0),
            "service": service,
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        }
    finally:
        await fleet.stop()
        await origin.cleanup()


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"edgeproxy {' '.join(args[:2])}: {out.decode()}")
    return out.decode().strip().splitlines()[-1]


async def run_service(
    fleet: FleetProcesses, root: Path, duration_s: float, clients: int, drain_s: float
) -> dict[str, Any]:
    """The takedown service as its own process, publishing to the fleet's feed; `clients`
    file and decide notices for `duration_s`, then the service gets `drain_s` to deliver."""
    db = str(root / "takedown.db")
    submitter = await _cli("takedown", "add-account", "--db", db, "--name", "bench", "--role", "submitter")  # fmt: skip
    operator = await _cli("takedown", "add-account", "--db", db, "--name", "desk", "--role", "operator")  # fmt: skip
    host = f"127.0.0.1:{fleet.ports[0][0]}"
    await _cli("takedown", "add-site", "--db", db, "--host", host, "--customer", "bench")
    # Every notice names the same site: without this, the repeat-infringer policy would
    # suspend it (a host entry blocking all of 127.0.0.1) after the second one.
    cfg = root / "takedown.toml"
    big = 10**9
    cfg.write_text(
        f"[strikes]\nwarn_at = {big}\nsuspend_at = {big + 1}\n"
        f"unverified_warn_at = {big}\nunverified_suspend_at = {big + 1}\n"
    )
    port = free_port()
    log = open(root / "takedown.log", "wb")  # noqa: SIM115 - the child owns it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "takedown", "serve", "--listen", f"127.0.0.1:{port}",
        "--db", db, "--config", str(cfg), "--blocklist-dir", str(fleet.drop),
        "--signing-key", str(root / "keys" / "blocklist.key"), "--fleet", fleet.redis_url,
        *(a for n in fleet.names() for a in ("--fleet-node", n)),
        stdout=log, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    base = f"http://127.0.0.1:{port}"
    nonce = uuid.uuid4().hex[:6]
    try:
        async with aiohttp.ClientSession() as s:
            await until(lambda: _answers(s, base + "/healthz", proc), 30.0, "takedown service")
            counts = {"accepted": 0, "decided": 0, "errors": 0}
            loop = asyncio.get_running_loop()
            t0 = time.time()
            deadline = loop.time() + duration_s
            seen = iter(range(10**9))

            async def client() -> None:
                while loop.time() < deadline:
                    url = f"http://{host}/notice-{nonce}-{next(seen)}"
                    async with s.post(base + "/notices", json=demo_notice(url), headers={"Authorization": f"Bearer {submitter}"}) as resp:  # fmt: skip
                        body = await resp.json()
                    if resp.status != 201:
                        counts["errors"] += 1
                        continue
                    counts["accepted"] += 1
                    decision = {"decision": "action", "reason": "bench"}
                    async with s.post(f"{base}/cases/{body['case']}/decision", json=decision, headers={"Authorization": f"Bearer {operator}"}) as resp:  # fmt: skip
                        await resp.read()
                    if resp.status == 200:
                        counts["decided"] += 1
                    else:
                        counts["errors"] += 1

            await asyncio.gather(*(client() for _ in range(clients)))
            filed_s = time.time() - t0
            n_nodes = len(fleet.names())
            drained = await _drain(db, counts["decided"], n_nodes, drain_s)
            rows = _cases(db, n_nodes)
            wrong = 0
            for listen, _ in fleet.ports:  # a sample of what was decided answers 451 everywhere
                for path in [r["path"] for r in rows[:: max(1, len(rows) // 10)]]:
                    async with s.get(f"http://127.0.0.1:{listen}{path}") as resp:
                        wrong += resp.status != 451
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    published = [r["published_at"] for r in rows if r["published_at"]]
    done = [r for r in rows if r["enforced_at"] is not None]
    decided = [r["decided_at"] for r in rows]
    span = (max(published) - min(decided)) if published and decided else 0.0
    return {
        "duration_s": filed_s,
        "clients": clients,
        "accepted": counts["accepted"],
        "decided": counts["decided"],
        "errors": counts["errors"],
        "notices_per_s": counts["accepted"] / filed_s,
        "decisions_per_s": counts["decided"] / filed_s,
        "published_per_s": len(published) / span if span > 0 else 0.0,
        "versions": len({r["file_sequence"] for r in rows if r["file_sequence"]}),
        "decided_to_published_ms": pcts(
            [(r["published_at"] - r["decided_at"]) * 1e3 for r in rows if r["published_at"]]
        ),
        "decided_to_enforced_ms": pcts([(r["enforced_at"] - r["decided_at"]) * 1e3 for r in done]),
        "enforced_on_all": len(done),
        "drained": drained,
        "not_451": wrong,
    }


async def _answers(s: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> bool:
    if proc.returncode is not None:
        raise RuntimeError(f"the takedown service exited with {proc.returncode}")
    try:
        async with s.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


def _cases(db: str, n_nodes: int) -> list[dict[str, Any]]:
    """Per decided case: when it was decided and published, its version, the target's path,
    and when the last of the nodes enforced it (None until all have)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT c.decided_at, p.published_at, p.file_sequence, p.entries,"
            " MAX(d.enforced_at) AS last, COUNT(d.enforced_at) AS n"
            " FROM cases c JOIN publications p ON p.case_id = c.id"
            " LEFT JOIN deliveries d ON d.publication_id = p.id"
            " WHERE c.decided_at IS NOT NULL GROUP BY p.id ORDER BY p.id"
        ).fetchall()
    finally:
        conn.close()
    out = []
    for row in rows:
        value = json.loads(row["entries"])[0]["value"]
        out.append(
            {
                "decided_at": row["decided_at"],
                "published_at": row["published_at"],
                "file_sequence": row["file_sequence"],
                "enforced_at": row["last"] if row["n"] == n_nodes else None,
                "path": urlsplit(value).path,
            }
        )
    return out


async def _drain(db: str, decided: int, n_nodes: int, timeout_s: float) -> bool:
    """Poll (with a deadline) until every decided case is enforced on every node."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        rows = _cases(db, n_nodes)
        if len(rows) >= decided and all(r["enforced_at"] is not None for r in rows):
            return True
        await asyncio.sleep(0.2)
    return False


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


def service_table(sv: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"takedown service, {sv['clients']} clients filing and deciding for "
            f"{sv['duration_s']:.1f} s: {sv['accepted']} notices accepted "
            f"({sv['notices_per_s']:.1f}/s), {sv['decided']} decided ({sv['decisions_per_s']:.1f}/s), "
            f"published {sv['published_per_s']:.1f}/s in {sv['versions']} versions, enforced on "
            f"every node: {sv['enforced_on_all']}/{sv['decided']}; errors {sv['errors']}",
            "",
            "| per case | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} | {p['p50']:.1f} | {p['p99']:.1f} | {p['max']:.1f} |"
                for name, p in (
                    ("decision → published", sv["decided_to_published_ms"]),
                    ("decision → enforced on every node", sv["decided_to_enforced_ms"]),
                )
            ),
        ]
    )


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
    if result.get("service"):
        lines += ["", service_table(result["service"])]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--pushes", type=int, default=100)
    p.add_argument("--service-s", type=float, default=5.0, help="0: no takedown service part")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--drain-s", type=float, default=60.0)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    result = asyncio.run(
        run(
            args.nodes,
            args.pushes,
            service_s=args.service_s,
            clients=args.clients,
            drain_s=args.drain_s,
        )
    )
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
