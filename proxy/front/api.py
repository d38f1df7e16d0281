"""The seam between the data-plane HTTP/1.1 server (`proxy.front.server`) and the pipeline.

The front owns the wire: parsing (llhttp via httptools), framing, limits, deadlines, keep-alive,
pipelining order and backpressure. The pipeline owns meaning: it receives a `FrontRequest` and
answers through a `Responder`. Nothing in the pipeline touches a transport directly.

A handler returns `None` when it answered synchronously (the cache-hit fast path: one
`Responder.send_bytes`), or an awaitable the front runs to completion before it starts the next
pipelined request on the same connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

from proxy.front.wire import Wire


class RequestBody(Protocol):
    """A request body as it arrives; iterating applies backpressure to the client socket."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read_all(self, limit_bytes: int) -> bytes:
        """The whole body; raises `BodyTooLarge` past `limit_bytes`."""
        ...


class FrontRequest(Protocol):
    method: str  # as sent, e.g. "GET"; any token is allowed
    raw_target: bytes  # request-target bytes exactly as sent
    http_version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]  # in order, names as sent (case kept), values stripped
    keep_alive: bool  # what the client asked for and the version allows
    has_body: bool  # Content-Length > 0 or chunked
    content_length: int | None  # declared length; None when chunked or absent
    body: RequestBody  # empty iterator when has_body is False
    client_ip: str
    received_at: float  # time.time() when the request head was complete
    host: bytes | None  # the Host field's value (the front refuses a second one)
    flagged: bool  # a field named in FrontServer(flag_headers=…) was present
    tls: bool  # arrived over TLS (the front's TLS listener)
    # The request id as the field line every answer carries (`X-Request-Id: …\r\n`), or b""
    # when ids are off (proxy/front/request_id.py). The front adds it to `Responder.start`
    # answers; whoever writes a pre-serialised answer (`send_bytes`) puts it in.
    id_field: bytes
    # The field lines of a head the strict matcher took, as sent (proxy/front/strict.py), b""
    # for one llhttp parsed into `headers`: clients repeat them request after request, so the
    # access log keys what it reads from them (User-Agent, Referer) by them.
    field_lines: bytes

    def values(self, *lnames: bytes) -> tuple[bytes, ...]:
        """The first non-empty value of each field named in `lnames` (lowercase), b"" for
        none."""
        ...


class Responder(Protocol):
    """Writes one response. Exactly one of `send_bytes` or `start`(+`write`*)+`end` per request."""

    def send_bytes(self, data: Wire, *, close: bool = False) -> None:
        """A whole pre-serialised response (status line, headers, blank line, body), as one
        bytes or as head and a large body apart (`wire.wire`)."""
        ...

    def interim(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Write an interim (1xx) head before the answer starts; False when the front drops it
        (answer started, client gone or HTTP/1.0, 101, or a 100 it answers itself)."""
        ...

    def start(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        content_length: int | None,
        no_body: bool = False,
        close: bool = False,
        first: bytes = b"",
        fields: bytes = b"",
    ) -> None:
        """Write the head (and `first` body bytes with it, when `content_length` is known). With `content_length=None` and a body, the front frames it chunked
        (HTTP/1.1) or by closing the connection (HTTP/1.0). The front adds `Connection` and
        framing headers itself; the caller must not pass them. `fields`: more field lines,
        already serialised (each ending in CRLF), after `headers`."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Write body bytes; waits while the client's socket buffer is full. Raises
        `ClientGone` when the client disconnected."""
        ...

    def end(self) -> None:
        """The response is complete."""
        ...

    @property
    def started(self) -> bool: ...

    @property
    def closed(self) -> bool:
        """True when the client has gone."""
        ...


class Handler(Protocol):
    def __call__(self, request: FrontRequest, responder: Responder) -> Awaitable[None] | None: ...


class ClientGone(ConnectionError):
    """The client closed its connection while we were writing to it."""


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit."""
