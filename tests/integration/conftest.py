"""Fixtures for integration tests: a real origin (aiohttp) and a real edge worker (front +
pipeline) on 127.0.0.1, in the test's event loop, talking real HTTP.

`make_edge(origin_url, **config)` builds one worker in-process with the worker's own builder
(`proxy.state.build_worker`: fast, and its state is inspectable); tests of the supervisor start `edgeproxy serve` as a subprocess instead.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.config import Config, OriginConfig, Site, validate
from proxy.front.server import FrontServer
from proxy.metrics import WorkerStats
from proxy.origin import OriginPool
from proxy.origin.h1 import H1OriginPool
from proxy.pipeline import Pipeline
from proxy.state import build_worker
from tests.integration.scripted import MakePool, ScriptedOrigin, Step


class Edge:
    def __init__(self, cfg: Config, pipeline: Pipeline, server: FrontServer, origin: OriginPool):
        self.cfg = cfg
        self.pipeline = pipeline
        self.server = server
        self.origin = origin

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def stats(self) -> WorkerStats:
        return self.pipeline.stats

    def block(self, *entries: BlockEntry, version: int | None = None) -> None:
        current = self.pipeline.blocklist
        snap = Snapshot.compile(
            [*current.entries_by_id.values(), *entries],
            version if version is not None else current.version + 1,
            0.0,
        )
        self.pipeline.enforcer.apply(snap)

    async def close(self) -> None:
        await self.server.drain_and_close(1.0)
        await self.origin.close()


def config(origin_url: str, **overrides: Any) -> Config:
    """A Config with one catch-all site for `origin_url`; overrides use section__field keys,
    e.g. cache__max_object_bytes=1000."""
    cfg = msgspec.structs.replace(
        Config(), workers=1, sites=[Site(name="test", hosts=["*"], origin=origin_url)]
    )
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if "__" in key:
            section, name = key.split("__", 1)
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, values in sections.items():
        top[section] = msgspec.structs.replace(getattr(cfg, section), **values)
    return validate(msgspec.structs.replace(cfg, **top))


@pytest.fixture
async def make_edge() -> AsyncIterator[Callable[..., Awaitable[Edge]]]:
    edges: list[Edge] = []

    async def factory(origin_url: str, *, cfg: Config | None = None, **overrides: Any) -> Edge:
        cfg = cfg or config(origin_url, **overrides)
        # The worker's own wiring (proxy/state.py), so tests run what production runs.
        parts = build_worker(cfg)
        origin, pipeline, server = parts.origin, parts.pipeline, parts.server
        await origin.start()
        await server.start(host="127.0.0.1", port=0)
        edge = Edge(cfg, pipeline, server, origin)
        edges.append(edge)
        return edge

    yield factory
    for edge in edges:
        await edge.close()


@pytest.fixture
async def origin_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start an aiohttp app on 127.0.0.1; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{site.port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def raw_request(port: int, data: bytes, *, read_timeout_s: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout), return what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        async with asyncio.timeout(read_timeout_s):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[H1OriginPool] = []

    async def make(**cfg: Any) -> H1OriginPool:
        pool = H1OriginPool(OriginConfig(**cfg))
        await pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[ScriptedOrigin]]]:
    origins: list[ScriptedOrigin] = []

    async def start(respond: Callable[[int, int, bytes, bytes], list[Step]]) -> ScriptedOrigin:
        origin = await ScriptedOrigin(respond).start()
        origins.append(origin)
        return origin

    yield start
    for origin in origins:
        await origin.close()
