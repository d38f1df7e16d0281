"""An origin that lives in memory: a real `Origin` transport with no sockets.

It is to the phases what httpx's `MockTransport` is to httpx: fetch, upstream_response and store
run against it unchanged, so their policy is tested without a server. A handler decides each
answer from what the edge sent; `requests` records what the edge sent, so a test can assert on
the forwarded head (hop-by-hop fields stripped, validators added) as an origin would see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from multidict import CIMultiDict
from yarl import URL

from proxy.origin.errors import OriginError, OriginFailure
from proxy.origin.protocol import Interim

Body = bytes | AsyncIterable[bytes]


@dataclass(slots=True)
class MemoryResponse:
    """What the handler answers. `body` is bytes, or an async iterable of chunks (a stream that
    may raise OriginError midway, as a broken origin connection does); `interim`: the 1xx heads
    (status, reason, fields) sent before it."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: Body = b""
    reason: bytes = b""
    interim: list[tuple[int, bytes, list[tuple[bytes, bytes]]]] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class MemoryRequest:
    """One request as the origin received it (body read in full), and the field lines the
    edge rendered for it (`Origin.request`'s `fields`: what the llhttp client would send)."""

    origin: URL
    method: str
    path_query: bytes
    headers: CIMultiDict[str]
    body: bytes
    fields: bytes | None = None


Handler = Callable[
    [str, bytes, CIMultiDict[str], bytes], "MemoryResponse | Awaitable[MemoryResponse]"
]


class MemoryUpstreamResponse:
    """`UpstreamResponse` over a `MemoryResponse`."""

    def __init__(self, answer: MemoryResponse) -> None:
        self.status = answer.status
        self.reason = answer.reason
        self.headers = list(answer.headers)
        self._body: Body | None = answer.body  # None once consumed, as a socket's is
        self._pending = b""  # read past a read_up_to limit, delivered first by chunks()
        self.released = False
        self.closed = False

    @property
    def content_length(self) -> int | None:
        for name, value in self.headers:
            if name.lower() == b"content-length":
                return int(value)
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        body, self._body = self._body, None
        if body is not None:
            async for chunk in _iterate(body):
                yield chunk

    async def read_up_to(self, limit_bytes: int) -> tuple[bytes, bool]:
        got = bytearray(self._pending)
        self._pending = b""
        body, self._body = self._body, None
        if body is None:
            return bytes(got), True
        iterator = _iterate(body).__aiter__()
        while len(got) <= limit_bytes:
            try:
                got += await iterator.__anext__()
            except StopAsyncIteration:
                return bytes(got), True
        # over the limit: keep the rest for chunks(), as the socket clients do
        self._pending = bytes(got[limit_bytes:])
        self._body = _Rest(iterator)
        return bytes(got[:limit_bytes]), False

    def body_if_whole(self, limit_bytes: int) -> bytes | None:
        return None  # always read through `read_up_to`, whose steps the tests check

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class _Rest:
    """The unread remainder of a body iterator, iterable once more."""

    def __init__(self, iterator: AsyncIterator[bytes]) -> None:
        self._iterator = iterator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterator


async def _iterate(body: Body) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        if chunk:
            yield chunk


class MemoryOrigin:
    """`Origin` whose answers come from `handler(method, path_query, headers, body_bytes)`.

    The handler returns a `MemoryResponse` (or an awaitable of one) or raises `OriginError`, which
    reaches the caller exactly as a socket client's would.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[MemoryRequest] = []
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def request(
        self,
        origin: URL,
        method: str,
        path_query: bytes,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None,
        interim: Interim | None = None,
        fields: bytes | None = None,  # recorded, so tests can hold them to `headers`
    ) -> MemoryUpstreamResponse:
        if self.closed:
            raise OriginError(OriginFailure.CONNECT, "memory origin closed")
        data = b""
        if body is not None:
            data = b"".join([chunk async for chunk in body])
        self.requests.append(
            MemoryRequest(origin, method, path_query, CIMultiDict(headers), data, fields)
        )
        # A network origin never answers within the loop turn that sent the request; neither
        # does this one (what runs in that turn, such as other requests joining the fetch,
        # sees it in flight).
        await asyncio.sleep(0)
        answer = self._handler(method, path_query, headers, data)
        if not isinstance(answer, MemoryResponse):
            answer = await answer
        if interim is not None:
            for status, reason, lines in answer.interim:
                interim(status, reason, list(lines))
        return MemoryUpstreamResponse(answer)
