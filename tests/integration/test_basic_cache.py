"""The edge in front of a real origin: MISS then HIT, Cache-Status, Via, X-Forwarded-For."""

from __future__ import annotations

import aiohttp
from aiohttp import web


def counting_origin(headers: dict[str, str], body: bytes = b"hello") -> tuple[web.Application, list[web.Request]]:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, seen


async def test_miss_then_hit_rfc9111_s4(origin_server, make_edge) -> None:
    """RFC 9111 §4: a fresh stored response is reused without contacting the origin."""
    app, seen = counting_origin({"Cache-Control": "max-age=60", "X-Custom": "kept"})
    edge = await make_edge(await origin_server(app))
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + "/a") as r1:
            assert r1.status == 200 and await r1.read() == b"hello"
            assert r1.headers["Cache-Status"].startswith("edgeproxy; fwd=miss; fwd-status=200; stored")
            assert r1.headers["X-Custom"] == "kept"
            assert "1.1 edgeproxy" in r1.headers["Via"]
        async with s.get(edge.url + "/a") as r2:
            assert r2.status == 200 and await r2.read() == b"hello"
            assert r2.headers["Cache-Status"].startswith("edgeproxy; hit")
            assert int(r2.headers["Age"]) >= 0
    assert len(seen) == 1
    assert seen[0].headers["X-Forwarded-For"] == "127.0.0.1"
    assert "1.1 edgeproxy" in seen[0].headers["Via"]


async def test_no_store_is_not_stored_with_reason_rfc9111_s5_2_2_5(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.2.5: no-store responses are not stored; the reason shows in Cache-Status."""
    app, seen = counting_origin({"Cache-Control": "no-store"})
    edge = await make_edge(await origin_server(app))
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.get(edge.url + "/n") as r:
                assert r.status == 200 and await r.read() == b"hello"
                assert "detail=no-store" in r.headers["Cache-Status"]
    assert len(seen) == 2
    assert edge.stats.not_stored[[*__import__("proxy.metrics").metrics.NO_STORE].index("no-store")] == 2


async def test_hot_hits_see_blocklist_purge_and_expiry(origin_server, make_edge) -> None:
    """The hot-hit map never outlives a blocklist version, a purge or an entry's freshness."""
    from proxy.blocklist.model import Entry as BlockEntry
    from proxy.blocklist.model import EntryType

    app, seen = counting_origin({"Cache-Control": "max-age=60"})
    edge = await make_edge(await origin_server(app))
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # miss, hit (remembered as hot), hot hit
            async with s.get(edge.url + "/hot") as r:
                assert r.status == 200
        assert len(seen) == 1
        assert edge.pipeline.cache.purge_host("127.0.0.1") == 1
        async with s.get(edge.url + "/hot") as r:
            assert r.status == 200 and "fwd=miss" in r.headers["Cache-Status"]
        async with s.get(edge.url + "/hot") as r:
            assert "hit" in r.headers["Cache-Status"]
        edge.block(BlockEntry(id="b1", type=EntryType.URL, value="http://127.0.0.1/hot"))
        async with s.get(edge.url + "/hot") as r:
            assert r.status == 451
    assert len(seen) == 2


async def test_hot_hits_keep_http10_connection_rules(origin_server, make_edge) -> None:
    """RFC 9112 §9.3: an HTTP/1.0 client keeps the connection only when it asked to."""
    import asyncio

    from tests.integration.conftest import raw_request

    app, seen = counting_origin({"Cache-Control": "max-age=60"})
    edge = await make_edge(await origin_server(app))
    for _ in range(3):  # miss, hit, hot hit (fast answer)
        answer = await raw_request(edge.server.port, b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
        assert b"Connection: close" in answer
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.server.port)
    for _ in range(2):
        writer.write(b"GET /old HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: keep-alive" in head and b"; hit" in head
        assert await reader.readexactly(5) == b"hello"
    writer.close()
    assert len(seen) == 1


async def test_purge_added_uses_the_indexes(origin_server, make_edge) -> None:
    """Applying a pushed version purges stored copies: url entries by their match key (any
    spelling of the URL that was stored), digests by the digest index, prefixes and hosts by
    theirs (issue 19: no walk of the cache)."""
    import hashlib

    from proxy.blocklist.model import Entry as BlockEntry
    from proxy.blocklist.model import EntryType

    app, _seen = counting_origin({"Cache-Control": "max-age=60"})
    edge = await make_edge(await origin_server(app))
    async with aiohttp.ClientSession() as s:
        for path in ("/a/One", "/a/%4fne?x=1", "/a/two?x=1", "/b/three", "/c/four"):
            async with s.get(edge.url + path) as r:
                assert r.status == 200
    memory = edge.pipeline.memory
    assert memory.stats().objects == 5

    async def apply(*entries: BlockEntry) -> int:
        edge.block(*entries)
        return await edge.pipeline.enforcer.purge_added(list(entries), edge.pipeline.blocklist)

    assert await apply(BlockEntry(id="u1", type=EntryType.URL, value="http://127.0.0.1/a/one")) == 2
    assert await apply(BlockEntry(id="q1", type=EntryType.URL, value="http://127.0.0.1/a/two?x=2")) == 0
    assert await apply(BlockEntry(id="p1", type=EntryType.PREFIX, value="http://127.0.0.1/b/")) == 1
    assert await apply(BlockEntry(id="h1", type=EntryType.HOST, value="localhost")) == 0
    assert await apply(BlockEntry(id="p2", type=EntryType.PREFIX, value="http://127.0.0.1/c")) == 1
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + "/c/four") as r:
            assert r.status == 451
        async with s.get(edge.url + "/d/five") as r:
            assert r.status == 200
    # /a/two?x=1 and /d/five are left; the host takes both
    assert await apply(BlockEntry(id="h2", type=EntryType.HOST, value="127.0.0.1")) == 2
    digest = hashlib.sha256(b"hello").hexdigest()  # every body here is "hello"
    assert await apply(BlockEntry(id="d1", type=EntryType.SHA256, value=digest)) == 0
    assert memory.stats().objects == 0
