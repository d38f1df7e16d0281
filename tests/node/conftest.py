"""Fixtures for tests of a whole node (`edgeproxy serve` as a subprocess): the real origin of
the integration fixtures, a list of started nodes stopped after the test, and small helpers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.integration.conftest import origin_server  # noqa: F401 - a fixture, used by name
from tests.integration.node import Node


def origin_app(seen: list[str], *, delay_s: float = 0.0, tag: str = "A") -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(text=f"{tag}:{request.path}", headers={"Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.fixture
async def nodes():
    """Nodes a test starts; each is stopped (SIGTERM, then SIGKILL) after it."""
    started: list[Node] = []
    yield started
    for n in started:
        await n.stop()


async def get(url: str, **kw) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url, **kw) as r:
            return r.status, dict(r.headers), await r.read()
