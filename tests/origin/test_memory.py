"""MemoryOrigin: the in-memory `Origin` transport the phase tests run against."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from multidict import CIMultiDict
from yarl import URL

from proxy.origin import Origin, OriginError, OriginFailure
from proxy.origin.memory import MemoryOrigin, MemoryResponse

ORIGIN = URL("http://origin.test")


async def _body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_answers_from_handler_and_records_the_request() -> None:
    def handler(method: str, pq: bytes, headers: CIMultiDict[str], body: bytes) -> MemoryResponse:
        return MemoryResponse(201, [(b"X-Seen", pq), (b"Content-Length", b"2")], b"ok")

    origin: Origin = MemoryOrigin(handler)
    await origin.start()
    resp = await origin.request(
        ORIGIN, "POST", b"/a?b=1", CIMultiDict({"Host": "h"}), _body(b"he", b"llo")
    )
    assert resp.status == 201
    assert (b"X-Seen", b"/a?b=1") in resp.headers
    assert resp.content_length == 2
    assert [c async for c in resp.chunks()] == [b"ok"]
    assert isinstance(origin, MemoryOrigin)
    seen = origin.requests[0]
    assert (seen.method, seen.path_query, seen.body, seen.headers["host"]) == (
        "POST",
        b"/a?b=1",
        b"hello",
        "h",
    )


async def test_streamed_body_and_read_up_to_keeps_the_rest() -> None:
    origin = MemoryOrigin(lambda m, p, h, b: MemoryResponse(body=_body(b"abc", b"def", b"gh")))
    resp = await origin.request(ORIGIN, "GET", b"/", CIMultiDict(), None)
    head, complete = await resp.read_up_to(4)
    assert (head, complete) == (b"abcd", False)
    assert b"".join([c async for c in resp.chunks()]) == b"efgh"
    resp2 = await origin.request(ORIGIN, "GET", b"/", CIMultiDict(), None)
    assert await resp2.read_up_to(100) == (b"abcdefgh", True)


@pytest.mark.parametrize("kind", list(OriginFailure))
async def test_handler_errors_reach_the_caller(kind: OriginFailure) -> None:
    def handler(method: str, pq: bytes, headers: CIMultiDict[str], body: bytes) -> MemoryResponse:
        raise OriginError(kind, "test")

    origin = MemoryOrigin(handler)
    with pytest.raises(OriginError) as info:
        await origin.request(ORIGIN, "GET", b"/", CIMultiDict(), None)
    assert info.value.kind is kind
    assert info.value.status == (504 if kind is OriginFailure.TIMEOUT else 502)
    assert len(origin.requests) == 1


async def test_body_stream_breaking_midway_raises_from_chunks() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"part"
        raise OriginError(OriginFailure.RESET, "cut")

    origin = MemoryOrigin(lambda m, p, h, b: MemoryResponse(body=broken()))
    resp = await origin.request(ORIGIN, "GET", b"/", CIMultiDict(), None)
    got = []
    with pytest.raises(OriginError):
        async for chunk in resp.chunks():
            got.append(chunk)
    assert got == [b"part"]


async def test_async_handler_and_closed_origin() -> None:
    async def handler(m: str, p: bytes, h: CIMultiDict[str], b: bytes) -> MemoryResponse:
        return MemoryResponse(304)

    origin = MemoryOrigin(handler)
    assert (await origin.request(ORIGIN, "GET", b"/", CIMultiDict(), None)).status == 304
    await origin.close()
    with pytest.raises(OriginError) as info:
        await origin.request(ORIGIN, "GET", b"/", CIMultiDict(), None)
    assert info.value.kind is OriginFailure.CONNECT


async def test_interim_heads_go_to_the_listener_before_the_answer() -> None:
    early = [(103, b"Early Hints", [(b"Link", b"</s.css>; rel=preload")])]
    origin = MemoryOrigin(lambda m, pq, h, b: MemoryResponse(200, [], b"ok", interim=early))
    seen: list[tuple[int, bytes, list[tuple[bytes, bytes]]]] = []
    resp = await origin.request(
        ORIGIN, "GET", b"/", CIMultiDict(), None, lambda *head: seen.append(head)
    )
    assert seen == early and resp.status == 200
    assert [c async for c in resp.chunks()] == [b"ok"]
