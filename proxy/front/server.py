"""The data-plane HTTP/1.1 server: an `asyncio.Protocol` on llhttp (httptools), run under uvloop.

One `Connection` per client socket. It parses with llhttp, enforces `FrontLimits`, answers
pipelined requests strictly in order (a bounded queue), streams request bodies with read
backpressure and response bodies with write backpressure, and closes what must be closed.

The cache-hit fast path: llhttp calls `on_headers_complete`, which builds one `Request` and one
`Responder` and calls the handler; the handler calls `Responder.send_bytes` and returns None. No
task, no coroutine, no timer handle, no header dict. In front of llhttp sits the strict head
(proxy/front/strict.py): a read that is exactly one common GET/HEAD head is matched by one
regex and answered (or dispatched) as llhttp's callbacks would have it, without a Python call
per parser event (issue 18); any other read is llhttp's, unchanged. Deadlines are plain floats on the connection,
swept by one server-wide timer (`FrontLimits.tick_s`), so arming one costs an attribute store.
A request body has three: the longest silence (re-armed by each read), the whole body's time,
and its minimum average rate; the last two are looked at by the sweep alone, never per read,
so a body trickled just fast enough to beat the first still ends (issue 10).

Strictness, on top of llhttp's own (CL+TE, duplicate or list Content-Length, obs-fold, whitespace
before the colon, bad tokens, control bytes, bare CR/LF): Transfer-Encoding must be exactly
`chunked`, and not in HTTP/1.0; at most one Host; versions other than 1.0/1.1 get 505. Every
refusal is a short text answer with `Connection: close`, followed by a lingering close (write EOF,
drain what the client still sends, for a bounded time) so the answer is not lost to a TCP reset.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from ssl import SSLContext
from types import CoroutineType
from typing import Any

import httptools

from proxy.front.accept import ConnectionShares, SharedListener
from proxy.front.api import BodyTooLarge, ClientGone, Handler
from proxy.front.exchange import EMPTY_BODY, Body, EmptyBody, Request, Responder
from proxy.front.limits import FrontLimits, FrontTimeout
from proxy.front.request_id import RequestIds
from proxy.front.strict import STRICT_MAX_BYTES, StrictHead
from proxy.front.wire import CONTINUE_100, Wire, error_response, with_fields, write_wire
from proxy.rfc.hopbyhop import HOP_BY_HOP_BYTES

log = logging.getLogger("edgeproxy.front")

# What the parser is doing on a connection.
_IDLE = 0  # between messages
_HEAD = 1  # inside a request head
_BODY = 2  # inside a request body (for a body-less request: between its head and its end)

_METHODS = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
}
_NEVER = 1 << 62
# RFC 9110 §9.1: a method is a token. llhttp knows a fixed list (GET … PROPFIND, QUERY, PURGE);
# any other is parsed under a stand-in name and forwarded as sent (`_reparse_method`).
_METHOD_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_STAND_IN = b"GET"  # llhttp frames a request body by its fields alone, whatever the method

# Facts about the head being parsed, one int so resetting them is one store.
_HOST_SEEN = 1
_CHUNKED = 2
_EXPECT_CONTINUE = 4
_FLAGGED = 8  # a field named in FrontServer.flag_headers was present


class _Reject(Exception):
    """Raised in a parser callback (or by a deadline): answer `status` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _StopParsing(Exception):
    """Raised in a parser callback: read no further requests on this connection."""


def _classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, _Reject):
        return exc.status, exc.detail
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        return 400, "invalid or unsupported method"
    if isinstance(exc, httptools.HttpParserInvalidURLError):
        return 400, "invalid request target"
    if isinstance(exc, httptools.HttpParserError):
        reason = str(exc)
        if "HTTP version" in reason:
            return 505, "only HTTP/1.0 and HTTP/1.1 are served"
        printable = "".join(c if " " <= c < "\x7f" else "?" for c in reason[:100])
        return 400, "malformed request: " + printable
    return 400, "malformed request"


ALIASED_FIELDS = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"forwarded",
        b"via",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-real-ip",
    }
    | HOP_BY_HOP_BYTES
)
"""Fields the edge sets or checks. A name with `_` that maps onto one of these once `_` -> `-`
(as CGI/WSGI origins do, HTTP_CONTENT_LENGTH) would let a client smuggle framing or a forwarded
address past the edge's checks, so it is refused with 400, never forwarded (issue 10)."""


def _check_aliases(headers: list[tuple[bytes, bytes]]) -> None:
    """400 for a name that becomes an ALIASED_FIELDS name once `_` -> `-`. Run only on
    connections that sent a `_` at all, so the hit path pays one byte scan per read."""
    for name, _value in headers:
        if b"_" in name and name.replace(b"_", b"-").lower() in ALIASED_FIELDS:
            raise _Reject(400, "header name aliases a framing or forwarding field")


def _llhttp_refuses(method: bytes) -> bool:
    """llhttp refuses this method (asked only after a parse failed, so never on a hit)."""
    try:
        httptools.HttpRequestParser(_NO_CALLBACKS).feed_data(method + b" / HTTP/1.1\r\n")
    except httptools.HttpParserError:
        return True
    return False


_NO_CALLBACKS = object()


# (method, raw target, Host, keep-alive, version, request id field line, the request object
# when the server was told to build one for it: `fast_answer_logs`) -> an answer or None.
FastAnswer = Callable[
    [str, bytes, "bytes | None", bool, str, bytes, "Request | None"], "Wire | None"
]


class Connection(asyncio.Protocol):
    """One client connection. Methods without a leading underscore are called by `exchange`."""

    def __init__(self, server: FrontServer, tls: bool = False) -> None:
        limits = server.limits
        self._server = server
        self.tls = tls  # arrived on the TLS listener (the handshake is done by connection_made)
        self._limits = limits
        self._handler: Callable[[Request, Responder], Any] = server.handler  # type: ignore[assignment]
        self.loop = server.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.lost = False
        self._saw_underscore = False  # any "_" read on this connection (see _check_aliases)
        self._counted = False
        self._parser = httptools.HttpRequestParser(self)
        self._client_ip = ""
        # limits read per header, copied out of the frozen struct
        self._max_line = limits.max_request_line_bytes
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_count = limits.max_header_count
        self._max_body_bytes = limits.max_body_bytes
        # Bytes of a head that is still arriving, beyond its target: header bytes plus each
        # line's ": " and CRLF plus the method and version. Past this, the answer is 431.
        self._max_head_bytes = limits.max_header_bytes + 4 * limits.max_header_count + 64
        self._max_field_bytes = limits.max_header_field_bytes
        self._header_timeout_s = limits.header_read_timeout_s
        self._body_timeout_s = limits.body_read_timeout_s
        self._body_total_s = limits.body_total_timeout_s
        self._body_min_rate = limits.body_min_rate_bytes_per_s
        self._body_rate_grace_s = limits.body_min_rate_grace_s
        self._keepalive_timeout_s = limits.keepalive_timeout_s
        # deadlines: loop time, 0.0 = none (see FrontServer._sweep)
        self.deadline = 0.0
        self.write_deadline = 0.0
        # The body being read as a whole (issue 10): `body_due` is when the sweep next looks at
        # its pace (see _check_body_pace), so a read costs nothing more than before.
        self.body_due = 0.0
        self._body_started = 0.0  # less the time reading was paused: that is our doing
        self._body_end_due = 0.0  # body_total_timeout_s after the start
        self._paused_at = 0.0
        self.reading_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # the head being parsed
        self._phase = _IDLE
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # of earlier reads that ended inside this head
        self._chunk_bytes = 0  # of the read being parsed
        self._flags = 0  # _HOST_SEEN | _CHUNKED | _EXPECT_CONTINUE | _FLAGGED
        self._host: bytes | None = None
        self._flag_lengths = server.flag_lengths
        self._flag_names = server.flag_headers
        self._fast = server.fast_answer
        self._fast_logs = server.fast_answer_logs  # hand it the request, for an access log
        # The strict head (proxy/front/strict.py): reads up to this size are offered to it
        # first; -1 when it is off (connection_made turns it off for a trusted id's sender).
        self._strict = server.strict_head
        self._strict_max = server.strict_max_bytes
        # Request ids (proxy/front/request_id.py): a client's own is read only on connections
        # from `request_id_trusted_from` (decided once, in connection_made).
        self._ids: RequestIds | None = server.request_ids
        self._id_trusted = False
        self._id_lname = self._ids.lname if self._ids is not None else b""
        self._id_len = len(self._id_lname) if self._ids is not None else -1
        self._given_id: bytes | None = None
        self._content_length: int | None = None
        self._last_keep_alive = True
        self._method_as_sent: bytes | None = None  # the next head's, parsed under _STAND_IN
        # exchanges
        self._parsing: Request | None = None  # the request whose body is being read
        self._parsing_body: Body | None = None  # and that body
        self._active: Request | None = None  # the request whose handler runs
        self._responder: Responder | None = None
        self._task: asyncio.Future[Any] | None = None
        self._queue: deque[Request] = deque()  # parsed, waiting for the active one
        self._discarding: Body | None = None  # unread body of an answered request
        # closing
        self._stopped = False  # read no further requests
        self._close_after = False  # close once everything read has been answered
        self._pending_error: bytes | None = None  # an answer due after the queue
        self._lingering = False
        self._linger_buffer = _NEVER

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self._server
        limits = self._limits
        if server.refuses_connections():
            self._stopped = True
            server.rejected_connections += 1
            transport.close()
            return
        self._counted = True
        server.register(self)
        peer = transport.get_extra_info("peername")
        self._client_ip = peer[0] if peer else ""
        if self._ids is not None:
            self._id_trusted = self._ids.trusts(self._client_ip)
            if self._id_trusted:
                self._strict_max = -1  # its id field is read by on_header
        self.transport.set_write_buffer_limits(
            high=limits.write_buffer_high_bytes, low=limits.write_buffer_low_bytes
        )
        # a fresh connection gets the header deadline for its first request
        self.deadline = self.loop.time() + limits.header_read_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stopped = True
        self.deadline = self.write_deadline = self.body_due = 0.0
        if self._counted:
            self._counted = False
            self._server.unregister(self)
        self._wake_writer()
        gone = ClientGone("client disconnected")
        if self._active is not None:
            self._active.body.fail(gone)
        for req in self._queue:
            req.body.fail(gone)
        if self._parsing_body is not None:
            self._parsing_body.fail(gone)

    def eof_received(self) -> bool:
        # The client half-closed: no further requests; answer what was read, then close.
        if self._lingering or (self._active is None and not self._queue):
            return False
        self._stopped = True
        self._close_after = True
        if self._parsing_body is not None:
            self._parsing_body.fail(ClientGone("client closed before the end of the body"))
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.loop.time() + self._limits.write_stall_timeout_s
        self._server.write_pauses += 1

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return  # closing: what the client still sends is dropped
        self._chunk_bytes = len(data)
        if not self._saw_underscore and b"_" in data:
            self._saw_underscore = True  # sticky: from now on each head's names are checked
        phase = self._phase
        if (
            phase == _IDLE
            and len(data) <= self._strict_max
            and self._active is None
            and not self._queue
            and self._answer_strict(data)
        ):
            return
        if phase == _BODY:
            self.deadline = self._server.clock + self._body_timeout_s
        try:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if phase != _IDLE or not self._reparse_method(exc, data):
                    raise
        except httptools.HttpParserUpgrade:
            self._stopped = True  # that request was dispatched with keep_alive=False
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if not isinstance(exc, httptools.HttpParserCallbackError) or cause is None:
                cause = exc
            elif not isinstance(cause, _Reject | _StopParsing):
                log.error("front: error in a parser callback", exc_info=cause)
            self._parse_failed(cause)
        else:
            if self._phase == _HEAD:
                self._head_bytes += len(data)
                if self._head_bytes - len(self._url) > self._max_head_bytes:
                    self._parse_failed(_Reject(431, "request head too large"))
        if self.reading_paused or self._queue or self._parsing is not None:
            self.update_reading()

    def _answer_strict(self, data: bytes) -> bool:
        """`data` is one common head and nothing more (proxy/front/strict.py): answer it as
        llhttp's callbacks would have (on_message_begin … on_message_complete), without them.
        False leaves `data` to llhttp, untouched."""
        assert self._strict is not None
        head = self._strict.parse(data)
        if head is None or self._close_after or self.lost or self._method_as_sent is not None:
            return False
        method, target, host, lines, flagged = head
        ids = self._ids
        id_field = ids.next_field() if ids is not None else b""
        fast = None if flagged else self._fast
        # Built before the fast answer only when it logs; else only when there is none.
        req = None
        if self._fast_logs or fast is None:
            req = self._strict_request(method, target, host, lines, flagged, id_field)
        try:
            answer = (
                None if fast is None else fast(method, target, host, True, "1.1", id_field, req)
            )
        except Exception as exc:  # as when it fails inside on_headers_complete
            log.error("front: error in a parser callback", exc_info=exc)
            self._parse_failed(exc)
            return True
        if answer is not None:
            if self.tls:
                answer = with_fields(answer, self.tls_fields(host))
            write_wire(self.transport, answer)
            self.deadline = self._server.clock + self._keepalive_timeout_s
            return True
        self._phase = _BODY
        self._last_keep_alive = True
        if req is None:
            req = self._strict_request(method, target, host, lines, flagged, id_field)
        self._dispatch(req)
        self.on_message_complete()
        return True

    def _strict_request(
        self, method: str, target: bytes, host: bytes, lines: bytes, flagged: bool, id_field: bytes
    ) -> Request:
        """The request llhttp's callbacks would have built from a strict head."""
        return Request(
            method, target, "1.1", None, True, False, None, EMPTY_BODY,
            self._client_ip, time.time(), host, flagged, self.tls, id_field, lines,
        )  # fmt: skip

    def _reparse_method(self, exc: httptools.HttpParserError, data: bytes) -> bool:
        """A request llhttp refused for its method alone, at the start of this read (the
        connection was between messages): parse it again on a new parser under a method llhttp
        knows and hand the handler the method as sent (RFC 9110 §9: any token is a method; the
        pipeline forwards it unchanged). False when that is not the case; may raise the next
        parse error. A method token split across reads, or behind another request in the same
        read, is refused as before (400): clients send neither in practice."""
        if isinstance(exc, httptools.HttpParserCallbackError) or "Invalid method" not in str(exc):
            return False
        line = data.lstrip(b"\r\n")
        token, sp, rest = line.partition(b" ")
        if not sp or not _METHOD_TOKEN.fullmatch(token) or not _llhttp_refuses(token):
            return False  # not the first request of this read that llhttp refused
        self._parser = httptools.HttpRequestParser(self)
        self._method_as_sent = token
        self._parser.feed_data(_STAND_IN + b" " + rest)
        return True

    # ------------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        if self._stopped or self._close_after:
            raise _StopParsing
        if len(self._queue) >= self._limits.max_pipelined_requests:
            raise _StopParsing  # more pipelined in one read than we queue: answer those, close
        self._phase = _HEAD
        self.deadline = self._server.clock + self._header_timeout_s
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._flags = 0
        self._host = None
        self._content_length = None
        self._given_id = None

    def on_url(self, url: bytes) -> None:
        url = self._url + url
        if len(url) > self._max_line:
            raise _Reject(414, "request target too long")
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Count and sizes are checked at the end of the head (see `_check_head_size`).
        n = len(name)
        if n in self._flag_lengths and name.lower() in self._flag_names:
            self._flags |= _FLAGGED
        if n == 4:
            if name.lower() == b"host":
                if self._flags & _HOST_SEEN:
                    raise _Reject(400, "more than one Host header")
                self._flags |= _HOST_SEEN
                self._host = value.rstrip()
        elif n == 14:
            if name.lower() == b"content-length":
                self._content_length = int(value)  # llhttp admitted only one, all digits
        elif n == 17:
            if name.lower() == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    raise _Reject(400, "unsupported Transfer-Encoding")
                self._flags |= _CHUNKED
        elif n == 6:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self._flags |= _EXPECT_CONTINUE
        if self._id_trusted and n == self._id_len and name.lower() == self._id_lname:
            self._given_id = value.strip()
        self._headers.append((name, value.rstrip()))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Reject(505, "only HTTP/1.0 and HTTP/1.1 are served")
        headers = self._headers
        if len(headers) > self._max_header_count:
            raise _Reject(431, "too many request headers")
        if self._saw_underscore:
            _check_aliases(headers)
        if self._head_bytes + self._chunk_bytes > self._max_field_bytes:
            self._check_head_size(headers)
        flags = self._flags
        content_length = self._content_length
        if flags & _CHUNKED:
            if version == "1.0":
                raise _Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            has_body = True
        else:
            if content_length is not None and content_length > self._max_body_bytes:
                raise _Reject(413, "request body too large")
            has_body = bool(content_length)
        keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            # No protocol switch here: answer as plain HTTP, then close (llhttp stops parsing).
            if has_body:
                raise _Reject(400, "protocol upgrade with a request body")
            keep_alive = False
        self._last_keep_alive = keep_alive
        method = parser.get_method()
        if self._method_as_sent is not None:
            method, self._method_as_sent = self._method_as_sent, None
        ids = self._ids
        if ids is None:
            id_field = b""
        elif self._given_id is None:
            id_field = ids.next_field()
        else:
            id_field = ids.field_for(self._given_id)
        body: Body | EmptyBody
        req: Request | None = None  # built early only for a fast answer that logs it
        if has_body:
            body = self._parsing_body = Body(
                self, content_length, bool(flags & _EXPECT_CONTINUE) and version == "1.1"
            )
            self.deadline = self._server.clock + self._body_timeout_s
            if not body.expect_continue:
                self._start_body_clock()  # else once the 100 (Continue) goes out
        else:
            body = EMPTY_BODY
            self.deadline = 0.0
            fast = self._fast
            if (
                fast is not None
                and not flags & _FLAGGED
                and self._active is None
                and not self._queue
                and not self._close_after
                and not self.lost
            ):
                # The server's fast answer (a cache hit), made before any request object (unless
                # an access log needs one): the same as a handler answering synchronously with
                # `send_bytes`.
                name = _METHODS.get(method) or ""
                if self._fast_logs and name:
                    req = Request(
                        name, self._url, version, self._headers, keep_alive, False,
                        content_length, body, self._client_ip, time.time(), self._host, False,
                        self.tls, id_field,
                    )  # fmt: skip
                data = fast(name, self._url, self._host, keep_alive, version, id_field, req)
                if data is not None:
                    self._phase = _BODY
                    if self.tls:
                        data = with_fields(data, self.tls_fields(self._host))
                    write_wire(self.transport, data)
                    if not keep_alive:
                        self._linger()
                    return
        self._phase = _BODY
        if req is None:
            req = Request(
                _METHODS.get(method) or method.decode("ascii"),
                self._url,
                version,
                self._headers,
                keep_alive,
                has_body,
                content_length,
                body,
                self._client_ip,
                time.time(),
                self._host,
                bool(flags & _FLAGGED),
                self.tls,
                id_field,
            )
        if has_body:
            self._parsing = req
        if self._active is None and not self._queue:
            self._dispatch(req)
        else:
            self._queue.append(req)

    def _check_head_size(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Exact field and header sizes, summed only when the reads this head came in could
        exceed the smaller limit (one field's): a head is never larger than the reads it
        arrived in, so a typical head costs one comparison, not one per field."""
        size = 0
        max_field = self._max_field_bytes
        for name, value in headers:
            field = len(name) + len(value)
            if field > max_field:
                raise _Reject(431, "request header field too large")
            size += field
        if size > self._max_header_bytes:
            raise _Reject(431, "request headers too large")

    def on_body(self, data: bytes) -> None:
        body = self._parsing_body
        assert body is not None
        received = body.received + len(data)
        body.received = received
        if received > self._max_body_bytes:
            raise _Reject(413, "request body too large")
        if not body.discard:
            body.feed(data)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        self.body_due = 0.0
        if not self._last_keep_alive:
            self._stopped = True
        body = self._parsing_body
        if body is not None:
            self._parsing = self._parsing_body = None
            body.complete()
            if body is self._discarding:
                self._discarding = None
                self._pump()
                return
        if self._lingering:
            return
        if self._active is None and not self._queue:
            self.deadline = self._server.clock + self._keepalive_timeout_s
        else:
            self.deadline = 0.0

    # ------------------------------------------------------------------ running handlers

    def _dispatch(self, req: Request) -> None:
        if (
            self._close_after
            and not self._queue
            and self._phase != _HEAD
            and (self._parsing is None or self._parsing is req)
        ):
            req.keep_alive = False  # the last answer on a closing connection says so
        resp = Responder(self, req)
        self._active = req
        self._responder = resp
        try:
            result = self._handler(req, resp)
        except Exception as exc:
            self._handler_failed(req, resp, exc)
            return
        if result is None:
            if resp.finished and req.body.done:  # the fast path, inlined
                self._active = None
                self._responder = None
            else:
                self._handler_done(req, resp)
            return
        try:
            # A coroutine (the pipeline's walk) becomes a task directly: asyncio.ensure_future
            # first asks what kind of awaitable it is, ~2 µs a request on a miss.
            # A future (the pass-through lane's) is awaited as it is, with no such question.
            if type(result) is CoroutineType:
                task = self.loop.create_task(result)
            elif isinstance(result, asyncio.Future):
                task = result
            else:
                task = asyncio.ensure_future(result)
        except TypeError as exc:
            self._handler_failed(req, resp, exc)
            return
        self._task = task
        task.add_done_callback(partial(self._task_done, req, resp))

    def _task_done(self, req: Request, resp: Responder, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            self._handler_failed(req, resp, ClientGone("handler cancelled"))
        else:
            exc = task.exception()
            if exc is None:
                self._handler_done(req, resp)
            else:
                self._handler_failed(req, resp, exc)
        self._pump()

    def _handler_done(self, req: Request, resp: Responder) -> None:
        if not resp.finished and not resp.dead and not self.lost:
            self._handler_failed(
                req, resp, RuntimeError("handler returned without completing its response")
            )
            return
        self._active = None
        self._responder = None
        self._task = None
        body = req.body
        if not body.done and not self._stopped:
            if body.expect_continue:
                self._linger()  # the client may be waiting for a 100 that will not come
                return
            assert isinstance(body, Body)
            body.start_discarding()
            self._discarding = body

    def _handler_failed(self, req: Request, resp: Responder, exc: BaseException) -> None:
        self._active = None
        self._responder = None
        self._task = None
        unanswered = not resp.started and not resp.dead and not self.lost
        if isinstance(exc, ClientGone):
            pass
        elif isinstance(exc, BodyTooLarge):
            if unanswered:
                self._reply_error(413, "request body too large")
                return
        else:
            self._server.report_handler_error(exc)
            if unanswered:
                self._reply_error(500, "internal error")
                return
        if resp.started and not resp.finished:
            self.abort()  # a truncated response must not look complete
        else:
            self._linger()

    def _pump(self) -> None:
        """Start queued requests in order; close or arm the keep-alive deadline when idle."""
        queue = self._queue
        while self._active is None and self._discarding is None and queue and not self.lost:
            self._dispatch(queue.popleft())
        if self._active is not None or self._discarding is not None or queue or self.lost:
            self.update_reading()
            return
        if self._pending_error is not None:
            self.transport.write(self._pending_error)
            self._pending_error = None
            self._linger()
        elif self._close_after and (self._phase != _HEAD or self._stopped):
            self._linger()
        elif self._phase == _IDLE:
            self.deadline = self.loop.time() + self._limits.keepalive_timeout_s
        self.update_reading()

    # ------------------------------------------------------------------ called by exchange

    def tls_fields(self, host: bytes | None) -> bytes:
        """Field lines every answer on a TLS connection carries (HSTS), for its Host."""
        fields = self._server.tls_fields
        return fields(host) if fields is not None else b""

    def finish_response(self, resp: Responder, close: bool) -> None:
        if close or not resp.request.keep_alive:
            self._linger()

    def send_continue(self, body: Body) -> None:
        resp = self._responder
        if (
            resp is not None
            and not resp.started
            and resp.request.body is body
            and not body.done
            and not self.lost
            and not self._lingering
        ):
            self.transport.write(CONTINUE_100)
            if body is self._parsing_body:
                self._start_body_clock()  # the client may have waited for this to send any

    async def wait_writable(self) -> None:
        if not self.lost:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.loop.create_future()
            await waiter
        if self.lost:
            raise ClientGone("client disconnected")

    def body_consumed(self) -> None:
        if self.reading_paused:
            self.update_reading()

    def update_reading(self) -> None:
        """Pause reading while too many requests wait or too much unread body is buffered."""
        if self.lost or self._lingering:
            return
        limits = self._limits
        parsing = self._parsing_body
        buffered = parsing.buffered if parsing is not None else 0
        if self.reading_paused:
            if (
                len(self._queue) < limits.max_pipelined_requests
                and buffered <= limits.body_buffer_high_bytes // 2
            ):
                self.reading_paused = False
                self.transport.resume_reading()
                if self._phase == _HEAD:
                    self.deadline = self.loop.time() + limits.header_read_timeout_s
                elif self._phase == _BODY and parsing is not None:
                    now = self.loop.time()
                    self.deadline = now + limits.body_read_timeout_s
                    if self.body_due:
                        paused = now - self._paused_at  # not the client's time to answer for
                        self._body_started += paused
                        self._body_end_due += paused
                        self.body_due += paused
        elif (
            len(self._queue) >= limits.max_pipelined_requests
            or buffered > limits.body_buffer_high_bytes
        ):
            self.reading_paused = True
            self._paused_at = self.loop.time()
            self.transport.pause_reading()
            self._server.read_pauses += 1

    def _start_body_clock(self) -> None:
        """Arm the whole-body deadline and the first rate check, at the end of the head or when
        a 100 (Continue) goes out."""
        now = self._server.clock
        self._body_started = self._paused_at = now
        self._body_end_due = due = now + self._body_total_s
        if self._body_min_rate:
            due = min(due, now + self._body_rate_grace_s)
        self.body_due = due

    def _check_body_pace(self, now: float) -> FrontTimeout | None:
        """`body_due` has passed: the body deadline missed, or None with the next check armed.
        The average rate is looked at only when it can have fallen below the minimum: once the
        grace is over, and then `received / rate` seconds after the start if nothing came."""
        body = self._parsing_body
        if body is None or self._stopped:
            self.body_due = 0.0  # nothing more will be read
            return None
        if now >= self._body_end_due:
            return FrontTimeout.BODY_TOTAL
        due = self._body_end_due
        rate = self._body_min_rate
        if rate:
            received = body.received
            if received < rate * (now - self._body_started):
                return FrontTimeout.BODY_RATE
            due = min(due, max(self._body_started + received / rate, now + self._limits.tick_s))
        self.body_due = due
        return None

    # ------------------------------------------------------------------ errors and closing

    def _parse_failed(self, exc: BaseException) -> None:
        if self._stopped:
            return  # already closing; later bytes do not matter
        self._stopped = True
        self.body_due = 0.0
        if isinstance(exc, _StopParsing):
            self._close_after = True
            if self._active is None and self._discarding is None and not self._queue:
                self._linger()
            return
        status, detail = _classify(exc)
        parsing = self._parsing
        body = self._parsing_body
        if self._phase == _BODY and parsing is not None and body is not None:
            if body.discard:
                self._linger()  # its answer is out already; nothing more to say
                return
            body.fail(BodyTooLarge(detail) if status == 413 else ClientGone(detail))
            if parsing is self._active:
                resp = self._responder
                if resp is not None and resp.started:
                    self.abort()
                    return
                if resp is not None:
                    resp.dead = True
                self._reply_error(status, detail)
                return
            if self._queue and self._queue[-1] is parsing:
                self._queue.pop()  # never dispatched: the error below answers it
        if self._active is None and not self._queue:
            self._reply_error(status, detail)
        else:
            self._pending_error = self._server.error_bytes(status, detail)
            self._close_after = True

    def _reply_error(self, status: int, detail: str) -> None:
        if not self.lost and not self._lingering:
            self.transport.write(self._server.error_bytes(status, detail))
        self._linger()

    def _linger(self) -> None:
        """Close after what is written, without losing it to a reset: send FIN, then keep
        reading (and dropping) until the client closes or the linger time runs out."""
        if self._lingering or self.lost:
            return
        self._lingering = True
        self._stopped = True
        self.body_due = 0.0
        self._queue.clear()
        gone = ClientGone("connection closing")
        if self._active is not None:
            self._active.body.fail(gone)
        if self._parsing_body is not None:
            self._parsing_body.fail(gone)
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        self.deadline = self.loop.time() + self._limits.lingering_close_timeout_s

    def abort(self) -> None:
        self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.transport.abort()

    def expire(self, now: float) -> None:
        """A deadline passed (called by the server's sweep)."""
        if self.lost:
            return
        if self.write_deadline and now >= self.write_deadline:
            self._server.timed_out(FrontTimeout.WRITE_STALL)
            self.abort()  # the client stopped reading our answer
            return
        if self._lingering:
            # Still flushing to a slow reader: allow it while the buffer shrinks.
            size = self.transport.get_write_buffer_size()
            if 0 < size < self._linger_buffer:
                self._linger_buffer = size
                self.deadline = now + self._limits.lingering_close_timeout_s
            else:
                self.abort()
            return
        if self.body_due and now >= self.body_due:
            missed = self._check_body_pace(now)
            if missed is FrontTimeout.BODY_TOTAL:
                self._cut_off(missed, "request body not received in time")
                return
            if missed is FrontTimeout.BODY_RATE:
                self._cut_off(missed, "request body arriving too slowly")
                return
        if not self.deadline or now < self.deadline:
            return  # only the body's pace was due, and it is fast enough
        self.deadline = 0.0
        if self._phase == _IDLE:
            if self._active is None and not self._queue:
                self._stopped = True
                self.transport.close()  # keep-alive timeout: silent
            return
        if self._phase == _HEAD:
            self._cut_off(FrontTimeout.HEAD, "request head not received in time")
        else:
            self._cut_off(FrontTimeout.BODY_IDLE, "request body not received in time")

    def _cut_off(self, missed: FrontTimeout, detail: str) -> None:
        """A request missed a deadline: 408 when nothing was answered yet, an abort when an
        answer is under way, the silent end of a body being discarded (see _parse_failed);
        the body the handler reads fails, so an upstream request it feeds is aborted."""
        if self._stopped:
            return  # already closing: nothing more is read, so nothing to cut off
        self._server.timed_out(missed)
        self._parse_failed(_Reject(408, detail))

    def start_drain(self) -> None:
        if self.lost or self._lingering:
            return
        self._close_after = True
        idle = self._active is None and not self._queue and self._discarding is None
        if idle and self._phase == _IDLE:
            self._stopped = True
            self.transport.close()
        elif idle and self._phase != _HEAD:
            self._linger()


class FrontServer:
    """Listens and owns the connections of one worker.

    `on_connection_count(n)` and `on_handler_error(exc)` are optional hooks for metrics; the
    counters `read_pauses`, `write_pauses`, `handler_errors` and `rejected_connections` are plain
    ints for the same purpose (and for tests), `rejected` (by status) and `timeouts` (by the
    deadline missed) plain dicts."""

    def __init__(
        self,
        handler: Handler,
        limits: FrontLimits,
        *,
        server_name: bytes = b"edgeproxy",
        error_headers: Iterable[tuple[bytes, bytes]] = (),
        flag_headers: Iterable[bytes] = (),
        fast_answer: FastAnswer | None = None,
        fast_answer_logs: bool = False,
        tls_fields: Callable[[bytes | None], bytes] | None = None,
        request_ids: RequestIds | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.server_name = server_name
        self.error_headers: list[tuple[bytes, bytes]] = list(error_headers)
        # Lowercase field names whose presence sets `Request.flagged` (the pipeline passes the
        # ones that make a request more than a plain lookup), checked by length first.
        self.flag_headers = frozenset(n.lower() for n in flag_headers)
        self.flag_lengths = frozenset(len(n) for n in self.flag_headers)
        # Asked first for body-less, unflagged requests when nothing else is pending on the
        # connection: (method, raw target, Host, keep-alive, version, id field, request) -> a
        # whole response, or None to build the request and call the handler as usual. The
        # request object is built for it only with `fast_answer_logs` (an access log records
        # its answers), else it is None.
        self.fast_answer = fast_answer
        self.fast_answer_logs = fast_answer_logs
        # The strict head (proxy/front/strict.py) is offered reads no larger than the smallest
        # size limit, so a head it matches is within every limit.
        self.strict_head = StrictHead(self.flag_headers, limits.max_header_count)
        self.strict_max_bytes = min(
            STRICT_MAX_BYTES,
            limits.max_header_field_bytes,
            limits.max_header_bytes,
            limits.max_request_line_bytes,
        )
        # Host -> field lines added to every answer on a TLS connection (HSTS, RFC 6797 §7.2
        # forbids it over plain HTTP); called per response, so it should be a dict lookup.
        self.tls_fields = tls_fields
        # An id per request, in every answer (None: off); see proxy/front/request_id.py.
        self.request_ids = request_ids
        self.on_connection_count: Callable[[int], None] | None = None
        # The node's workers' open connections (proxy/front/accept.py), when it has several:
        # this worker's count is kept in it, and a worker over its share leaves new ones.
        self.connection_shares: ConnectionShares | None = None
        self.on_handler_error: Callable[[BaseException], None] | None = None
        self.read_pauses = 0
        self.write_pauses = 0
        self.handler_errors = 0
        self.rejected_connections = 0
        self.rejected: dict[int, int] = {}  # front-generated error answers, by status
        self.timeouts: dict[FrontTimeout, int] = {}  # requests cut off, by the deadline missed
        # Loop time as of the last sweep: deadlines are armed from it (one attribute read on the
        # hot path instead of a clock call) and checked by the sweep, so both are tick-precise.
        self.clock = 0.0
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # start()
        self._connections: set[Connection] = set()
        self._server: asyncio.Server | SharedListener | None = None  # plain HTTP, usually
        self._tls_server: asyncio.Server | SharedListener | None = None
        self._draining = False
        self._all_closed: asyncio.Event | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None

    async def start(
        self,
        sock: socket.socket | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        backlog: int = 1024,
        *,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout_s: float = 10.0,
    ) -> None:
        """Listen on `sock` (already bound, e.g. by the supervisor) or on host:port. Called
        again with `ssl`, the same server also terminates TLS on a second listener: one set of
        connections, limits, deadlines and counters for both."""
        first = self.loop is None
        self.loop = loop = asyncio.get_running_loop()
        factory: Callable[[], Connection] = self._make_connection
        tls: dict[str, Any] = {}
        if ssl is not None:
            factory = self._make_tls_connection
            tls = {"ssl": ssl, "ssl_handshake_timeout": ssl_handshake_timeout_s}
        server: asyncio.Server | SharedListener
        shares = self.connection_shares
        if sock is not None and shares is not None and self.limits.accept_defer_s > 0:
            # the node's socket, shared with its other workers: balanced (proxy/front/accept.py)
            server = SharedListener(
                loop,
                sock,
                factory,
                per_turn=self.limits.accepts_per_loop_turn,
                error_pause_s=self.limits.accept_error_pause_s,
                shares=shares,
                defer_s=self.limits.accept_defer_s,
                backlog=backlog,
                ssl=ssl,
                ssl_handshake_timeout_s=ssl_handshake_timeout_s if ssl is not None else None,
            )
        elif sock is not None:  # uvloop's own accept: cheaper per connection, not balanced
            server = await loop.create_server(factory, sock=sock, backlog=backlog, **tls)
        else:
            server = await loop.create_server(
                factory,
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=backlog,
                **tls,
            )
        if ssl is not None:
            self._tls_server = server
        else:
            self._server = server
        if first:
            self.clock = loop.time()
            self._sweep_handle = loop.call_later(self.limits.tick_s, self._sweep)

    @property
    def port(self) -> int:
        server = self._server or self._tls_server
        if server is None:
            raise RuntimeError("not started")
        return int(server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (0: none)."""
        if self._tls_server is None:
            return 0
        return int(self._tls_server.sockets[0].getsockname()[1])

    @property
    def accepts_deferred(self) -> int:
        """Times a new connection was left to the node's other workers (proxy/front/accept.py)."""
        return sum(
            s.deferrals for s in (self._server, self._tls_server) if isinstance(s, SharedListener)
        )

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def stop_accepting(self) -> None:
        """Close the listening sockets (this process's use of them): no new connections."""
        for listener in (self._server, self._tls_server):
            if listener is not None:
                listener.close()

    async def drain_and_close(self, timeout_s: float) -> None:
        """Stop accepting; idle connections close now, busy ones after their answers; whatever
        is left after `timeout_s` is aborted (and its handler cancelled)."""
        self._draining = True
        listeners = [s for s in (self._server, self._tls_server) if s is not None]
        for listener in listeners:
            listener.close()
        self._all_closed = asyncio.Event()
        for conn in list(self._connections):
            conn.start_drain()
        if self._connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
            except TimeoutError:
                for conn in list(self._connections):
                    conn.abort()
                for _ in range(3):  # connection_lost runs on a later loop iteration
                    await asyncio.sleep(0)
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for listener in listeners:
            await listener.wait_closed()

    # ---------------------------------------------------------------- for Connection

    def _make_connection(self) -> Connection:
        return Connection(self)

    def _make_tls_connection(self) -> Connection:
        return Connection(self, tls=True)

    def refuses_connections(self) -> bool:
        limit = self.limits.max_connections
        return self._draining or (limit > 0 and len(self._connections) >= limit)

    def register(self, conn: Connection) -> None:
        self._connections.add(conn)
        if self.connection_shares is not None:
            self.connection_shares.set(len(self._connections))
        if self.on_connection_count is not None:
            self.on_connection_count(len(self._connections))

    def unregister(self, conn: Connection) -> None:
        self._connections.discard(conn)
        if self.connection_shares is not None:
            self.connection_shares.set(len(self._connections))
        if self.on_connection_count is not None:
            self.on_connection_count(len(self._connections))
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def report_handler_error(self, exc: BaseException) -> None:
        self.handler_errors += 1
        log.error("front: request handler failed", exc_info=exc)
        if self.on_handler_error is not None:
            self.on_handler_error(exc)

    def error_bytes(self, status: int, detail: str) -> bytes:
        """The front's own answer to a request it refused (malformed, too large, too slow);
        counted by status, since such requests never reach the pipeline or its metrics."""
        self.rejected[status] = self.rejected.get(status, 0) + 1
        ids = self.request_ids
        return error_response(
            status,
            detail,
            server_name=self.server_name,
            extra_headers=self.error_headers,
            fields=ids.next_field() if ids is not None else b"",
        )

    def timed_out(self, missed: FrontTimeout) -> None:
        self.timeouts[missed] = self.timeouts.get(missed, 0) + 1

    def _sweep(self) -> None:
        self.clock = now = self.loop.time()
        expired = [
            conn
            for conn in self._connections
            if (
                not conn.reading_paused
                and (
                    (conn.deadline and now >= conn.deadline)
                    or (conn.body_due and now >= conn.body_due)
                )
            )
            or (conn.write_deadline and now >= conn.write_deadline)
        ]
        for conn in expired:
            conn.expire(now)
        self._sweep_handle = self.loop.call_later(self.limits.tick_s, self._sweep)


__all__ = ["Connection", "FrontLimits", "FrontServer"]
