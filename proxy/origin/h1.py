"""A lean HTTP/1.1 origin client: asyncio Protocols on llhttp (httptools), pooled per origin.

Why it exists: aiohttp's client costs ~40 µs of CPU on a small pass-through request. This one is a
an `Origin` (proxy.origin.protocol) (same interface, same `OriginError`
semantics: 502 when the origin cannot be reached or breaks the exchange, 504 when it is too slow)
with one Protocol object per connection, one future per wait and no per-request tasks.

http only: an https origin raises `OriginError(PROTOCOL)`; keep the aiohttp client for those.

Connections are pooled per (scheme, host, port); idle ones are reused last-in first-out and closed
after `keepalive_timeout_s`; at most `pool_connections` are open per worker in all (a request
waits up to `connect_timeout_s` for a slot). A connection goes back to the pool the moment its
response has been received to the end (the body then lives in the response object, so `release()`
and `close()` after a full read cost nothing), and only when the request was sent whole, the
response did not end the connection (`Connection: close`, HTTP/1.0) and llhttp agrees.

HEAD: httptools ignores the value `on_headers_complete` returns, so llhttp cannot be told that no
body follows (its F_SKIPBODY; MagicStack/httptools#47 is open). A response to HEAD therefore ends
at its head here, the connection gets a fresh parser for its next exchange, and any byte the old
parser still sees is the origin breaking the protocol: the connection is closed.

Response heads are held to `max_response_header_*` (proxy.origin.head) as they arrive: after
each read that ends inside a head, its fields so far are counted and summed, and the read counts
towards `ResponseHeadLimits.stall_bytes` if it completed nothing (httptools holds a field until
it ends); the reason phrase is checked piece by piece; once the head is whole, the rest of its
fields are summed only if the read could hold too many bytes (a head in one small read, the
common case, costs one count check). Interim (1xx) heads count towards the limits of the final
one, each as one field besides its own, so neither a head nor a stream of interim answers goes
on for ever; each one within them is handed to the request's `interim` listener (the front
forwards it, RFC 9110 §15.2) and is never part of the final answer. Over any limit the exchange fails with `OriginError(PROTOCOL)` and the connection
is closed.

Known heads: an origin repeats its answers' heads byte for byte (the same fields, the same Date
within a second), and llhttp's callbacks are most of what a small answer costs here. A whole
answer that came in one read (its final head, then exactly Content-Length bytes of body, no
interim head, no chunking, the connection kept) files its head's bytes in the pool's
`KnownHeads`, and the second such answer with the same head files what the callbacks made of
it (status, reason, fields, length). A later first read of an exchange that starts with one of
those heads, byte for byte up to its blank line, and holds exactly its body after it, is
answered from there: no other parse could be made of the same bytes. Anything else (a head not
seen, a body split over reads or longer or shorter than its length, a response to HEAD) goes to
llhttp as before, which then sees the whole answer. Heads over `response_head_memo_max_bytes`
are not kept; at `response_head_memo_entries` the memo is emptied whole (a new Date every
second turns it over; 0: off). Only one whole answer in `response_head_memo_learn_one_in` is
filed at all: a head that repeats is kept within a few dozen answers, and heads that never
repeat (an ETag of their own: a cold miss) cost one probe by the read's size.

Timers: the response head must arrive within `first_byte_timeout_s` of the request being sent, the
body may pause at most `read_timeout_s` while someone waits for it, the whole exchange ends at
`total_timeout_s`. The head deadline is one lazily re-armed timer per connection; a wait for
body bytes or for the origin to take request bytes arms a `loop.call_at` timer; nothing runs
while data flows.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, NamedTuple, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from multidict import CIMultiDict
from yarl import URL

from proxy.config import OriginConfig
from proxy.origin.errors import IDEMPOTENT, OriginError, OriginFailure
from proxy.origin.head import ResponseHeadLimits, transfer_coding_refused
from proxy.origin.protocol import Interim

BODY_HIGH_WATER_BYTES = 256 << 10  # unread response body above this: stop reading the origin
COALESCE_MAX_BYTES = 16 << 10  # a first request-body part up to this size rides with the head
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_METHOD_LINES: dict[str, bytes] = {}  # "GET" -> b"GET ", validated once
_NO_FIELDS: CIMultiDict[str] = CIMultiDict()  # `_request_head`'s, when the fields are rendered


class _Stale(OriginError):
    """A reused connection closed before any byte of an answer: the origin had dropped it."""


class _Unexpected(Exception):
    """Bytes from the origin when no answer is expected."""


def render_fields(headers: CIMultiDict[str]) -> bytes:
    """The field lines of a request head, each ending CRLF; refuses (OriginError) anything that
    could split the head: a CR, LF or NUL in a name or value, or a character beyond latin-1."""
    # One join, then the line breaks counted: any CR or LF beyond the separators was in a
    # name or value and would split the head.
    fields = "\r\n".join(map(": ".join, headers.items()))
    n = len(headers)
    if n:
        fields += "\r\n"
    if fields.count("\n") != n or fields.count("\r") != n or "\x00" in fields:
        raise OriginError(
            OriginFailure.PROTOCOL, "CR, LF or NUL in a request header field (not sent)"
        )
    try:
        return fields.encode("latin-1")
    except UnicodeEncodeError as e:
        raise OriginError(OriginFailure.PROTOCOL, "request header outside latin-1") from e


def _request_head(
    method: str,
    path_query: bytes,
    headers: CIMultiDict[str],
    chunked: bool,
    fields: bytes | None = None,
) -> bytes:
    """Serialise the request head; refuse (never send) anything that could split it. `fields`:
    `render_fields(headers)`, when the caller has it already."""
    line = _METHOD_LINES.get(method)
    if line is None:
        if not _TOKEN.match(method):
            raise OriginError(OriginFailure.PROTOCOL, f"invalid request method {method!r}")
        line = method.encode("ascii") + b" "
        if len(_METHOD_LINES) < 64:
            _METHOD_LINES[method] = line
    if not path_query:
        path_query = b"/"
    elif _BAD_TARGET.search(path_query):
        raise OriginError(OriginFailure.PROTOCOL, "control byte or space in the request target")
    if fields is None:
        fields = render_fields(headers)
    if chunked:
        fields += b"Transfer-Encoding: chunked\r\n"
    return line + path_query + b" HTTP/1.1\r\n" + fields + b"\r\n"


class KnownResponseHead(NamedTuple):
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    content_length: int


class KnownHeads:
    """Heads of whole answers that llhttp parsed, with what it made of them, filed by the size
    of the read they came in (head and body): a read is matched by one probe on its length
    and a `startswith` of the few heads filed under it, with no slice or hash of its bytes,
    so answers whose heads never repeat (an ETag, a cookie of their own) cost next to nothing.
    Only one whole answer in `learn_one_in` is offered. A head is kept at its second sighting
    (the first files its bytes only); at most `PER_SIZE` a size, the oldest going first, and
    `max_entries` in all (then emptied)."""

    __slots__ = (
        "by_size",
        "entries",
        "max_entries",
        "max_head_bytes",
        "learn_one_in",
        "countdown",
        "replayed",
    )
    PER_SIZE = 4

    def __init__(self, max_entries: int, max_head_bytes: int, learn_one_in: int = 1) -> None:
        # size of the read -> [head bytes, its parse once seen twice]
        self.by_size: dict[int, list[list[Any]]] = {}
        self.entries = 0
        self.max_entries = max_entries
        self.max_head_bytes = max_head_bytes
        self.learn_one_in = learn_one_in  # whole answers offered to `learn`: one in this many
        self.countdown = learn_one_in
        self.replayed = 0  # answers taken from here, not parsed

    def match(self, data: bytes) -> tuple[int, KnownResponseHead] | None:
        """(the head's length, its parse) when `data` is a known head and its whole body."""
        slots = self.by_size.get(len(data))
        if slots is not None:
            for head, known in slots:
                if known is not None and data.startswith(head):
                    return len(head), known
        return None

    def learn(
        self,
        data: bytes,
        head_len: int,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int,
    ) -> None:
        """`data` was one whole answer, its head the first `head_len` bytes, parsed so."""
        if head_len > self.max_head_bytes or not data.endswith(b"\r\n\r\n", 0, head_len):
            return
        size = len(data)
        slots = self.by_size.get(size)
        if slots is not None:
            for slot in slots:
                head = slot[0]
                if len(head) == head_len and data.startswith(head):
                    if slot[1] is None:
                        slot[1] = KnownResponseHead(status, reason, tuple(headers), content_length)
                    return
        if self.entries >= self.max_entries:
            self.by_size.clear()
            self.entries = 0
            slots = None
        if slots is None:
            slots = self.by_size[size] = []
        elif len(slots) >= self.PER_SIZE:
            del slots[0]
            self.entries -= 1
        slots.append([data[:head_len], None])
        self.entries += 1

    def known(self) -> dict[bytes, KnownResponseHead]:
        """Every head kept with its parse (for tests and inspection)."""
        return {h: k for slots in self.by_size.values() for h, k in slots if k is not None}


class H1UpstreamResponse:
    """An origin response whose body may not have been read yet. Received body bytes are kept
    here, so the connection can go back to the pool as soon as the origin has sent them all."""

    __slots__ = (
        "status",
        "reason",
        "headers",
        "content_length",
        "started",
        "_conn",
        "_loop",
        "_parts",
        "_buffered",
        "_done",
        "_error",
        "_waiter",
        "_read_timeout_s",
        "_deadline",
    )

    def __init__(
        self,
        conn: _Conn,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        started: float,
        read_timeout_s: float,
        deadline: float,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.started = started
        self._conn: _Conn | None = conn
        self._loop = conn.loop
        self._parts: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._error: OriginError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout_s = read_timeout_s
        self._deadline = deadline

    # -- fed by the connection ----------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self, error: OriginError | None) -> None:
        self._conn = None
        if error is not None and self._error is None and not self._done:
            self._error = error
        self._done = True
        self._wake()

    # -- read by the caller -------------------------------------------------------------------

    def _take(self) -> list[bytes]:
        parts = self._parts
        self._parts = []
        self._buffered = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return parts

    async def _wait(self) -> None:
        loop = self._loop
        now = loop.time()
        if now >= self._deadline:
            self._time_out(None)
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        timer = loop.call_at(min(now + self._read_timeout_s, self._deadline), self._time_out, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    def _time_out(self, fut: asyncio.Future[None] | None) -> None:
        if fut is not None and fut is not self._waiter:
            return
        total = self._loop.time() >= self._deadline
        err = OriginError(
            OriginFailure.TIMEOUT,
            "total timeout reading the body" if total else "body read timeout",
        )
        conn = self._conn
        if conn is not None:
            conn.fail(err)
        else:
            self._end(err)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._parts:
                if self._loop.time() > self._deadline:
                    self._time_out(None)
                parts = self._take()
                yield parts[0] if len(parts) == 1 else b"".join(parts)
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return
            await self._wait()

    async def read_up_to(self, limit_bytes: int) -> tuple[bytes, bool]:
        """Read the body while it fits in `limit_bytes`. Returns (bytes read, complete)."""
        got: list[bytes] = []
        size = 0
        while True:
            if self._parts:
                size += self._buffered
                got += self._take()
                if size > limit_bytes:
                    return b"".join(got), False
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return b"".join(got), True
            await self._wait()

    def body_if_whole(self, limit_bytes: int) -> bytes | None:
        """The body, when the origin has sent all of it (the common small answer: head and
        body in one read) and it fits in `limit_bytes`."""
        if not self._done or self._error is not None or self._buffered > limit_bytes:
            return None
        parts = self._take()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Nothing to do after a full read (the connection is back in the pool already);
        otherwise the unread rest of the body is not worth reading: close the connection."""
        self.close()

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._done = True
            conn.resp = None
            conn.shutdown(abort=True)


class _Host:
    __slots__ = ("host", "port", "idle")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[_Conn] = []  # a stack: newest on top, so oldest at index 0


class _Conn(asyncio.Protocol):
    """One origin connection: the llhttp callbacks, flow control both ways, one exchange at a
    time."""

    __slots__ = (
        "pool",
        "host",
        "loop",
        "transport",
        "parser",
        "uses",
        "closed",
        "counted",
        "in_pool",
        "idle_until",
        "paused",
        "resp",
        "_limits",
        "_head_fut",
        "_is_head",
        "_sent",
        "_got_bytes",
        "_reason",
        "_headers",
        "_field_count",
        "_field_bytes",
        "_counted",
        "_stalled_bytes",
        "_progress",
        "_read_bytes",
        "_cl",
        "_chunked",
        "_started",
        "_deadline",
        "_head_due",
        "_timer",
        "_timer_at",
        "_write_paused",
        "_drain",
        "_interim",
    )

    def __init__(self, pool: H1OriginPool, host: _Host, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.host = host
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.uses = 0
        self.closed = False
        self.counted = True  # holds one of the pool's `pool_connections` slots
        self.in_pool = False
        self.idle_until = 0.0
        self.paused = False
        self.resp: H1UpstreamResponse | None = None
        self._limits = pool.head_limits
        self._head_fut: asyncio.Future[H1UpstreamResponse] | None = None
        self._is_head = False
        self._sent = False
        self._got_bytes = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        # This exchange's heads so far: fields of earlier (interim) heads and those heads, the
        # names + values of the fields counted, how many of the current head's are counted,
        # bytes of reads that completed nothing of the head, whether the status line moved on;
        # and the size of the read being parsed.
        self._field_count = 0
        self._field_bytes = 0
        self._counted = 0
        self._stalled_bytes = 0
        self._progress = False
        self._read_bytes = 0
        self._cl: int | None = None
        self._chunked = False
        self._started = 0.0
        self._deadline = 0.0
        self._head_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._interim: Interim | None = None  # this exchange's listener for 1xx heads

    # -- one exchange -------------------------------------------------------------------------

    def send(
        self,
        head: bytes,
        is_head: bool,
        started: float,
        deadline: float,
        interim: Interim | None = None,
    ) -> asyncio.Future[H1UpstreamResponse]:
        """An exchange whose request is `head` alone (no body): written now; the future gets
        the final response head. Whoever awaits it calls `abandon` if the wait ends in an
        exception. The pool's common case: no coroutine of its own (`exchange` has one)."""
        fut = self._begin(is_head, started, deadline, interim)
        try:
            transport = self.transport
            assert transport is not None
            transport.write(head)
            self._sent = True
            self._await_head(deadline)
        except BaseException:
            self.abandon(fut)
            raise
        return fut

    async def exchange(
        self,
        head: bytes,
        body: AsyncIterable[bytes] | None,
        content_length: int | None,
        is_head: bool,
        started: float,
        deadline: float,
        interim: Interim | None = None,
    ) -> H1UpstreamResponse:
        """One exchange, with or without a request body."""
        if body is None:
            fut = self.send(head, is_head, started, deadline, interim)
        else:
            fut = self._begin(is_head, started, deadline, interim)
        try:
            if body is not None:
                transport = self.transport
                assert transport is not None
                await self._send_body(transport, head, body, content_length)
                if fut.done():
                    return fut.result()
                self._await_head(deadline)
            return await fut
        except BaseException:
            self.abandon(fut)
            raise

    def _begin(
        self, is_head: bool, started: float, deadline: float, interim: Interim | None
    ) -> asyncio.Future[H1UpstreamResponse]:
        if self.closed:
            raise _Stale(OriginFailure.RESET, "pooled connection already closed")
        fut: asyncio.Future[H1UpstreamResponse] = self.loop.create_future()
        self._head_fut = fut
        self._is_head = is_head
        self._started = started
        self._deadline = deadline
        self._got_bytes = False
        self._sent = False
        self._field_count = self._field_bytes = self._counted = self._stalled_bytes = 0
        self._progress = False
        self._interim = interim
        self.uses += 1
        return fut

    def _await_head(self, deadline: float) -> None:
        """The request is sent: the head is due within `first_byte_timeout_s`."""
        due = min(self.loop.time() + self.pool.cfg.first_byte_timeout_s, deadline)
        self._head_due = due
        if self._timer is None or self._timer_at > due:
            self._arm(due)

    def abandon(self, fut: asyncio.Future[H1UpstreamResponse]) -> None:
        """The wait for `fut` ended in an exception (a failure, a cancellation): an exchange
        still in progress ends with the connection; an answer nobody will see is closed."""
        if self._head_fut is fut:
            self._head_fut = None
            self.shutdown(abort=True)
        elif fut.done() and not fut.cancelled() and fut.exception() is None:
            fut.result().close()  # answered, but our caller will never see it
        # (fut.exception() above also marks a failure as seen)

    async def _send_body(
        self,
        transport: asyncio.Transport,
        head: bytes,
        body: AsyncIterable[bytes],
        length: int | None,
    ) -> None:
        """Content-Length given: the body goes out raw and must match it; otherwise chunked.
        Stops early (the request then counts as not sent whole) if the origin has answered or
        closed the connection."""
        pending: bytes | None = head
        sent = 0
        async for part in body:
            if not part:
                continue
            sent += len(part)
            if length is None:
                part = b"%x\r\n%b\r\n" % (len(part), part)
            elif sent > length:
                raise OriginError(
                    OriginFailure.PROTOCOL, "request body longer than its Content-Length"
                )
            if pending is not None:
                if len(part) <= COALESCE_MAX_BYTES:
                    transport.write(pending + part)
                else:
                    transport.write(pending)
                    transport.write(part)
                pending = None
            else:
                transport.write(part)
            if self._head_fut is None or self.closed:
                return
            if self._write_paused:
                await self._drained()
                if self._head_fut is None or self.closed:
                    return
        if length is not None and sent != length:
            raise OriginError(
                OriginFailure.PROTOCOL, "request body shorter than its Content-Length"
            )
        tail = b"" if length is not None else b"0\r\n\r\n"
        if pending is not None or tail:
            transport.write((pending or b"") + tail)
        self._sent = True

    async def _drained(self) -> None:
        loop = self.loop
        fut: asyncio.Future[None] = loop.create_future()
        self._drain = fut
        when = min(loop.time() + self.pool.cfg.read_timeout_s, self._deadline)
        timer = loop.call_at(when, _expire, fut, "origin not reading the request body")
        try:
            await fut
        finally:
            timer.cancel()
            self._drain = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        """The head deadline, checked lazily: arming and cancelling a timer per request costs
        ~2.4 µs on uvloop, so one timer per connection is re-armed only when it fires early."""
        self._timer = None
        if self._head_fut is None or self.closed:
            return
        if self.loop.time() + 0.001 < self._head_due:
            self._arm(self._head_due)
            return
        total = self._head_due >= self._deadline
        self.fail(
            OriginError(
                OriginFailure.TIMEOUT,
                "total timeout waiting for the response head"
                if total
                else "no response head in time",
            )
        )

    def fail(self, err: OriginError) -> None:
        """End the exchange in progress with `err` and drop the connection."""
        fut = self._head_fut
        if fut is not None:
            self._head_fut = None
            if not fut.done():
                fut.set_exception(err)
        resp = self.resp
        if resp is not None:
            self.resp = None
            resp._end(err)
        self.shutdown(abort=True)

    def shutdown(self, *, abort: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                if abort:
                    self.transport.abort()
                else:
                    self.transport.close()
            self.pool._forget(self)

    def resume(self) -> None:
        self.paused = False
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def _complete(self, resp: H1UpstreamResponse, keep_alive: bool) -> None:
        self.resp = None
        resp._end(None)
        if self.paused:
            self.resume()
        if keep_alive and self._sent and not self.closed:
            self.pool._release(self)
        else:
            self.shutdown(abort=not self._sent)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        fut = self._head_fut
        if fut is None and self.resp is None:
            self.shutdown(abort=True)  # nothing asked: the origin is out of step
            return
        first = (
            not self._got_bytes
            and fut is not None
            and not self._is_head
            and self.pool.known_heads.max_entries > 0
        )
        if first:
            found = self.pool.known_heads.match(data)
            if found is not None:
                assert fut is not None
                self._replay(fut, found[1], data[found[0] :])
                return
        self._got_bytes = True
        self._read_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self.fail(OriginError(OriginFailure.PROTOCOL, "origin switched protocols"))
            return
        except HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, OriginError):
                self.fail(cause)
            else:
                self.fail(OriginError(OriginFailure.PROTOCOL, f"invalid response: {e}"))
            return
        if self._head_fut is not None:  # all of this read was head, and the head goes on
            if self._progress or self._counted != len(self._headers):
                self._progress = False
                self._stalled_bytes = 0
                err = self._count_fields()
            else:
                self._stalled_bytes += len(data)
                err = None
                if self._stalled_bytes > self.pool.head_stall_bytes:
                    err = self._limits.unending()
            if err is not None:
                self.fail(err)
                return
        resp = self.resp
        if resp is not None and resp._buffered > BODY_HIGH_WATER_BYTES and not self.paused:
            self.paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        elif first and resp is None and self._head_fut is None and not self.closed:
            # A whole answer in this read: its head in (no future awaited), its body too (the
            # response is done), the connection kept.
            memo = self.pool.known_heads
            memo.countdown -= 1
            if memo.countdown <= 0:  # one whole answer in `learn_one_in` is filed
                memo.countdown = memo.learn_one_in
                assert fut is not None
                self._learn(fut, data)

    def _learn(self, fut: asyncio.Future[H1UpstreamResponse], data: bytes) -> None:
        """File the head of a whole answer that came in one read (`KnownHeads.learn`)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        resp = fut.result()
        cl = resp.content_length
        status = resp.status
        if (
            cl is None  # also chunked: llhttp refuses a length with a transfer coding
            or self._field_count  # an interim head came first: the read is not one head
            or status == 204
            or status == 304
            or resp._error is not None
            or resp._buffered != cl
        ):
            return
        self.pool.known_heads.learn(data, len(data) - cl, status, resp.reason, resp.headers, cl)

    def _replay(
        self, fut: asyncio.Future[H1UpstreamResponse], known: KnownResponseHead, body: bytes
    ) -> None:
        """A whole answer in one read whose head llhttp parsed before, byte for byte: what its
        callbacks made of it then, without them."""
        self.pool.known_heads.replayed += 1
        self._got_bytes = True
        resp = self._answered(known.status, known.reason, list(known.headers), known.content_length)
        if body:
            resp._parts.append(body)
            resp._buffered = len(body)
        self._complete(resp, True)
        if not fut.done():
            fut.set_result(resp)

    def eof_received(self) -> bool | None:
        if self._head_fut is None and self.resp is None:
            self.shutdown(abort=False)  # idle: out of the pool now, not a loop turn later
        return None  # the transport closes; connection_lost settles an exchange in progress

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed = True
        self.pool._forget(self)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self._head_fut is not None:
            if not self._got_bytes and self.uses > 1:
                self.fail(_Stale(OriginFailure.RESET, "origin closed the pooled connection"))
            else:
                self.fail(
                    OriginError(
                        OriginFailure.RESET, "origin closed the connection before answering"
                    )
                )
            return
        resp = self.resp
        if resp is not None:
            self.resp = None
            if exc is None and self._cl is None and not self._chunked:
                resp._end(None)  # a body delimited by the connection's end
            else:
                resp._end(OriginError(OriginFailure.RESET, "origin closed the connection mid-body"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head_fut is None:
            raise _Unexpected
        self._reason = b""
        self._headers = []
        self._progress = True
        self._cl = None
        self._chunked = False

    def on_status(self, reason: bytes) -> None:
        reason = self._reason + reason
        if len(reason) > self._limits.field_bytes:
            raise self._limits.reason_too_long()
        self._reason = reason
        self._progress = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            self._cl = int(value)
        elif n == 17 and name.lower() == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise transfer_coding_refused()
            self._chunked = True

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise OriginError(OriginFailure.PROTOCOL, "origin switched protocols")
            # 100, 102, 103: interim, never the answer; llhttp parses the next head. Its
            # fields, and the head itself as one, count towards the final head's limits; once
            # within them it is passed on (RFC 9110 §15.2: a proxy forwards 1xx).
            err = self._count_fields()
            if err is not None:
                raise err
            self._field_count += self._counted + 1
            self._counted = 0
            if self._field_count > self._limits.header_count:
                raise self._limits.too_many_fields()
            if self._interim is not None:
                self._interim(status, self._reason, self._headers)
            return
        if self._field_bytes or self._read_bytes > self.pool.head_unsummed_bytes:
            err = self._count_fields()  # the read may hold a field or fields too large
            if err is not None:
                raise err
        elif self._field_count + len(self._headers) > self._limits.header_count:
            raise self._limits.too_many_fields()
        fut = self._head_fut
        assert fut is not None
        resp = self._answered(status, self._reason, self._headers, self._cl)
        if self._is_head:
            keep_alive = parser.should_keep_alive()
            self.parser = HttpResponseParser(self)
            self._complete(resp, keep_alive)
        if not fut.done():
            fut.set_result(resp)

    def _answered(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], cl: int | None
    ) -> H1UpstreamResponse:
        """The exchange's final head is in (parsed, or replayed from the known heads): its
        response becomes the one the connection feeds, and no other head is awaited."""
        resp = H1UpstreamResponse(
            self,
            status,
            reason,
            headers,
            cl,
            self._started,
            self.pool.cfg.read_timeout_s,
            self._deadline,
        )
        self.resp = resp
        self._head_fut = None
        self._interim = None
        return resp

    def _count_fields(self) -> OriginError | None:
        """Count and sum the current head's fields not counted yet; the refusal for the first
        of this exchange's fields that is over a limit (the first, so that the reason given
        does not depend on how the head was split into reads)."""
        headers = self._headers
        limits = self._limits
        total = self._field_bytes
        count = self._field_count + self._counted
        for i in range(self._counted, len(headers)):
            name, value = headers[i]
            size = len(name) + len(value)
            total += size
            count += 1
            if count > limits.header_count:
                return limits.too_many_fields()
            if size > limits.field_bytes or total > limits.header_bytes:
                return limits.over(size)
        self._field_bytes = total
        self._counted = len(headers)
        return None

    def on_body(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:
            raise _Unexpected  # a body after a response to HEAD
        resp._parts.append(data)
        resp._buffered += len(data)
        resp._wake()

    def on_message_complete(self) -> None:
        resp = self.resp  # None after an interim answer or a response to HEAD
        if resp is not None:
            self._complete(resp, self.parser.should_keep_alive())


def _expire(fut: asyncio.Future[None], detail: str) -> None:
    if not fut.done():
        fut.set_exception(OriginError(OriginFailure.TIMEOUT, detail))


class H1OriginPool:
    """Pooled HTTP/1.1 connections to http origins, one pool per worker."""

    def __init__(self, cfg: OriginConfig) -> None:
        self.cfg = cfg
        self.head_limits = ResponseHeadLimits.from_config(cfg)
        self.head_stall_bytes = self.head_limits.stall_bytes
        # A head whose fields all came in one read of at most this many bytes is within the
        # field size and total limits without summing them.
        self.head_unsummed_bytes = min(self.head_limits.field_bytes, self.head_limits.header_bytes)
        # Heads of whole answers that llhttp parsed (`_Conn._learn`, `_replay`).
        self.known_heads = KnownHeads(
            cfg.response_head_memo_entries,
            cfg.response_head_memo_max_bytes,
            cfg.response_head_memo_learn_one_in,
        )
        self.requests = 0
        self.errors: dict[OriginFailure, int] = {k: 0 for k in OriginFailure}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hosts: dict[URL, _Host] = {}
        self._conns: set[_Conn] = set()
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            conn.fail(OriginError(OriginFailure.RESET, "origin pool closed"))
        self._hosts.clear()

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(
        self,
        origin: URL,
        method: str,
        path_query: bytes,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None,
        interim: Interim | None = None,
        fields: bytes | None = None,
    ) -> H1UpstreamResponse:
        """Send the request and wait for the final response head; 1xx interim heads go to
        `interim` as they arrive (never surfacing as the answer). `fields`: `headers` as
        `render_fields` renders them, when the caller has them so (not rendered again)."""
        self.requests += 1
        try:
            host = self._hosts.get(origin)
            if host is None:
                host = self._host(origin)
            length: int | None = None
            if body is not None:
                cl = headers.get("Content-Length")
                if cl is not None:
                    if not cl.isdigit():
                        raise OriginError(OriginFailure.PROTOCOL, "invalid request Content-Length")
                    length = int(cl)
            head = _request_head(
                method, path_query, headers, body is not None and length is None, fields
            )
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            started = time.monotonic()
            now = loop.time()
            deadline = now + self.cfg.total_timeout_s
            is_head = method == "HEAD"
            conn = self._pop_idle(host, now)
            if conn is None:
                conn = await self._connect(host, deadline)
            try:
                if body is None:  # the common case, without `exchange`'s coroutine
                    fut = conn.send(head, is_head, started, deadline, interim)
                    try:
                        return await fut
                    except BaseException:
                        conn.abandon(fut)
                        raise
                return await conn.exchange(head, body, length, is_head, started, deadline, interim)
            except _Stale:
                # The origin closed a pooled connection before it saw this request: once more
                # on a new connection, only when repeating it cannot do harm.
                if body is not None or method not in IDEMPOTENT:
                    raise
            conn = await self._connect(host, deadline)
            return await conn.exchange(head, body, length, is_head, started, deadline, interim)
        except OriginError as e:
            self.errors[e.kind] += 1
            raise

    def send_now(
        self,
        origin: URL,
        method: str,
        path_query: bytes,
        fields: bytes,
        interim: Interim | None = None,
    ) -> tuple[_Conn, asyncio.Future[H1UpstreamResponse]] | None:
        """A request without a body written now, on a connection the pool holds idle for
        `origin`, with no coroutine: the connection and the future of its final response head,
        which the caller reads with `answer` (and, should it stop waiting, gives to the
        connection's `abandon`). None when no idle connection is ready (or the head cannot be
        written): `request` then connects, waits for a slot or refuses, as it does for any
        request. `fields`: the request's field lines, as `render_fields` renders them."""
        loop = self._loop
        if loop is None or origin.scheme != "http":
            return None
        host = self._hosts.get(origin)
        if host is None:
            return None
        try:
            head = _request_head(method, path_query, _NO_FIELDS, False, fields)
        except OriginError:
            return None  # refused before a connection is taken; `request` says why
        now = loop.time()
        conn = self._pop_idle(host, now)
        if conn is None:
            return None
        try:
            fut = conn.send(
                head, method == "HEAD", time.monotonic(), now + self.cfg.total_timeout_s, interim
            )
        except OriginError:
            return None  # the connection went with the exchange; `request` sends it anew
        self.requests += 1
        return conn, fut

    def answer(self, fut: asyncio.Future[H1UpstreamResponse]) -> H1UpstreamResponse | None:
        """The final head `send_now`'s future settled with; raises its OriginError (counted as
        `request` counts it). None: the origin had closed the pooled connection before it saw
        the request, which may then be sent again (`request`, on a new connection)."""
        try:
            return fut.result()
        except _Stale:
            return None
        except OriginError as e:
            self.errors[e.kind] += 1
            raise

    # -- the pool -----------------------------------------------------------------------------

    def _host(self, origin: URL) -> _Host:
        if origin.scheme != "http":
            raise OriginError(OriginFailure.PROTOCOL, "https origins need the aiohttp client")
        if origin.host is None or origin.port is None:
            raise OriginError(OriginFailure.CONNECT, f"origin without a host: {origin}")
        host = self._hosts[origin] = _Host(origin.host, origin.port)
        return host

    def _pop_idle(self, host: _Host, now: float) -> _Conn | None:
        stack = host.idle
        while stack:
            conn = stack.pop()
            conn.in_pool = False
            if conn.idle_until > now and not conn.closed:
                return conn
            conn.shutdown(abort=False)  # expired, and everything below it is older
        return None

    async def _connect(self, host: _Host, deadline: float) -> _Conn:
        loop = self._loop
        assert loop is not None
        cfg = self.cfg
        until = min(loop.time() + cfg.connect_timeout_s, deadline)
        while self._open >= cfg.pool_connections:
            if self._evict_idle():
                continue
            await self._wait_slot(loop, until)
            conn = self._pop_idle(host, loop.time())
            if conn is not None:
                return conn
        self._open += 1
        conn = _Conn(self, host, loop)
        self._conns.add(conn)
        try:
            async with asyncio.timeout_at(until):
                await loop.create_connection(lambda: conn, host.host, host.port)
        except BaseException as e:
            conn.closed = True
            self._forget(conn)
            if isinstance(e, TimeoutError):
                raise OriginError(OriginFailure.TIMEOUT, "connect timeout") from e
            if isinstance(e, OSError):
                raise OriginError(OriginFailure.CONNECT, str(e) or type(e).__name__) from e
            raise
        return conn

    async def _wait_slot(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        fut: asyncio.Future[None] = loop.create_future()
        self._slot_waiters.append(fut)
        timer = loop.call_at(until, _expire, fut, "no free origin connection in time")
        try:
            await fut
        finally:
            timer.cancel()
            if not fut.done():
                fut.cancel()

    def _wake_slot_waiter(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection of any origin to make room for another."""
        oldest: _Conn | None = None
        for host in self._hosts.values():
            if host.idle and (oldest is None or host.idle[0].idle_until < oldest.idle_until):
                oldest = host.idle[0]
        if oldest is None:
            return False
        oldest.shutdown(abort=False)
        return True

    def _release(self, conn: _Conn) -> None:
        loop = conn.loop
        conn.idle_until = loop.time() + self.cfg.keepalive_timeout_s
        conn.in_pool = True
        conn.host.idle.append(conn)
        if self._slot_waiters:
            self._wake_slot_waiter()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def _forget(self, conn: _Conn) -> None:
        if conn.in_pool:
            conn.in_pool = False
            conn.host.idle.remove(conn)
        if conn.counted:
            conn.counted = False
            self._open -= 1
            self._conns.discard(conn)
            if self._slot_waiters:
                self._wake_slot_waiter()

    def _sweep_interval(self) -> float:
        return min(1.0, max(0.02, self.cfg.keepalive_timeout_s / 4))

    def _sweep(self) -> None:
        """Close idle connections past `keepalive_timeout_s`; oldest sit at the stack bottom."""
        self._sweeper = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        any_idle = False
        for host in self._hosts.values():
            stack = host.idle
            while stack and stack[0].idle_until <= now:
                stack[0].shutdown(abort=False)
            any_idle = any_idle or bool(stack)
        if any_idle:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
