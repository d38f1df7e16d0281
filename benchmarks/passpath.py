"""In-process cost of the paths that reach the origin: Python time per pass-through request
(1 KiB, `Cache-Control: no-store`) and per cold miss (1 KiB, a new URL each time: fetch, hash,
store), through the front, the pipeline and the llhttp origin client, without sockets (fake
transports on both sides), best of several rounds. `coldnode` is the cold miss with a node
tier of 1 GiB (in a temporary directory, under `NODE_TIER_BENCH_DIR` when set): its lookup,
lease, store and commit, as a worker of `make run` does them. `noderead` is a worker's first
request for an object another worker stored in the node tier (the full path: admit, block,
the node tier's read, proof and finish, deliver), as after a restart or in a long tail; the
objects are stored by another edge on the same tier first, outside the timing.

    .venv/bin/python -m benchmarks.passpath [--requests 20000] [--rounds 5] [--profile pass]

As benchmarks/hitpath.py does for hits, it isolates what this project's code spends; `make
bench` measures the whole server (kernel, uvloop, the load generator's share of the machine).
`--profile SCENARIO` prints cProfile's top entries for one round instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import os
import pstats
import tempfile
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

from benchmarks.hitpath import _Transport, edge_in_process
from proxy.config import Config
from proxy.front.server import Connection, FrontServer
from proxy.origin import OriginPool
from proxy.origin.h1 import H1OriginPool, _Conn, _Host

BODY = b"x" * 1024
DATE = b"Sun, 06 Dec 2026 20:00:00 GMT"
ANSWERS = {
    "pass": b"HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/octet-stream\r\n"
    b"Cache-Control: no-store\r\nContent-Length: 1024\r\n\r\n" % DATE + BODY,
    "cold": b"HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/octet-stream\r\n"
    b'Cache-Control: public, max-age=3600\r\nETag: "0123456789abcdef"\r\n'
    b"Content-Length: 1024\r\n\r\n" % DATE + BODY,
}
ANSWERS["coldnode"] = ANSWERS["cold"]
NODE_SCENARIOS = ("coldnode", "noderead")


class _FrontTransport(_Transport):
    """hitpath's fake transport; each answer (one write for these small bodies) wakes the
    driver."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        self.last = data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))


class _OriginTransport:
    """An origin connection that answers each request, on the next loop turn, with `answer`."""

    def __init__(self, conn: _Conn, answer: bytes) -> None:
        self.conn = conn
        self.answer = answer
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        del self.sent[:-4]
        self.conn.loop.call_soon(self.conn.data_received, self.answer)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def _fake_connect(pool: H1OriginPool, answer: bytes) -> None:
    async def connect(host: _Host, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        pool._open += 1
        conn = _Conn(pool, host, loop)
        pool._conns.add(conn)
        conn.connection_made(_OriginTransport(conn, answer))  # type: ignore[arg-type]
        return conn

    pool._connect = connect  # type: ignore[method-assign]


@contextlib.contextmanager
def _node_dir(scenario: str) -> Iterator[Path | None]:
    if scenario not in NODE_SCENARIOS:
        yield None
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("NODE_TIER_BENCH_DIR")) as tmp:
        yield Path(tmp) / "node-cache"


async def measure(
    scenario: str, requests: int, rounds: int, profile: bool = False, stored: int = 0
) -> float:
    """Best CPU per request; `stored`: at least this many objects in the tier for
    `noderead` (a count that does not grow with `requests`, for `benchmarks.icount`)."""
    with _node_dir(scenario) as node_tier:
        return await _measure(scenario, requests, rounds, profile, node_tier, stored)


def _fresh_answer() -> bytes:
    """The cold miss's answer dated now: fresh for the hour its max-age gives."""
    return ANSWERS["cold"].replace(DATE, formatdate(usegmt=True).encode())


class _Client:
    """One connection to an edge in process. `start`: an edge whose origin answers every
    request with `answer` (`_fake_connect`), with its node tier at `node_tier`, if any."""

    def __init__(self, pool: OriginPool, server: FrontServer) -> None:
        self.pool, self.server = pool, server
        self.conn = Connection(server)
        self.transport = _FrontTransport()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def start(cls, answer: bytes, node_tier: Path | None) -> _Client:
        pool = OriginPool(Config().origin)
        _fake_connect(pool.h1, answer)
        _cfg, pool, server = await edge_in_process(
            "http://127.0.0.1:9", 1 << 30, pool=pool, node_tier=node_tier
        )
        return cls(pool, server)

    async def request(self, path: bytes) -> None:
        """GET `path`, until its answer is written."""
        fut = self.transport.waiter = self.loop.create_future()
        self.conn.data_received(
            b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
        )
        await fut
        # As in a server, where the next request comes in a later read: the front has settled
        # this one (its done callbacks have run) and takes the next head on its strict path;
        # the turn's node-tier stores are committed.
        await asyncio.sleep(0)

    async def close(self) -> None:
        self.conn.connection_lost(None)
        await self.server.drain_and_close(1.0)
        await self.pool.close()


async def _store_all(paths: int, node_tier: Path | None) -> None:
    """`noderead`'s objects, stored in the node tier by another edge (another worker)."""
    client = await _Client.start(_fresh_answer(), node_tier)
    for n in range(1, paths + 1):
        await client.request(b"/cold/%d" % n)
    await client.close()


async def _measure(
    scenario: str, requests: int, rounds: int, profile: bool, node_tier: Path | None, stored: int
) -> float:
    if scenario == "noderead":
        await _store_all(max(stored, 3 + rounds * requests), node_tier)
        answer = _fresh_answer()  # not sent: every request is answered by the node tier
    else:
        answer = ANSWERS[scenario]
    client = await _Client.start(answer, node_tier)
    transport = client.transport
    if scenario == "pass":
        paths: Iterator[bytes] = itertools.repeat(b"/nostore/1024")
    else:
        paths = (b"/cold/%d" % n for n in itertools.count(1))
    for _ in range(3):
        await client.request(next(paths))
    gc.collect()
    gc.freeze()
    expect = {"pass": b"detail=no-store", "noderead": b"detail=node"}.get(scenario, b"stored")
    assert transport.last.startswith(b"HTTP/1.1 200"), transport.last[:300]
    assert expect in transport.last, transport.last[:400]
    best = float("inf")
    profiler = cProfile.Profile() if profile else None
    for _ in range(rounds):
        if profiler is not None:
            profiler.enable()
        started = time.process_time()
        for i in range(requests):
            await client.request(next(paths))
            if i % 2000 == 1999:  # as a worker does once a second (gc_freeze_interval_s)
                gc.collect(1)
                gc.freeze()
        best = min(best, time.process_time() - started)
        if profiler is not None:
            profiler.disable()
    await client.close()
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(35)
    return best / requests


def per_request_s(
    scenario: str, requests: int, rounds: int, profile: bool = False, stored: int = 0
) -> float:
    """`measure` on uvloop (as the server runs) when it is installed."""
    try:
        import uvloop

        return uvloop.run(measure(scenario, requests, rounds, profile, stored))
    except ImportError:
        return asyncio.run(measure(scenario, requests, rounds, profile, stored))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenarios", default="pass,cold")
    parser.add_argument("--profile", default="", help="a scenario: cProfile one round")
    args = parser.parse_args()
    if args.profile:
        per_request_s(args.profile, args.requests, 1, profile=True)
        return
    for scenario in args.scenarios.split(","):
        cost = per_request_s(scenario, args.requests, args.rounds)
        print(
            f"{scenario}: {cost * 1e6:.2f} µs of CPU per request in front + pipeline + origin "
            f"client (best of {args.rounds} × {args.requests})"
        )


if __name__ == "__main__":
    main()
