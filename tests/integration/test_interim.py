"""Issue 16: an origin's interim (1xx) heads reach the client that caused the request (RFC 9110
§15.2) and are never stored; HTTP/1.0 clients never get one; 101 is refused (the edge forwards
no Upgrade); a client's `Expect: 100-continue` is answered by the edge itself. Both origin
clients (llhttp for http, aiohttp for https) hand each 1xx head to the request's listener."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from multidict import CIMultiDict
from yarl import URL

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.config import OriginConfig
from proxy.origin import OriginError, OriginFailure
from proxy.origin.h1 import H1OriginPool
from proxy.origin.tls import AiohttpOriginPool
from tests.integration.conftest import raw_request
from tests.integration.helpers_cache import RawOrigin, get

EARLY = (
    b"HTTP/1.1 102 Processing\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload; as=style\r\nX-Early: yes\r\n"
    b"Connection: x-hop\r\nX-Hop: 1\r\n\r\n"
)
FINAL = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 5\r\n\r\nfinal"


def heads(raw: bytes) -> list[bytes]:
    """The status lines of every head in a raw answer (interim ones first)."""
    return [line for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def request(path: bytes, version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    return b"GET %b HTTP/%b\r\nHost: t\r\nConnection: close\r\n%b\r\n" % (path, version, extra)


@pytest.fixture
async def early_edge(make_edge: Any) -> Any:
    raw = RawOrigin(lambda head: [EARLY, FINAL])
    edge = await make_edge(await raw.start())
    yield edge, raw
    await raw.close()


async def test_102_and_103_relayed_before_the_answer_then_a_hit_without_them(early_edge) -> None:
    edge, raw = early_edge
    got = await raw_request(edge.server.port, request(b"/a"))
    assert heads(got) == [
        b"HTTP/1.1 102 Processing",
        b"HTTP/1.1 103 Early Hints",
        b"HTTP/1.1 200 OK",
    ]
    early, final = got.split(b"HTTP/1.1 200 OK", 1)
    assert b"Link: </s.css>; rel=preload; as=style\r\nX-Early: yes\r\n" in early
    assert b"X-Hop" not in early and b"x-hop" not in early  # named by Connection: hop-by-hop
    assert b"X-Early" not in final and final.endswith(b"final")
    again = await raw_request(edge.server.port, request(b"/a"))
    assert heads(again) == [b"HTTP/1.1 200 OK"]  # a stored answer: no interim heads kept
    assert b"X-Early" not in again and b"hit" in again
    assert len(raw.heads) == 1


async def test_http10_client_never_gets_an_interim_head(early_edge) -> None:
    edge, _raw = early_edge
    got = await raw_request(edge.server.port, request(b"/b", b"1.0"))
    assert heads(got) == [b"HTTP/1.1 200 OK"] and got.endswith(b"final")


async def test_interim_heads_relayed_on_pass_through(make_edge) -> None:
    raw = RawOrigin(lambda head: [EARLY, FINAL.replace(b"max-age=600", b"no-store")])
    edge = await make_edge(await raw.start())
    try:
        body = b"x=1"
        got = await raw_request(
            edge.server.port,
            b"POST /form HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\n"
            + body,
        )
        assert heads(got)[-1] == b"HTTP/1.1 200 OK" and heads(got)[:2] == heads(EARLY)
    finally:
        await raw.close()


async def test_origin_100_relayed_unless_the_edge_answered_the_expectation(make_edge) -> None:
    """The edge never forwards `Expect` (it answers the expectation itself when it starts
    reading the body), so an origin's 100 is relayed to a client that did not ask, and not
    a second time to one the edge already told to continue."""
    raw = RawOrigin(lambda head: [b"HTTP/1.1 100 Continue\r\n\r\n", FINAL])
    edge = await make_edge(await raw.start())
    try:
        got = await raw_request(edge.server.port, request(b"/c"))
        assert heads(got) == [b"HTTP/1.1 100 Continue", b"HTTP/1.1 200 OK"]
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.server.port)
        writer.write(
            b"POST /d HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"\r\n\r\n")  # the edge's own, before any body
            assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abc")
            rest = await reader.read()
        writer.close()
        assert heads(rest) == [b"HTTP/1.1 200 OK"]  # the origin's 100 is not sent again
        assert all(b"expect" not in h.lower() for h in raw.heads)
    finally:
        await raw.close()


async def test_listed_url_with_expect_gets_451_and_no_100(make_edge) -> None:
    raw = RawOrigin(lambda head: [FINAL])
    edge = await make_edge(await raw.start())
    try:
        edge.block(BlockEntry(id="e1", type=EntryType.URL, value="http://t/up"))
        post = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        got = await raw_request(edge.server.port, post, read_timeout_s=2.0)
        assert heads(got) == [b"HTTP/1.1 451 Unavailable For Legal Reasons"]
        assert raw.heads == []
    finally:
        await raw.close()


async def test_origin_101_is_a_502(make_edge) -> None:
    raw = RawOrigin(
        lambda head: [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"]
    )
    edge = await make_edge(await raw.start())
    try:
        r = await get(edge.url + "/ws")
        assert r.status == 502 and "origin-protocol" in r.cache_status
    finally:
        await raw.close()


@pytest.mark.parametrize("client", [H1OriginPool, AiohttpOriginPool], ids=["h1", "tls"])
async def test_origin_clients_hand_each_interim_head_to_the_listener(client: Any) -> None:
    """The aiohttp client (https origins) is driven against a plain origin: same parser."""
    raw = RawOrigin(lambda head: [EARLY, FINAL])
    pool = client(OriginConfig())
    await pool.start()
    try:
        seen: list[tuple[int, bytes, list[tuple[bytes, bytes]]]] = []
        url = URL(await raw.start())
        resp = await pool.request(url, "GET", b"/x", _hdrs(), None, lambda *a: seen.append(a))
        body, complete = await resp.read_up_to(1 << 20)
        resp.release()
        assert resp.status == 200 and body == b"final" and complete
        assert [(s, r) for s, r, _ in seen] == [(102, b"Processing"), (103, b"Early Hints")]
        assert (b"X-Early", b"yes") in seen[1][2]
        assert all(n.lower() != b"x-early" for n, _ in resp.headers)
    finally:
        await pool.close()
        await raw.close()


@pytest.mark.parametrize("client", [H1OriginPool, AiohttpOriginPool], ids=["h1", "tls"])
async def test_origin_clients_refuse_101(client: Any) -> None:
    raw = RawOrigin(lambda head: [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"])
    pool = client(OriginConfig())
    await pool.start()
    try:
        with pytest.raises(OriginError) as e:
            await pool.request(URL(await raw.start()), "GET", b"/", _hdrs(), None)
        assert e.value.kind is OriginFailure.PROTOCOL
    finally:
        await pool.close()
        await raw.close()


def _hdrs() -> CIMultiDict[str]:
    return CIMultiDict({"Host": "t"})
