"""One request/response exchange as the pipeline sees it: `Request`, its `Body`, a `Responder`.

These implement the protocols in `proxy.front.api`. They hold a reference to their connection
and call a handful of its methods, declared here as `ExchangeConnection` so that this module
does not import `proxy.front.server` (which imports this one); they never parse or frame
anything themselves except the response head and chunked framing in `Responder`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from proxy.front.api import BodyTooLarge, ClientGone
from proxy.front.strict import fields as strict_fields
from proxy.front.strict import values as strict_values
from proxy.front.wire import Wire, with_fields, write_wire

if TYPE_CHECKING:
    import asyncio


class ExchangeConnection(Protocol):
    """What an exchange needs from its connection (`proxy.front.server.Connection` is one).

    A structural type rather than an import keeps the dependency one-way: server → exchange.
    """

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    lost: bool
    write_paused: bool

    def send_continue(self, body: Body) -> None: ...

    def body_consumed(self) -> None: ...

    def finish_response(self, resp: Responder, close: bool) -> None: ...

    async def wait_writable(self) -> None: ...

    def tls_fields(self, host: bytes | None) -> bytes: ...


class Request:
    """`api.FrontRequest`. Built once per request head; no header dict is made. A request from
    the strict head (proxy/front/strict.py) keeps its field lines and cuts its header list out
    of them only when `headers` is first read: a logged hit reads two fields (`values`) and
    never the list."""

    __slots__ = (
        "method",
        "raw_target",
        "http_version",
        "_headers",
        "keep_alive",
        "has_body",
        "content_length",
        "body",
        "client_ip",
        "received_at",
        "host",
        "flagged",
        "tls",
        "id_field",
        "field_lines",
    )

    def __init__(
        self,
        method: str,
        raw_target: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]] | None,
        keep_alive: bool,
        has_body: bool,
        content_length: int | None,
        body: Body | EmptyBody,
        client_ip: str,
        received_at: float,
        host: bytes | None = None,
        flagged: bool = False,
        tls: bool = False,
        id_field: bytes = b"",
        lines: bytes = b"",
    ) -> None:
        """`headers` None: the strict head's field `lines` hold them (`strict.fields`)."""
        self.method = method
        self.raw_target = raw_target
        self.http_version = http_version
        self._headers = headers
        self.keep_alive = keep_alive
        self.has_body = has_body
        self.content_length = content_length
        self.body = body
        self.client_ip = client_ip
        self.received_at = received_at
        self.host = host
        self.flagged = flagged
        self.tls = tls
        self.id_field = id_field
        self.field_lines = lines

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = self._headers
        if headers is None:
            headers = self._headers = strict_fields(self.field_lines)
        return headers

    def values(self, *lnames: bytes) -> tuple[bytes, ...]:
        """The first non-empty value of each field named in `lnames` (lowercase), b"" for
        none: what the access log reads (User-Agent, Referer), in one pass."""
        headers = self._headers
        if headers is None:
            return strict_values(self.field_lines, lnames)
        found = [b""] * len(lnames)
        for name, value in headers:
            if value:
                lname = name.lower()
                if lname in lnames:
                    i = lnames.index(lname)
                    if not found[i]:
                        found[i] = value
        return tuple(found)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_target!r} HTTP/{self.http_version}>"


class EmptyBody:
    """The body of a request without one; shared, stateless."""

    __slots__ = ()
    done = True
    discard = False
    buffered = 0
    expect_continue = False
    asked_continue = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    async def read_all(self, limit_bytes: int) -> bytes:
        return b""

    def fail(self, exc: BaseException) -> None:
        pass

    def start_discarding(self) -> None:
        pass


EMPTY_BODY = EmptyBody()


# A first body part up to this size is joined to the head (one small write); a larger one goes
# out by reference (writelines), not copied.
_JOIN_MAX_BYTES = 64 << 10


class Body:
    """A streamed request body. The connection feeds chunks in; iterating takes them out and lets
    the connection resume reading once the buffer has drained (see `Connection.update_reading`).

    `discard` is set when the exchange ended without consuming the body: later chunks are counted
    (for the size limit) and dropped so the next pipelined request can be parsed."""

    __slots__ = (
        "_conn",
        "_chunks",
        "buffered",
        "received",
        "done",
        "discard",
        "expect_continue",
        "asked_continue",
        "_error",
        "_waiter",
        "_content_length",
    )

    def __init__(
        self, conn: ExchangeConnection, content_length: int | None, expect_continue: bool
    ) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0
        self.done = False
        self.discard = False
        # 100 Continue goes out when the handler first asks for the body, not before.
        self.expect_continue = expect_continue
        self.asked_continue = expect_continue  # the client sent `Expect: 100-continue`
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._content_length = content_length

    # --- fed by the connection ---
    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self.buffered += len(data)
        self._wake()

    def complete(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self._error is None and not self.done:
            self._error = exc
            self._wake()

    def start_discarding(self) -> None:
        self.discard = True
        self._chunks.clear()
        self.buffered = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- read by the handler ---
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            self._conn.send_continue(self)
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self.done:
                raise StopAsyncIteration
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = chunks.popleft()
        self.buffered -= len(chunk)
        self._conn.body_consumed()
        return chunk

    async def read_all(self, limit_bytes: int) -> bytes:
        if self._content_length is not None and self._content_length > limit_bytes:
            raise BodyTooLarge(f"declared {self._content_length} bytes, limit {limit_bytes}")
        parts: list[bytes] = []
        total = 0
        async for chunk in self:
            total += len(chunk)
            if total > limit_bytes:
                raise BodyTooLarge(f"more than {limit_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)


class Responder:
    """`api.Responder` for one request. `dead` is set when the front itself answered (e.g. 408
    on a stalled body) or the client left: later writes raise `ClientGone`, `send_bytes` and
    `start` are dropped."""

    __slots__ = (
        "_conn",
        "request",
        "started",
        "finished",
        "dead",
        "_chunked",
        "_no_body",
        "_remaining",
        "_close",
    )

    def __init__(self, conn: ExchangeConnection, req: Request) -> None:
        self._conn = conn
        self.request = req
        self.started = False
        self.finished = False
        self.dead = False
        self._chunked = False
        self._no_body = False
        self._remaining = 0  # body bytes still allowed; -1 = until close
        self._close = False

    @property
    def closed(self) -> bool:
        return self.dead or self._conn.lost

    def send_bytes(self, data: Wire, *, close: bool = False) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = self.finished = True
        conn = self._conn
        if not (self.dead or conn.lost):
            if self.request.tls:
                data = with_fields(data, conn.tls_fields(self.request.host))
            write_wire(conn.transport, data)
        if close or not self.request.keep_alive:
            conn.finish_response(self, True)

    def interim(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Relay an origin's interim (1xx) head before the final answer (RFC 9110 §15.2); the
        caller has stripped its connection-specific fields. Dropped (False) once the answer
        has started or the client has gone, for an HTTP/1.0 client (§15.2: never sent one),
        for 101 (no protocol switch is relayed), and for a 100 to a client whose
        `Expect: 100-continue` the front answers itself (`Connection.send_continue`)."""
        req = self.request
        if (
            self.started
            or self.dead
            or self._conn.lost
            or req.http_version != "1.1"
            or not 100 <= status < 200
            or status == 101
            or (status == 100 and req.body.asked_continue)
        ):
            return False
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            parts.append(name + b": " + value + b"\r\n")
        parts.append(b"\r\n")
        self._conn.transport.write(b"".join(parts))
        return True

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
        """`first`: body bytes to send in the same write as the head (one syscall for a
        small complete response); only with a known `content_length` it does not exceed.
        `fields`: field lines the caller serialised itself, after `headers`."""
        if self.started:
            raise RuntimeError("response already started")
        if status < 200:
            raise ValueError("interim (1xx) responses are the front's business")
        self.started = True
        req = self.request
        conn = self._conn
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        if req.tls:
            parts.append(conn.tls_fields(req.host))
        parts.append(req.id_field)
        for name, value in headers:
            parts.append(name + b": " + value + b"\r\n")
        if fields:
            parts.append(fields)
        if no_body or status == 204 or status == 304:
            # HEAD and 304 may announce the length of the body they do not carry; 204 may not.
            if content_length is not None and status != 204:
                parts.append(b"Content-Length: %d\r\n" % content_length)
            self._remaining = 0
            no_body = True
        elif content_length is not None:
            parts.append(b"Content-Length: %d\r\n" % content_length)
            self._remaining = content_length
        elif req.http_version == "1.1":
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self._chunked = True
        else:
            close = True  # an HTTP/1.0 body of unknown length ends when the connection does
            self._remaining = -1
        if close or not req.keep_alive:
            self._close = True
            parts.append(b"Connection: close\r\n\r\n")
        elif req.http_version == "1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self._no_body = no_body
        large = b""
        if first and not no_body and content_length is not None:
            if len(first) > content_length:
                raise ValueError("first body part longer than the declared Content-Length")
            if len(first) <= _JOIN_MAX_BYTES:
                parts.append(first)
            else:
                large = first  # a spooled body: handed over as is, never copied behind the head
            self._remaining -= len(first)
        if not (self.dead or conn.lost):
            if large:
                conn.transport.writelines((b"".join(parts), large))
            else:
                conn.transport.write(b"".join(parts))

    async def write(self, chunk: bytes) -> None:
        if not self.started or self.finished:
            raise RuntimeError("write() outside start() ... end()")
        conn = self._conn
        if self.dead or conn.lost:
            raise ClientGone("client disconnected")
        size = len(chunk)
        if size == 0 or self._no_body:
            return
        if self._chunked:
            conn.transport.writelines((b"%x\r\n" % size, chunk, b"\r\n"))
        else:
            remaining = self._remaining
            if remaining >= 0:
                if size > remaining:
                    raise ValueError(
                        f"body longer than the declared Content-Length by {size - remaining}"
                    )
                self._remaining = remaining - size
            conn.transport.write(chunk)
        if conn.write_paused:
            await conn.wait_writable()

    def end(self) -> None:
        if not self.started:
            raise RuntimeError("end() before start()")
        if self.finished:
            return
        self.finished = True
        conn = self._conn
        close = self._close
        if self._chunked:
            if not (self.dead or conn.lost):
                conn.transport.write(b"0\r\n\r\n")
        elif self._remaining != 0:
            close = True  # short body (or close-delimited): the connection must end it
        conn.finish_response(self, close)
