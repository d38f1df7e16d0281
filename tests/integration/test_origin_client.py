"""The origin client (issue 2, item 7): 502 / 504 mapping, timeouts, 1xx interim responses,
large and streamed bodies in both directions; Cache-Status on every answer."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp import web

from tests.integration.conftest import free_port, raw_request
from tests.integration.helpers_cache import (
    Canned,
    RawOrigin,
    get,
    not_stored,
    scripted_edge,
)


async def test_connection_refused_is_502_with_cache_status(make_edge) -> None:
    edge = await make_edge(f"http://127.0.0.1:{free_port()}")
    r = await get(edge.url + "/x")
    assert r.status == 502 and "detail=origin-connect" in r.cache_status
    assert r.headers["Cache-Control"] == "no-store"


async def test_first_byte_timeout_is_504(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(
        origin_server, make_edge, origin__first_byte_timeout_s=0.2
    )
    origin.on("/slow", Canned(delay_s=1.0))
    r = await get(edge.url + "/slow")
    assert r.status == 504 and "detail=origin-timeout" in r.cache_status


@pytest.mark.parametrize("policy", ["spool-disk", "stream"])
async def test_body_read_timeout_mid_stream(make_edge, policy: str) -> None:
    """A gap between body chunks longer than read_timeout_s: a cacheable response is still
    being read (504, nothing stored); one over the spool is still held to be judged (504,
    spool-disk) or, streamed, is cut (the client sees a short body)."""

    def respond(head: bytes) -> list[bytes | float]:
        cc = b"max-age=60" if b"/cache" in head.split(b"\r\n")[0] else b"no-store"
        return [
            b"HTTP/1.1 200 OK\r\nCache-Control: " + cc + b"\r\nContent-Length: 10\r\n\r\n01234",
            1.0,
            b"56789",
        ]

    raw = RawOrigin(respond)
    edge = await make_edge(
        await raw.start(),
        origin__read_timeout_s=0.2,
        blocklist__hash_spool_max_bytes=2,
        blocklist__oversize_policy=policy,
    )
    try:
        r = await get(edge.url + "/cache")
        assert r.status == 504 and "origin-timeout" in r.cache_status
        assert edge.pipeline.memory.stats().objects == 0
        if policy == "spool-disk":
            r = await get(edge.url + "/stream")
            assert r.status == 504 and "origin-timeout" in r.cache_status
            return
        async with aiohttp.ClientSession() as s:
            async with s.get(edge.url + "/stream") as resp:
                assert resp.status == 200
                try:
                    body = await resp.read()
                except aiohttp.ClientPayloadError:
                    body = b""
                assert body != b"0123456789"
    finally:
        await raw.close()


async def test_interim_1xx_not_leaked_as_final_rfc9110_s15_2(make_edge) -> None:
    """RFC 9110 §15.2: 100 / 103 interim responses from the origin are not the final answer."""

    def respond(head: bytes) -> list[bytes | float]:
        return [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nfinal",
        ]

    raw = RawOrigin(respond)
    edge = await make_edge(await raw.start())
    try:
        r = await get(edge.url + "/i")
        assert r.status == 200 and r.body == b"final"
        r = await get(edge.url + "/i")
        assert r.status == 200 and r.body == b"final" and "hit" in r.cache_status
        assert len(raw.heads) == 1
    finally:
        await raw.close()


async def test_large_response_streams_through_unstored(origin_server, make_edge) -> None:
    """Bodies above cache.max_object_bytes are delivered intact and not stored (too-large),
    with and without a Content-Length from the origin."""
    big = bytes(range(256)) * 4096  # 1 MiB

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 65536):
            await resp.write(big[i : i + 65536])
        await resp.write_eof()
        return resp

    origin, edge = await scripted_edge(
        origin_server, make_edge, cache__max_object_bytes=100_000
    )
    origin.on("/cl", Canned(headers=[("Cache-Control", "max-age=600")], body=big))
    origin.handlers["/chunked"] = chunked
    for path in ("/cl", "/cl", "/chunked", "/chunked"):
        r = await get(edge.url + path)
        assert r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(big).digest()
        assert "detail=too-large" in r.cache_status
    assert edge.pipeline.memory.stats().objects == 0
    assert not_stored(edge, "too-large") == 4


async def test_request_bodies_streamed_intact(origin_server, make_edge) -> None:
    """A 1 MiB POST arrives with its Content-Length; a chunked one arrives whole."""
    payload = bytes(range(256)) * 4096
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/up", lambda req: Canned(body=b"ok"))
    r = await get(edge.url + "/up", method="POST", data=payload)
    assert r.status == 200 and r.body == b"ok"
    seen = origin.last("/up")
    assert seen.body == payload and seen.headers["Content-Length"] == str(len(payload))

    async def gen():  # type: ignore[no-untyped-def]
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    r = await get(edge.url + "/up", method="PUT", data=gen())
    assert r.status == 200
    assert origin.last("/up").body == payload and origin.last("/up").method == "PUT"


async def test_cache_status_on_421_and_generated_errors_rfc9211_s2(make_edge) -> None:
    """RFC 9211 §2: Cache-Status on every response, the edge's own errors included."""
    edge = await make_edge(f"http://127.0.0.1:{free_port()}")
    object.__setattr__(edge.pipeline.sites, "default", None)
    edge.pipeline.sites._wildcard_suffixes.clear()
    data = await raw_request(
        edge.server.port, b"GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 421") and b"\r\nCache-Status: edgeproxy" in data


async def test_origin_headers_kept_hop_by_hop_removed_rfc9110_s7_6_1(make_edge) -> None:
    """Unknown fields, Server and the origin's Date are kept; hop-by-hop fields and the ones a
    Connection field names are removed; a response without Date gets one."""

    def respond(head: bytes) -> list[bytes | float]:
        return [
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nServer: origin/1.0\r\n"
            b"X-Unknown: u\r\nConnection: keep-alive, X-Hop\r\nX-Hop: h\r\n"
            b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
        ]

    raw = RawOrigin(respond)
    edge = await make_edge(await raw.start())
    try:
        for n in range(2):
            r = await get(edge.url + "/h")
            assert r.body == b"ok" and r.headers["X-Unknown"] == "u"
            assert r.headers["Server"] == "origin/1.0"
            assert "X-Hop" not in r.headers and "Keep-Alive" not in r.headers
            assert "Date" in r.headers
            assert ("hit" in r.cache_status) is (n == 1)
    finally:
        await raw.close()


async def test_request_headers_forwarded_and_stripped_rfc9110_s7_6(origin_server, make_edge) -> None:
    """Toward the origin: unknown fields kept, hop-by-hop and Connection-named ones removed,
    X-Forwarded-For appended, Via added, URL/method override fields never forwarded."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/f", Canned())
    await get(
        edge.url + "/f",
        headers={
            "X-Custom": "c",
            "Connection": "X-Secret",
            "X-Secret": "s",
            "TE": "trailers",
            "X-Forwarded-For": "10.0.0.1",
            "X-Original-URL": "/admin",
            "X-HTTP-Method-Override": "DELETE",
            "X-Rewrite-URL": "/admin",
        },
    )
    h = origin.last("/f").headers
    assert h["X-Custom"] == "c" and "X-Secret" not in h and "TE" not in h
    assert h["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert "1.1 edgeproxy" in h["Via"]
    assert "X-Original-URL" not in h and "X-HTTP-Method-Override" not in h
    assert "X-Rewrite-URL" not in h
    assert origin.last("/f").method == "GET"


async def test_pooled_connection_reused(make_edge) -> None:
    """Keep-alive toward the origin: two misses travel on one connection."""
    conns = 0

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 1\r\n\r\nx")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    edge = await make_edge(f"http://127.0.0.1:{port}")
    try:
        for p in ("/1", "/2", "/3"):
            assert (await get(edge.url + p)).body == b"x"
        assert conns == 1
    finally:
        server.close()
