"""Issue 10, exhaustion: origin bodies held back to be judged come out of a byte budget
(`cache.inflight_body_bytes`, each worker its share). A read the budget cannot cover ends with
503 + Retry-After and none of the unjudged body; the budget is whole again once answers are out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

BODY = bytes(range(256)) * 1200  # 300 KiB


def held_origin(release: asyncio.Event, *, chunked: bool = False, size: int = len(BODY)):  # type: ignore[no-untyped-def]
    """Answers every request with the first KiB at once and the rest after `release`."""
    body = (BODY * (size // len(BODY) + 1))[:size]

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        cc = request.query.get("cc", "max-age=60")
        resp = web.StreamResponse(headers={"Cache-Control": cc})
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:1024])
        await release.wait()
        for i in range(1024, len(body), 64 << 10):
            await resp.write(body[i : i + (64 << 10)])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, body


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "?cc=max-age%3D60"),  # storable: spooled to be stored
        ("GET", "?cc=no-store"),  # not stored: spooled to be judged before delivery
        ("POST", ""),  # pass-through: the same
    ],
)
async def test_a_read_over_the_budget_is_503_and_the_budget_comes_back(
    origin_server, make_edge, method: str, query: str
) -> None:
    release = asyncio.Event()
    app, body = held_origin(release)
    edge = await make_edge(
        await origin_server(app), cache__inflight_body_bytes=400 << 10, workers=1
    )
    budget = edge.pipeline.fetcher.budget
    async with aiohttp.ClientSession() as s:
        first = asyncio.ensure_future(s.request(method, edge.url + "/one" + query, data=b"x"))
        await until(lambda: budget.used > 0)  # the first answer holds its 300 KiB
        async with s.request(method, edge.url + "/two" + query, data=b"x") as r:
            text = await r.read()
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            assert "detail=over-budget" in r.headers["Cache-Status"]
            assert body[:1024] not in text  # nothing of the unjudged body
        release.set()
        async with await first as r1:
            assert r1.status == 200 and await r1.read() == body
        await until(lambda: budget.used == 0)
        async with s.request(method, edge.url + "/two" + query, data=b"x") as r:
            assert r.status == 200 and await r.read() == body
    assert budget.used == 0 and edge.stats.inflight_refused == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_one_body_larger_than_the_budget_is_503_never_relayed(
    origin_server, make_edge, chunked: bool
) -> None:
    """Known length: refused before a byte is read; unknown length: refused as the doubling
    reads outgrow the budget. Either way the client gets none of it."""
    release = asyncio.Event()
    release.set()
    app, body = held_origin(release, chunked=chunked, size=1 << 20)
    edge = await make_edge(
        await origin_server(app), cache__inflight_body_bytes=512 << 10, workers=1
    )
    async with aiohttp.ClientSession() as s:
        for query in ("", "?cc=no-store"):
            async with s.get(edge.url + "/big" + query) as r:
                text = await r.read()
                assert r.status == 503 and "detail=over-budget" in r.headers["Cache-Status"]
                assert body[:1024] not in text
    assert edge.pipeline.fetcher.budget.used == 0 and edge.stats.inflight_refused == 2


async def test_the_budget_is_the_nodes_split_between_workers(origin_server, make_edge) -> None:
    release = asyncio.Event()
    app, _ = held_origin(release)
    edge = await make_edge(await origin_server(app), cache__inflight_body_bytes=4 << 20, workers=4)
    assert edge.pipeline.fetcher.budget.max_bytes == 1 << 20
