"""Issue 16, methods: every token method (RFC 9110 §9.1) is forwarded unchanged, as nginx,
Varnish, Squid and Traffic Server do, also those llhttp does not know (`FOO`, lowercase
`get`); such a request is never answered from the cache and, as an unsafe method, invalidates
what it names (RFC 9111 §4.4). A method that is not a token is 400. The one limit (the front
parses llhttp's list of methods): an unknown method behind another request in the same read,
or split across reads, is 400; clients send neither."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import raw_request
from tests.integration.helpers_cache import RawOrigin, get


def req(method: bytes, path: bytes = b"/m", extra: bytes = b"", host: bytes = b"t") -> bytes:
    return b"%b %b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (method, path, host, extra)


def echo_method(cc: bytes) -> RawOrigin:
    """An origin that answers with the request's method (aiohttp's own server, on llhttp,
    would refuse the methods under test)."""

    def respond(head: bytes) -> list[bytes | float]:
        method = head.split(b" ", 1)[0]
        return [
            b"HTTP/1.1 200 OK\r\nCache-Control: %b\r\nContent-Length: %d\r\n\r\n%b"
            % (cc, len(method), method)
        ]

    return RawOrigin(respond)


@pytest.fixture
async def echo_edge(make_edge):  # type: ignore[no-untyped-def]
    raw = echo_method(b"max-age=600")
    edge = await make_edge(await raw.start())
    yield edge, raw
    await raw.close()


@pytest.mark.parametrize("method", [b"FOO", b"get", b"X-CUSTOM_1", b"PROPFIND", b"QUERY"])
async def test_token_methods_are_forwarded_unchanged(echo_edge, method: bytes) -> None:
    edge, raw = echo_edge
    got = await raw_request(edge.server.port, req(method, extra=b"Connection: close\r\n"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\n" + method)
    assert raw.heads[-1].startswith(method + b" /m HTTP/1.1\r\n")


async def test_unknown_method_with_a_body_and_then_pipelined_requests(echo_edge) -> None:
    edge, raw = echo_edge
    data = req(b"FOO", extra=b"Content-Length: 5\r\n") + b"12345"
    data += req(b"GET", b"/n", extra=b"Connection: close\r\n")
    got = await raw_request(edge.server.port, data)
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert got.index(b"\r\n\r\nFOO") < got.index(b"\r\n\r\nGET")
    assert [h.split(b"\r\n", 1)[0] for h in raw.heads] == [b"FOO /m HTTP/1.1", b"GET /n HTTP/1.1"]
    assert b"Content-Length: 5" in raw.heads[0]


async def test_unknown_method_is_never_a_cache_hit_and_invalidates(echo_edge) -> None:
    edge, raw = echo_edge
    assert (await get(edge.url + "/m")).body == b"GET"
    assert "hit" in (await get(edge.url + "/m")).cache_status
    host = b"127.0.0.1:%d" % edge.server.port  # the authority `get` sends
    got = await raw_request(
        edge.server.port, req(b"FOO", extra=b"Connection: close\r\n", host=host)
    )
    assert got.endswith(b"FOO")
    r = await get(edge.url + "/m")  # RFC 9111 §4.4: the stored GET was invalidated
    assert r.body == b"GET" and "hit" not in r.cache_status
    assert len(raw.heads) == 3


@pytest.mark.parametrize("method", [b"F(O)O", b"F\x01O", b"F" * 40])
async def test_a_method_that_is_not_a_token_is_400(make_edge, method) -> None:
    edge = await make_edge("http://127.0.0.1:9")
    got = await raw_request(edge.server.port, req(method))
    assert got.startswith(b"HTTP/1.1 400 ")


async def test_unknown_method_behind_another_request_in_one_read_is_400(echo_edge) -> None:
    """The documented limit; the request before it is answered once, not parsed again."""
    edge, raw = echo_edge
    got = await raw_request(edge.server.port, req(b"GET") + req(b"FOO"))
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 1 and got.count(b"HTTP/1.1 400 ") == 1
    assert got.index(b"HTTP/1.1 200 OK") < got.index(b"HTTP/1.1 400 ")
    assert [h.split(b" ", 1)[0] for h in raw.heads] == [b"GET"]


async def test_unknown_method_split_across_reads_is_400(make_edge) -> None:
    """The documented limit: llhttp refuses the method before its end has arrived."""
    edge = await make_edge("http://127.0.0.1:9")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.server.port)
    writer.write(b"FO")
    await writer.drain()
    async with asyncio.timeout(5):
        got = await reader.read()
    writer.close()
    assert got.startswith(b"HTTP/1.1 400 ")
