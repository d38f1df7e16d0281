"""Two edges (two workers, or two nodes) behind one shared tier (a real redis-server on 127.0.0.1) and one origin: what one stores, the other serves without the origin; Vary variants
stay apart; a listed digest is refused and removed; a purge reaches the shared tier; a dead
tier is only a miss."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.cache.shared import primary_key
from proxy.rfc.target import canonical_target
from tests.integration.conftest import Edge, free_port
from tests.redis_server import RedisServer

HOST = "site.example"


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def edges(
    make_edge: Callable[..., Awaitable[Edge]],
) -> AsyncIterator[Callable[..., Awaitable[Edge]]]:
    """make_edge, and the shared tier of each edge closed before the edge itself."""
    made: list[Edge] = []

    async def factory(origin_url: str, **overrides: Any) -> Edge:
        # The default 50 ms lookup deadline fits an idle machine; on a loaded CI runner a
        # first lookup (connection handshake included) can exceed it and count as an error.
        overrides.setdefault("cache__shared_tier_timeout_s", 1.0)
        edge = await make_edge(origin_url, **overrides)
        made.append(edge)
        return edge

    yield factory
    for edge in made:
        await edge.pipeline.close()


def origin_app(
    body: Callable[[web.Request], bytes] | bytes = b"shared body",
    headers: dict[str, str] | None = None,
) -> tuple[web.Application, list[web.Request]]:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        h = headers if headers is not None else {"Cache-Control": "max-age=60"}
        if "ETag" in h and request.headers.get("If-None-Match") == h["ETag"]:
            return web.Response(status=304, headers=h)
        return web.Response(body=body(request) if callable(body) else body, headers=h)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    return app, seen


async def get(
    s: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    # One public name, as clients of a fleet send it (the edges listen on different ports).
    async with s.get(url, headers={"Host": HOST, **headers}) as r:
        return r.status, await r.read(), r.headers


async def stored_by(edge: Edge) -> None:
    assert edge.pipeline.shared is not None
    assert await edge.pipeline.shared.flush()


async def test_edge_b_serves_what_edge_a_stored_without_the_origin(
    origin_server, edges, redis_url
) -> None:
    app, seen = origin_app()
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession() as s:
        status, body, h = await get(s, a.url + "/doc")
        assert status == 200 and "fwd=miss" in h["Cache-Status"] and "stored" in h["Cache-Status"]
        await stored_by(a)
        assert a.stats.shared_stores == 1 and a.stats.shared_misses == 1

        status, body, h = await get(s, b.url + "/doc")
        assert status == 200 and body == b"shared body"
        assert h["Cache-Status"].startswith("edgeproxy; hit; ttl=")
        assert h["Cache-Status"].endswith("; detail=shared")
        assert 0 <= int(h["Age"]) <= 1 and "1.1 edgeproxy" in h["Via"]
        assert len(seen) == 1 and b.stats.shared_hits == 1

        # Now in B's memory tier: an ordinary hit, no second shared lookup.
        status, body, h = await get(s, b.url + "/doc")
        assert status == 200 and "detail=shared" not in h["Cache-Status"]
        status, _, h = await get(s, b.url + "/doc", **{"Cache-Control": "no-cache"})
        assert status == 200 and "fwd=stale" in h["Cache-Status"]
    assert len(seen) == 2 and b.stats.shared_hits == 1


async def test_concurrent_misses_make_one_shared_lookup(origin_server, edges, redis_url) -> None:
    app, seen = origin_app()
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession() as s:
        await get(s, a.url + "/many")
        await stored_by(a)
        answers = await asyncio.gather(*(get(s, b.url + "/many") for _ in range(8)))
    assert all(st == 200 and body == b"shared body" for st, body, _ in answers)
    assert b.stats.shared_hits + b.stats.shared_misses == 1 and b.stats.shared_hits == 1
    assert len(seen) == 1


async def test_vary_variants_stay_apart_across_edges(origin_server, edges, redis_url) -> None:
    app, seen = origin_app(
        lambda r: b"encoded as " + r.headers.get("Accept-Encoding", "identity").encode(),
        {"Cache-Control": "max-age=60", "Vary": "Accept-Encoding"},
    )
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        for enc in ("gzip", "br"):
            await get(s, a.url + "/v", **{"Accept-Encoding": enc})
        await stored_by(a)
        assert len(seen) == 2
        for enc in ("br", "gzip"):
            status, body, h = await get(s, b.url + "/v", **{"Accept-Encoding": enc})
            assert body == b"encoded as " + enc.encode() and "detail=shared" in h["Cache-Status"]
        status, body, h = await get(s, b.url + "/v", **{"Accept-Encoding": "zstd"})
        assert body == b"encoded as zstd" and "fwd=miss" in h["Cache-Status"]
    assert len(seen) == 3


async def test_listed_digest_from_the_shared_tier_is_refused_and_removed(
    origin_server, edges, redis_url
) -> None:
    app, seen = origin_app(b"infringing bytes")
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    digest = hashlib.sha256(b"infringing bytes").hexdigest()
    async with aiohttp.ClientSession() as s:
        await get(s, a.url + "/x")
        await stored_by(a)
        b.block(BlockEntry(id="d1", type=EntryType.SHA256, value=digest, notice="N-7"))
        status, body, h = await get(s, b.url + "/x")
        assert status == 451 and b"d1" in body and "detail=blocked" in h["Cache-Status"]
        assert len(seen) == 1  # refused from the shared copy, not fetched again
        t = canonical_target(b"/x", HOST.encode())
        assert b.pipeline.memory.vary_fields((t.authority, t.raw_path_query)) is None
        assert b.pipeline.memory.purged == 0  # it never entered B's memory tier
        await stored_by(b)
        # Gone from the shared tier: A's memory still has it (A enforces no list), but a
        # third edge finds nothing shared.
        c = await edges(url, cache__shared_tier_url=redis_url)
        status, _, h = await get(s, c.url + "/x")
        assert status == 200 and "fwd=miss" in h["Cache-Status"]
        assert (c.stats.shared_misses, c.stats.shared_errors, c.stats.shared_hits) == (1, 0, 0)
        assert len(seen) == 2
    assert b.stats.purged_by_blocklist == 1 and b.stats.blocked[0][3] == 1


def _coded(coding: str, data: bytes) -> bytes:
    import gzip
    import zlib

    import brotli
    from backports import zstd

    def gz(b: bytes) -> bytes:  # no timestamp in its header: the same bytes every second
        return gzip.compress(b, mtime=0)

    return {
        "gzip": gz,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": zstd.compress,
        "gzip, br": lambda b: brotli.compress(gz(b)),
        "x-unknown": lambda b: b[::-1],
    }[coding](data)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "gzip, br", "x-unknown"])
async def test_a_content_coded_body_is_served_from_the_shared_tier(
    origin_server, edges, redis_url, coding: str
) -> None:
    """A coded body is stored under its identity digest (content codings removed), and an
    unknown coding under the unjudged one: the shared tier's check must accept both, not
    refuse (and delete) every coded record as a sha256 of the stored bytes did."""
    plain = b"a page that travels compressed " * 40
    app, seen = origin_app(
        _coded(coding, plain), {"Cache-Control": "max-age=60", "Content-Encoding": coding}
    )
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        status, body, _ = await get(s, a.url + "/z")
        assert status == 200 and body == _coded(coding, plain)
        await stored_by(a)
        status, body, h = await get(s, b.url + "/z")
        assert status == 200 and body == _coded(coding, plain)
        assert h["Cache-Status"].endswith("; detail=shared"), h["Cache-Status"]
    assert len(seen) == 1 and (b.stats.shared_hits, b.stats.shared_errors) == (1, 0)


async def test_a_record_whose_body_was_swapped_is_refused_and_deleted(
    origin_server, edges, redis_url
) -> None:
    """Anyone who can write the tier could swap a coded body under its judged digest: the
    body is decoded again and hashed, and a mismatch is refused, deleted and fetched anew."""
    import msgspec

    from proxy.cache.shared import Record

    plain = b"the body that was judged " * 40
    app, seen = origin_app(
        _coded("gzip", plain), {"Cache-Control": "max-age=60", "Content-Encoding": "gzip"}
    )
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        await get(s, a.url + "/z")
        await stored_by(a)
        t = canonical_target(b"/z", HOST.encode())
        key = primary_key((t.authority, t.raw_path_query))
        import redis.asyncio as aioredis

        r = aioredis.from_url(redis_url)
        try:
            raw = await r.get(key)
            rec = msgspec.msgpack.decode(raw, type=Record)
            swapped = msgspec.structs.replace(rec, body=_coded("gzip", b"something else"))
            await r.set(key, msgspec.msgpack.encode(swapped))
            b = await edges(url, cache__shared_tier_url=redis_url)
            status, body, h = await get(s, b.url + "/z")
            assert status == 200 and body == _coded("gzip", plain)
            assert "fwd=miss" in h["Cache-Status"]
            assert b.stats.shared_errors == 1 and len(seen) == 2
        finally:
            await r.aclose()


async def test_operator_purge_reaches_the_shared_tier(origin_server, edges, redis_url) -> None:
    app, seen = origin_app()
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession() as s:
        await get(s, a.url + "/p?q=1")
        await stored_by(a)
        target = canonical_target(b"/p?q=1", HOST.encode())
        assert a.pipeline.cache.purge_primary((target.authority, target.raw_path_query)) == 1
        await stored_by(a)
        status, _, h = await get(s, b.url + "/p?q=1")
        assert status == 200 and "fwd=miss" in h["Cache-Status"]
        assert len(seen) == 2 and b.stats.shared_misses == 1
        # Host purge: the primaries this worker holds leave the shared tier too.
        await stored_by(b)
        assert b.pipeline.cache.purge_host(HOST) == 1
        await stored_by(b)
        status, _, h = await get(s, a.url + "/p?q=1")
        assert "fwd=miss" in h["Cache-Status"] and len(seen) == 3


async def test_stale_shared_entry_is_the_validator(origin_server, edges, redis_url) -> None:
    app, seen = origin_app(headers={"Cache-Control": "no-cache", "ETag": '"e1"'})
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    b = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession() as s:
        await get(s, a.url + "/nc")
        await stored_by(a)
        status, body, h = await get(s, b.url + "/nc")
    assert status == 200 and body == b"shared body"
    assert "fwd=stale; fwd-status=304" in h["Cache-Status"]
    assert len(seen) == 2 and seen[1].headers["If-None-Match"] == '"e1"'
    assert b.stats.shared_hits == 1


async def test_dead_shared_tier_is_only_a_miss(origin_server, edges) -> None:
    app, seen = origin_app()
    url = await origin_server(app)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    a = await edges(url, cache__shared_tier_url=dead)
    b = await edges(url, cache__shared_tier_url=dead)
    async with aiohttp.ClientSession() as s:
        for edge in (a, b, a, b):
            status, body, _ = await get(s, edge.url + "/d")
            assert status == 200 and body == b"shared body"
        await stored_by(a)
    assert len(seen) == 2  # each edge missed once, then hit its own memory
    assert a.stats.shared_errors >= 2 and a.stats.shared_hits == 0
    assert a.stats.handler_errors == 0 and b.stats.handler_errors == 0
    assert primary_key((HOST, b"/d")).startswith("ep1:p:")


async def test_uncacheable_urls_stop_asking_the_shared_tier(
    origin_server, edges, redis_url
) -> None:
    app, seen = origin_app(headers={"Cache-Control": "no-store"})
    url = await origin_server(app)
    a = await edges(url, cache__shared_tier_url=redis_url)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            status, _, h = await get(s, a.url + "/live")
            assert status == 200 and "detail=no-store" in h["Cache-Status"]
    # One lookup; then hit-for-miss sends requests straight to the origin.
    assert a.stats.shared_misses == 1 and a.stats.shared_stores == 0 and len(seen) == 3
