"""The llhttp origin client (proxy/origin_h1.py) against real origins on 127.0.0.1: pooling,
framing, interim answers, request bodies, timeouts, the stale-connection retry, and what an
operator sees when the origin misbehaves (the OriginError kind, hence 502 or 504)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.origin import OriginError, OriginFailure
from proxy.origin.h1 import BODY_HIGH_WATER_BYTES, H1OriginPool, H1UpstreamResponse
from tests.integration.conftest import free_port
from tests.integration.scripted import Step


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (extra, len(body), body)


def hdrs(**extra: str) -> CIMultiDict[str]:
    h: CIMultiDict[str] = CIMultiDict(Host="origin.test")
    for k, v in extra.items():
        h[k.replace("_", "-")] = v
    return h


async def fetch(
    pool: H1OriginPool,
    origin: URL,
    path: bytes = b"/",
    method: str = "GET",
    headers: CIMultiDict[str] | None = None,
    body: AsyncIterator[bytes] | None = None,
) -> tuple[H1UpstreamResponse, bytes]:
    resp = await pool.request(origin, method, path, headers or hdrs(), body)
    data, complete = await resp.read_up_to(64 << 20)
    assert complete
    resp.release()
    return resp, data


async def parts(*chunks: bytes) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c
        await asyncio.sleep(0)


# -- pooling ----------------------------------------------------------------------------------


async def test_keepalive_one_connection_for_ten_requests(origin_server, make_pool) -> None:
    peers: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(body=b"x" * 1024, headers={"X-Path": request.path_qs})

    app = web.Application()
    app.router.add_get("/{p:.*}", handler)
    origin = URL(await origin_server(app))
    pool = await make_pool()
    for i in range(10):
        resp, body = await fetch(pool, origin, b"/a?i=%d" % i)
        assert resp.status == 200 and body == b"x" * 1024
        assert (b"X-Path", b"/a?i=%d" % i) in resp.headers
        assert resp.content_length == 1024 and resp.reason == b"OK"
    assert len(peers) == 10 and len(set(peers)) == 1
    assert pool.requests == 10 and pool.open_connections == 1
    assert sum(pool.errors.values()) == 0


async def test_twenty_parallel_requests_respect_pool_limit(origin_server, make_pool) -> None:
    active = 0
    most = 0
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        nonlocal active, most
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.02)
        active -= 1
        return web.Response(body=request.path.encode())

    app = web.Application()
    app.router.add_get("/{p:.*}", handler)
    origin = URL(await origin_server(app))
    pool = await make_pool(pool_connections=4)
    results = await asyncio.gather(*(fetch(pool, origin, b"/r%d" % i) for i in range(20)))
    assert [body for _, body in results] == [b"/r%d" % i for i in range(20)]
    assert most == 4 and len(peers) == 4
    assert pool.open_connections == 4


async def test_idle_connections_expire(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [ok()])
    pool = await make_pool(keepalive_timeout_s=0.1)
    await fetch(pool, origin.url)
    assert pool.open_connections == 1
    await asyncio.sleep(0.4)
    assert pool.open_connections == 0
    await fetch(pool, origin.url)
    assert origin.connections == 2


async def test_connection_close_response_not_pooled(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [ok(extra=b"Connection: close\r\n")])
    pool = await make_pool()
    resp, body = await fetch(pool, origin.url)
    assert body == b"hello" and pool.open_connections == 0
    await fetch(pool, origin.url)
    assert origin.connections == 2


async def test_close_with_unread_body_not_pooled(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [ok(b"z" * (1 << 20))])
    pool = await make_pool()
    resp = await pool.request(origin.url, "GET", b"/big", hdrs(), None)
    assert resp.status == 200 and resp.content_length == 1 << 20
    resp.close()
    assert pool.open_connections == 0
    _, body = await fetch(pool, origin.url)
    assert len(body) == 1 << 20 and origin.connections == 2


async def test_unread_body_pauses_reading(scripted, make_pool) -> None:
    big = bytes(range(256)) * (16 << 10)  # 4 MiB
    origin = await scripted(lambda c, r, h, b: [ok(big)])
    pool = await make_pool()
    resp = await pool.request(origin.url, "GET", b"/", hdrs(), None)
    await asyncio.sleep(0.2)
    assert resp._buffered < BODY_HIGH_WATER_BYTES + (1 << 20)  # stopped reading, not all 4 MiB
    got = b"".join([c async for c in resp.chunks()])
    assert got == big and pool.open_connections == 1


# -- framing ----------------------------------------------------------------------------------


async def test_content_length_chunked_and_close_delimited_bodies(scripted, make_pool) -> None:
    def respond(c: int, r: int, head: bytes, body: bytes) -> list[Step]:
        if head.startswith(b"GET /chunked"):
            return [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                0.02,
                b"6\r\n world\r\n0\r\n\r\n",
            ]
        if head.startswith(b"GET /close"):
            return [b"HTTP/1.1 200 OK\r\n\r\nuntil", 0.02, b" the end", None]
        return [ok(b"exact")]

    origin = await scripted(respond)
    pool = await make_pool()
    resp, body = await fetch(pool, origin.url, b"/cl")
    assert body == b"exact"
    resp, body = await fetch(pool, origin.url, b"/chunked")
    assert body == b"hello world" and resp.content_length is None
    assert origin.connections == 1 and pool.open_connections == 1
    resp, body = await fetch(pool, origin.url, b"/close")
    assert body == b"until the end" and pool.open_connections == 0


async def test_head_204_304_have_no_body_and_keep_the_connection(scripted, make_pool) -> None:
    def respond(c: int, r: int, head: bytes, body: bytes) -> list[Step]:
        if head.startswith(b"HEAD /chunked"):
            return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
        if head.startswith(b"HEAD"):
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]
        if head.startswith(b"GET /204"):
            return [b"HTTP/1.1 204 No Content\r\n\r\n"]
        if head.startswith(b"GET /304"):
            return [b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 7\r\n\r\n']
        return [ok(b"after")]

    origin = await scripted(respond)
    pool = await make_pool()
    resp, body = await fetch(pool, origin.url, b"/h", method="HEAD")
    assert resp.status == 200 and body == b"" and resp.content_length == 1000
    resp, body = await fetch(pool, origin.url, b"/chunked", method="HEAD")
    assert resp.status == 200 and body == b""
    resp, body = await fetch(pool, origin.url, b"/204")
    assert resp.status == 204 and body == b""
    resp, body = await fetch(pool, origin.url, b"/304")
    assert resp.status == 304 and body == b"" and (b"ETag", b'"v1"') in resp.headers
    resp, body = await fetch(pool, origin.url, b"/next")
    assert body == b"after"
    assert origin.connections == 1 and len(origin.heads) == 5


async def test_head_answer_with_a_body_is_dropped(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [ok(b"should not be here")])
    pool = await make_pool()
    resp, body = await fetch(pool, origin.url, method="HEAD")
    assert resp.status == 200 and body == b""
    await asyncio.sleep(0.05)
    assert pool.open_connections == 0
    resp, body = await fetch(pool, origin.url)
    assert body == b"should not be here" and origin.connections == 2


async def test_interim_100_and_103_never_surface(scripted, make_pool) -> None:
    origin = await scripted(
        lambda c, r, h, b: [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            0.02,
            ok(b"final", b"X-Final: 1\r\n"),
        ]
    )
    pool = await make_pool()
    resp, body = await fetch(pool, origin.url)
    assert resp.status == 200 and body == b"final"
    assert [n for n, _ in resp.headers] == [b"X-Final", b"Content-Length"]
    resp, body = await fetch(pool, origin.url)
    assert body == b"final" and origin.connections == 1


# -- request bodies ---------------------------------------------------------------------------


async def test_request_bodies_stream_intact(origin_server, make_pool) -> None:
    async def handler(request: web.Request) -> web.Response:
        data = await request.read()
        te = request.headers.get("Transfer-Encoding", "")
        return web.Response(text=f"{len(data)} {hashlib.sha256(data).hexdigest()} {te}")

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/up", handler)
    origin = URL(await origin_server(app))
    pool = await make_pool()
    piece = bytes(range(256)) * 256  # 64 KiB
    whole = piece * 16  # 1 MiB
    digest = hashlib.sha256(whole).hexdigest()
    _, body = await fetch(
        pool,
        origin,
        b"/up",
        "POST",
        hdrs(Content_Length=str(len(whole))),
        parts(*[piece] * 16),
    )
    assert body.decode() == f"{len(whole)} {digest} "
    _, body = await fetch(pool, origin, b"/up", "POST", hdrs(), parts(b"small", *[piece] * 16))
    expected = b"small" + whole
    assert body.decode() == f"{len(expected)} {hashlib.sha256(expected).hexdigest()} chunked"
    assert pool.open_connections == 1


async def test_request_body_length_must_match_content_length(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [ok()])
    pool = await make_pool()
    with pytest.raises(OriginError) as e:
        await fetch(pool, origin.url, b"/", "PUT", hdrs(Content_Length="3"), parts(b"toolong"))
    assert e.value.kind is OriginFailure.PROTOCOL and e.value.status == 502
    assert pool.open_connections == 0


async def test_header_injection_refused_never_sent(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [ok()])
    pool = await make_pool()
    for bad in ("a\r\nX-Evil: 1", "a\nb", "a\x00b"):
        with pytest.raises(OriginError) as e:
            await pool.request(origin.url, "GET", b"/", hdrs(X_Test=bad), None)
        assert e.value.kind is OriginFailure.PROTOCOL
    bad_name: CIMultiDict[str] = CIMultiDict({"Host": "o", "X-A\r\nX-Evil": "1"})
    with pytest.raises(OriginError):
        await pool.request(origin.url, "GET", b"/", bad_name, None)
    with pytest.raises(OriginError):
        await pool.request(origin.url, "GET", b"/a b", hdrs(), None)
    await asyncio.sleep(0.05)
    assert origin.connections == 0 and pool.errors[OriginFailure.PROTOCOL] == 5


# -- failures ---------------------------------------------------------------------------------


async def test_connection_refused_is_connect_502(make_pool) -> None:
    pool = await make_pool()
    with pytest.raises(OriginError) as e:
        await pool.request(URL(f"http://127.0.0.1:{free_port()}"), "GET", b"/", hdrs(), None)
    assert e.value.kind is OriginFailure.CONNECT and e.value.status == 502
    assert pool.errors[OriginFailure.CONNECT] == 1 and pool.open_connections == 0


async def test_https_origin_refused(make_pool) -> None:
    pool = await make_pool()
    with pytest.raises(OriginError) as e:
        await pool.request(URL("https://127.0.0.1:1"), "GET", b"/", hdrs(), None)
    assert e.value.kind is OriginFailure.PROTOCOL and "aiohttp" in e.value.detail


async def test_slow_head_is_timeout_504(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [1.0, ok()])
    pool = await make_pool(first_byte_timeout_s=0.2)
    with pytest.raises(OriginError) as e:
        await pool.request(origin.url, "GET", b"/", hdrs(), None)
    assert e.value.kind is OriginFailure.TIMEOUT and e.value.status == 504
    assert pool.errors[OriginFailure.TIMEOUT] == 1 and pool.open_connections == 0


async def test_total_timeout(scripted, make_pool) -> None:
    step = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0"
    origin = await scripted(lambda c, r, h, b: [step, *[0.1, b"1"] * 9])
    pool = await make_pool(read_timeout_s=0.5, total_timeout_s=0.35)
    resp = await pool.request(origin.url, "GET", b"/", hdrs(), None)
    with pytest.raises(OriginError) as e:
        await resp.read_up_to(100)
    assert e.value.kind is OriginFailure.TIMEOUT and "total" in e.value.detail


async def test_slow_body_is_timeout_from_chunks(scripted, make_pool) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"
    origin = await scripted(lambda c, r, h, b: [head, 1.0, b"56789"])
    pool = await make_pool(read_timeout_s=0.2)
    resp = await pool.request(origin.url, "GET", b"/", hdrs(), None)
    got = []
    with pytest.raises(OriginError) as e:
        async for chunk in resp.chunks():
            got.append(chunk)
    assert e.value.kind is OriginFailure.TIMEOUT and b"".join(got) == b"01234"
    assert pool.open_connections == 0


async def test_body_cut_short_is_reset(scripted, make_pool) -> None:
    origin = await scripted(
        lambda c, r, h, b: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", None]
    )
    pool = await make_pool()
    resp = await pool.request(origin.url, "GET", b"/", hdrs(), None)
    with pytest.raises(OriginError) as e:
        await resp.read_up_to(100)
    assert e.value.kind is OriginFailure.RESET and e.value.status == 502


@pytest.mark.parametrize(
    ("answer", "where"),
    [
        (b"HTTP/1.1 abc OK\r\n\r\n", "head"),
        (b"SPDY/3 200 OK\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", "body"),
    ],
)
async def test_invalid_response_is_protocol_502(scripted, make_pool, answer, where) -> None:
    origin = await scripted(lambda c, r, h, b: [answer, 0.5])
    pool = await make_pool()
    with pytest.raises(OriginError) as e:
        resp = await pool.request(origin.url, "GET", b"/", hdrs(), None)
        assert where == "body"
        await resp.read_up_to(100)
    assert e.value.kind is OriginFailure.PROTOCOL and e.value.status == 502
    assert pool.open_connections == 0


def _drops_second_request(c: int, r: int, head: bytes, body: bytes) -> list[Step]:
    """Answers the first request of each connection; closes on the second without answering,
    like an origin whose idle timeout hit just as the request arrived."""
    return [ok(b"fine")] if r == 0 else [None]


async def test_stale_pooled_connection_retried_once_for_get(scripted, make_pool) -> None:
    origin = await scripted(_drops_second_request)
    pool = await make_pool()
    await fetch(pool, origin.url)
    resp, body = await fetch(pool, origin.url)
    assert resp.status == 200 and body == b"fine"
    assert origin.connections == 2 and len(origin.heads) == 3
    assert sum(pool.errors.values()) == 0 and pool.requests == 2


async def test_stale_pooled_connection_not_retried_for_post(scripted, make_pool) -> None:
    origin = await scripted(_drops_second_request)
    pool = await make_pool()
    await fetch(pool, origin.url, method="POST")
    with pytest.raises(OriginError) as e:
        await fetch(pool, origin.url, method="POST")
    assert e.value.kind is OriginFailure.RESET and e.value.status == 502
    assert origin.connections == 1 and len(origin.heads) == 2
    await fetch(pool, origin.url)
    with pytest.raises(OriginError):  # a GET with a body is not retried either
        await fetch(pool, origin.url, b"/", "GET", hdrs(Content_Length="1"), parts(b"x"))
    assert origin.connections == 2 and pool.errors[OriginFailure.RESET] == 2


async def test_body_if_whole_only_for_a_body_all_arrived_within_the_limit(
    scripted, make_pool
) -> None:
    """Issue 18: spool's shortcut. A body that came with its head (one read) is handed over
    without a read; one still arriving, or over the limit, is left untouched for read_up_to."""

    def respond(c: int, r: int, head: bytes, body: bytes) -> list[Step]:
        if head.startswith(b"GET /slow"):
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello", 0.05, b" world"]
        return [ok(b"exact")]

    origin = await scripted(respond)
    pool = await make_pool()
    resp = await pool.request(origin.url, "GET", b"/whole", hdrs(), None)
    for _ in range(50):  # the head and body come in one write; the body may lag a loop turn
        if resp.body_if_whole(0) is None and resp._done:
            break
        await asyncio.sleep(0.001)
    assert resp.body_if_whole(4) is None  # over the limit: nothing read
    assert resp.body_if_whole(5) == b"exact"
    assert await resp.read_up_to(100) == (b"", True)
    slow = await pool.request(origin.url, "GET", b"/slow", hdrs(), None)
    assert slow.body_if_whole(100) is None  # not all arrived
    assert await slow.read_up_to(100) == (b"hello world", True)
    assert pool.open_connections == 1
