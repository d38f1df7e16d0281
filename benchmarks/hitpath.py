"""In-process cost of the hit path: Python time per cache hit through the front and the
pipeline, without sockets (a fake transport), best of several rounds.

    .venv/bin/python -m benchmarks.hitpath [--requests 50000] [--rounds 7] [--head NAME]
        [--access-log [--text]]

`--head` picks the request head (HEADS): the front's cost grows with its fields when llhttp's
callbacks parse it, much less when the strict head (proxy/front/strict.py) takes it.

It isolates what this project's code spends per hit; `make bench` measures the whole server
(kernel, uvloop and the load generator's share of the machine included).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from proxy.cache.memory import MemoryTier
from proxy.cache.node import prepare
from proxy.config import Config, Site, validate
from proxy.context import SPECIAL_FIELDS
from proxy.front.request_id import RequestIds
from proxy.front.server import Connection, FrontServer
from proxy.metrics import WorkerStats
from proxy.node.accesslog import AccessLog
from proxy.origin import OriginPool
from proxy.pipeline import Pipeline
from proxy.sites import SiteTable
from proxy.state import front_limits, node_finisher, open_node_tier

REQUEST = (
    b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
HEADS = {
    "default": REQUEST,
    "wrk": b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",  # what wrk sends
    "browser": (
        b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nDNT: 1\r\n"
        b"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n"
        b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n"
    ),
}


class _Transport:
    """Just enough of an asyncio transport for the front to answer into."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, **_: int) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_write_buffer_size(self) -> int:
        return 0


async def edge_in_process(
    origin: str,
    memory_bytes: int,
    *,
    pool: OriginPool | None = None,
    access_log: AccessLog | None = None,
    request_ids: RequestIds | None = None,
    node_tier: Path | None = None,
) -> tuple[Config, OriginPool, FrontServer]:
    """One worker's front, pipeline and origin client for `origin`, wired as production wires
    them (proxy/state.py), the front started on a port no request uses; with `node_tier`, a
    node tier of 1 GiB there (its disk preallocated, as `make run`'s where the disk allows)."""
    cfg = validate(
        msgspec.structs.replace(
            Config(), workers=1, sites=[Site(name="b", hosts=["*"], origin=origin)]
        )
    )
    if node_tier is not None:
        cache = msgspec.structs.replace(
            cfg.cache, node_tier_bytes=1 << 30, node_tier_path=str(node_tier)
        )
        cfg = msgspec.structs.replace(cfg, cache=cache)
        prepare(
            node_tier,
            cache.node_tier_bytes,
            prealloc=cache.node_tier_preallocate,
            keep_free_bytes=cache.node_tier_preallocate_keep_free_bytes,
        )
    sites = SiteTable(cfg)
    if pool is None:
        pool = OriginPool(cfg.origin)
    await pool.start()
    memory = MemoryTier(memory_bytes, 1 << 23)
    stats = WorkerStats(sites.names)
    pipeline = Pipeline(cfg, sites, memory, pool, stats, access_log=access_log)
    node = open_node_tier(cfg, stats, pipeline.fetcher.via) if node_tier is not None else None
    if node is not None:
        pipeline.cache.attach_node(node, node_finisher(sites))
    server = FrontServer(
        pipeline,
        front_limits(cfg),
        flag_headers=SPECIAL_FIELDS,
        fast_answer=pipeline.fast_answer,
        fast_answer_logs=access_log is not None,
        # As production builds it (proxy/state.py): a request id in every answer, by default.
        request_ids=request_ids
        or (RequestIds(cfg.log.request_id_header) if cfg.log.request_id_header else None),
    )
    await server.start(host="127.0.0.1", port=0)
    return cfg, pool, server


async def measure(
    requests: int,
    rounds: int,
    head: bytes = REQUEST,
    *,
    access_log: bool = False,
    text: bool = False,
) -> float:
    """Best CPU per hit; with `access_log`, each hit also logged (JSON, or the text form with
    `text`, to /dev/null, request ids included as production logs them) and the lines
    formatted and written every 1,000 hits, inside the timing, as the worker does them every
    0.2 s."""

    async def origin(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1024, headers={"Cache-Control": "max-age=3600"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", origin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ids = RequestIds(Config().log.request_id_header)
    log = AccessLog("/dev/null", 1.0, ["b"], 0, text=text, request_ids=ids) if access_log else None
    cfg, pool, server = await edge_in_process(
        f"http://127.0.0.1:{site.port}", 1 << 28, access_log=log, request_ids=ids
    )
    conn = Connection(server)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    # Miss, hit, hot hit: asked again until a hit comes back (a slow or loaded machine, or
    # valgrind, takes longer than any fixed wait for the miss's fetch), for 60 s at most.
    deadline = time.monotonic() + 60.0
    while b"; hit" not in transport.last and time.monotonic() < deadline:
        conn.data_received(head)
        await asyncio.sleep(0.2)
    conn.data_received(head)
    assert b"; hit" in transport.last, transport.last[:300]
    assert not cfg.log.request_id_header or b"X-Request-Id: " in transport.last
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for i in range(requests):
            conn.data_received(head)
            if log is not None and i % 1000 == 999:
                log.flush()
        best = min(best, time.process_time() - started)
    conn.connection_lost(None)
    await server.drain_and_close(1.0)
    await pool.close()
    await runner.cleanup()
    return best / requests


def per_hit_s(
    requests: int,
    rounds: int,
    head: bytes = REQUEST,
    *,
    access_log: bool = False,
    text: bool = False,
) -> float:
    """`measure` on uvloop (as the server runs) when it is installed."""
    run = measure(requests, rounds, head, access_log=access_log, text=text)
    try:
        import uvloop

        return uvloop.run(run)
    except ImportError:
        return asyncio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--head", choices=sorted(HEADS), default="default")
    parser.add_argument("--access-log", action="store_true", help="log every hit (JSON)")
    parser.add_argument("--text", action="store_true", help="with --access-log: the text form")
    args = parser.parse_args()
    per_hit = per_hit_s(
        args.requests, args.rounds, HEADS[args.head], access_log=args.access_log, text=args.text
    )
    print(
        f"{per_hit * 1e6:.2f} µs of CPU per hit in front + pipeline (best of {args.rounds} × {args.requests})"
    )


if __name__ == "__main__":
    main()
