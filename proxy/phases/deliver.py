"""deliver: per-delivery headers only (Age, Cache-Status, framing), conditional and Range
answers, HEAD. What is delivered is decided here; what is stored was decided in
upstream_response.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from proxy.blocklist.digest import DecodeLimits, IdentityHasher
from proxy.blocklist.enforce import Enforcer
from proxy.blocklist.model import Entry as BlockEntry
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, Next, RequestCtx
from proxy.front.api import FrontRequest, Responder
from proxy.front.date import current_date_bytes
from proxy.front.wire import WRITEV_MIN_BYTES, Wire, wire
from proxy.metrics import WorkerStats
from proxy.origin import Interim, OriginError, OriginFailure, UpstreamResponse
from proxy.phases.spool import BodyBudget, DiskSpool, spool
from proxy.phases.upstream_response import NO_BODY_STATUSES, BodyBlocked, outcome_codings
from proxy.rfc.cache_status import Members, cache_status_bytes
from proxy.rfc.conditional import evaluate_preconditions
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.ranges import (
    coalesce_ranges,
    content_range,
    if_range_allows,
    multipart_byteranges,
    parse_range,
)
from proxy.rfc.storable import NoStoreReason

REASONS = {
    200: b"OK",
    206: b"Partial Content",
    304: b"Not Modified",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    421: b"Misdirected Request",
    431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

# Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
_304_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)


def interim_relay(responder: Responder) -> Interim:
    """The listener that relays an origin's interim (1xx) heads to the client that caused the
    request (RFC 9110 §15.2: a proxy forwards 1xx), connection-specific fields stripped; the
    front decides whether the client may get one (`Responder.interim`). Never stored: the
    origin clients hand only the final head on as the answer."""

    def relay(status: int, reason: bytes, fields: list[tuple[bytes, bytes]]) -> None:
        responder.interim(status, reason, strip_hop_by_hop(fields))

    return relay


def connection_field(keep_alive: bool, http_version: str) -> bytes:
    """The Connection field line of a pre-serialised answer (RFC 9112 §9.3): `close` when
    the connection ends after it, `keep-alive` for an HTTP/1.0 client that asked, else none."""
    if not keep_alive:
        return b"Connection: close\r\n"
    if http_version == "1.0":
        return b"Connection: keep-alive\r\n"
    return b""


def connection_part(ctx: RequestCtx) -> tuple[bytes, bool]:
    """The last field lines of a pre-serialised answer (the request id the front assigned,
    then Connection), and whether to close after it."""
    req = ctx.request
    return req.id_field + connection_field(req.keep_alive, req.http_version), not req.keep_alive


def generated(
    ctx: RequestCtx,
    status: int,
    body: bytes,
    *,
    cache_status: bytes,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    close: bool = False,
    via: bytes = b"",
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    """An answer the edge writes itself (errors, 421, 451, TRACE): never stored anywhere."""
    conn, must_close = connection_part(ctx)
    if close:
        conn, must_close = ctx.request.id_field + b"Connection: close\r\n", True
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown")),
        b"Date: " + current_date_bytes() + b"\r\n",
        b"Content-Type: " + content_type + b"\r\n",
        b"Cache-Control: no-store\r\n",
    ]
    for name, value in extra:
        parts.append(name + b": " + value + b"\r\n")
    if via:
        parts.append(b"Via: " + via + b"\r\n")
    parts.append(b"Cache-Status: " + cache_status + b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(conn)
    parts.append(b"\r\n")
    if ctx.method != "HEAD":
        parts.append(body)
        ctx.bytes_sent = len(body)
    ctx.status = status
    ctx.cache_status = cache_status
    ctx.content_type = content_type
    ctx.responder.send_bytes(b"".join(parts), close=must_close)


def refused(ctx: RequestCtx, status: int, why: str, via_name: str) -> None:
    """admit's refusal (400 closes the connection: the request could not be trusted)."""
    text = f"{status} {REASONS.get(status, b'').decode()}: {why}\n".encode()
    detail = why.encode("ascii", "replace").decode()
    cache_status = cache_status_bytes(via_name, hit=False, detail=detail)
    generated(ctx, status, text, cache_status=cache_status, close=status == 400)


def only_if_cached(ctx: RequestCtx, via_name: str) -> Next:
    """RFC 9111 §5.2.1.7: nothing usable is stored and the client forbids a fetch."""
    status = cache_status_bytes(via_name, hit=False, fwd="miss", detail="only-if-cached")
    generated(
        ctx, 504, b"504 Gateway Timeout: not in cache (only-if-cached)\n", cache_status=status
    )
    return Next.DONE


def origin_error(ctx: RequestCtx, e: OriginError, via_name: str, via: bytes) -> None:
    """502 or 504 for an origin that failed before a byte of its answer went out."""
    text = f"{e.status} {REASONS[e.status].decode()}: origin {e.kind}\n".encode()
    detail = f"origin-{e.kind.value}"
    cache_status = cache_status_bytes(via_name, hit=False, fwd="miss", detail=detail)
    generated(ctx, e.status, text, cache_status=cache_status, via=via)


def over_budget(ctx: RequestCtx, via_name: str, retry_after_s: int) -> None:
    """The worker's in-flight body budget is spent (proxy/phases/spool.py): the origin's
    body could not be held back to be judged, so none of it goes out."""
    status = cache_status_bytes(via_name, hit=False, fwd="miss", detail="over-budget")
    text = b"503 Service Unavailable: too many response bodies in flight, retry later\n"
    retry = [(b"Retry-After", str(retry_after_s).encode())]
    generated(ctx, 503, text, cache_status=status, extra=retry)


# Never reflected by a TRACE answer (RFC 9110 §9.3.8: credentials are not echoed back).
_UNREFLECTED = frozenset({b"cookie", b"authorization", b"proxy-authorization"})
ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"


def max_forwards_reached(ctx: RequestCtx, via: bytes, cache_name: bytes) -> None:
    """RFC 9110 §7.6.2: TRACE or OPTIONS with Max-Forwards 0 is answered by this hop. TRACE
    reflects the request as received (less credentials, as message/http); OPTIONS gives
    the methods this edge forwards."""
    req = ctx.request
    status = cache_name + b"; detail=max-forwards"
    if ctx.method == "OPTIONS":
        generated(ctx, 200, b"", cache_status=status, extra=[(b"Allow", ALLOW)], via=via)
        return
    lines = [
        b"%s %s HTTP/%s\r\n" % (req.method.encode(), req.raw_target, req.http_version.encode())
    ]
    for name, value in req.headers:
        if name.lower() not in _UNREFLECTED:
            lines.append(name + b": " + value + b"\r\n")
    generated(ctx, 200, b"".join(lines), cache_status=status, via=via, content_type=b"message/http")


def hit_bytes(
    method: str,
    keep_alive: bool,
    http_version: str,
    entry: Entry,
    now: float,
    hit_status: bytes,
    fields: bytes = b"",
) -> Wire:
    """A fresh hit on a plain request (no conditionals, no Range): the stored head, the
    per-delivery fields (Age, Cache-Status with the tier's detail, `fields`: the request id
    line, Connection) and the body, as one write (a large body apart from its head:
    `wire.wire`)."""
    age = entry.corrected_initial_age + now - entry.response_time
    upstream = entry.upstream_cache_status
    parts = (
        entry.head, age, upstream + b", " if upstream else b"", hit_status, entry.lifetime - age,
        entry.tier_detail, fields, connection_field(keep_alive, http_version),
    )  # fmt: skip
    if method == "HEAD":
        return _HIT_HEAD % parts
    body = entry.body
    if len(body) >= WRITEV_MIN_BYTES:
        return _HIT_HEAD % parts, body
    # One format, one buffer: joining head, fields and body in steps made a copy of each
    # (and a malloc: the answer is past pymalloc's 512 bytes), measured with callgrind.
    return _HIT_WHOLE % (*parts, body)


# A fresh hit's answer (`hit_bytes`): the stored head, then Age and Cache-Status (the members
# of caches nearer the origin, ours with `hit` and the remaining freshness), the request id
# line, Connection; `_HIT_WHOLE` with the body behind.
_HIT_HEAD = b"%sAge: %d\r\nCache-Status: %s%s; ttl=%d%s\r\n%s%s\r\n"
_HIT_WHOLE = _HIT_HEAD + b"%s"


def hit_cache_status(hit_status: bytes, entry: Entry, now: float) -> bytes:
    """Cache-Status of an answer from a stored entry: the members of caches nearer the origin,
    then ours with `hit` and the remaining freshness (negative when stale, RFC 9211 §2.5)."""
    return _hit_status(hit_status, entry, entry.age(now))


def _hit_status(hit_status: bytes, entry: Entry, age: float) -> bytes:
    status = hit_status + b"; ttl=%d" % int(entry.lifetime - age)
    if entry.upstream_cache_status:
        status = entry.upstream_cache_status + b", " + status
    return status


def hit(
    request: FrontRequest, responder: Responder, entry: Entry, now: float, hit_status: bytes
) -> int:
    """`hit_bytes` through a responder. Returns the body bytes sent."""
    data = hit_bytes(
        request.method,
        request.keep_alive,
        request.http_version,
        entry,
        now,
        hit_status,
        request.id_field,
    )
    responder.send_bytes(data, close=not request.keep_alive)
    return 0 if request.method == "HEAD" else len(entry.body)


def from_entry(
    ctx: RequestCtx, entry: Entry, now: float, cache_status: bytes, head: bytes = b""
) -> None:
    """Answer from a stored entry: 200, 304, 412, 206 or 416, HEAD without a body."""
    age = int(entry.age(now))
    special = ctx.fields.special
    status = 200 if entry.status == 200 else entry.status
    if special is not None:
        cond = (
            evaluate_preconditions(
                ctx.method,
                ctx.fields.first(b"if-match"),
                ctx.fields.first(b"if-none-match"),
                ctx.fields.first(b"if-modified-since"),
                ctx.fields.first(b"if-unmodified-since"),
                entry.etag,
                entry.last_modified,
                entry.date,
            )
            if entry.status == 200
            else None
        )
        if cond is not None:
            return _not_modified(ctx, entry, cond, age, cache_status)
        rng = ctx.fields.first(b"range")
        if rng is not None and entry.status == 200 and ctx.method in ("GET", "HEAD"):
            if if_range_allows(ctx.fields.first(b"if-range"), entry.etag, entry.last_modified):
                ranges = parse_range(rng, len(entry.body))
                if ranges == "unsatisfiable":
                    return _unsatisfiable(ctx, entry, age, cache_status)
                if ranges:
                    return _partial(ctx, entry, coalesce_ranges(ranges), age, cache_status)
    conn, close = connection_part(ctx)
    tail = b"Age: %d\r\nCache-Status: %s\r\n%s\r\n" % (age, cache_status, conn)
    head = head or entry.head  # `head`: this delivery's own (upstream_response.relay_head)
    if ctx.method == "HEAD":
        ctx.responder.send_bytes(head + tail, close=close)
    else:
        ctx.responder.send_bytes(wire(head + tail, entry.body), close=close)
        ctx.bytes_sent = len(entry.body)
    ctx.status = status
    ctx.cache_status = cache_status


def _not_modified(
    ctx: RequestCtx, entry: Entry, status: int, age: int, cache_status: bytes
) -> None:
    conn, close = connection_part(ctx)
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])]
    if status == 304:
        for name, value in entry.headers:
            if name.lower() in _304_FIELDS or name.lower() == b"via":
                parts.append(name + b": " + value + b"\r\n")
    else:
        parts.append(b"Date: " + current_date_bytes() + b"\r\nContent-Length: 0\r\n")
    parts.append(b"Age: %d\r\nCache-Status: %s\r\n%s\r\n" % (age, cache_status, conn))
    ctx.status = status
    ctx.cache_status = cache_status
    ctx.responder.send_bytes(b"".join(parts), close=close)


# Fields of the whole representation a 206 does not repeat as they are: it states its own
# range, and a multipart one its own type (each part carries the representation's).
_NOT_ON_206 = frozenset({b"content-range", b"content-length"})
_NOT_ON_MULTIPART = _NOT_ON_206 | {b"content-type"}


def _partial(
    ctx: RequestCtx, entry: Entry, ranges: list[tuple[int, int]], age: int, cache_status: bytes
) -> None:
    """206 from a stored whole response (RFC 9110 §15.3.7): one range as itself, several as
    `multipart/byteranges` (§14.6). Only a stored body is cut: it was judged whole against
    the blocklist and is checked at this reuse (lookup), so no part escapes a listed whole."""
    body = entry.body
    length = len(body)
    conn, close = connection_part(ctx)
    parts = [b"HTTP/1.1 206 Partial Content\r\n"]
    if len(ranges) == 1:
        start, end = ranges[0]
        content = body[start : end + 1]
        for name, value in entry.headers:
            if name.lower() not in _NOT_ON_206:
                parts.append(name + b": " + value + b"\r\n")
        parts.append(b"Content-Range: " + content_range(start, end, length).encode() + b"\r\n")
    else:
        boundary = _boundary(body)
        content = multipart_byteranges(body, ranges, boundary, entry.header(b"content-type"))
        for name, value in entry.headers:
            if name.lower() not in _NOT_ON_MULTIPART:
                parts.append(name + b": " + value + b"\r\n")
        parts.append(b"Content-Type: multipart/byteranges; boundary=" + boundary + b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(content))
    parts.append(b"Age: %d\r\nCache-Status: %s\r\n%s\r\n" % (age, cache_status, conn))
    if ctx.method != "HEAD":
        parts.append(content)
        ctx.bytes_sent = len(content)
    ctx.status = 206
    ctx.cache_status = cache_status
    ctx.responder.send_bytes(b"".join(parts), close=close)


def _boundary(body: bytes) -> bytes:
    """A multipart boundary that does not occur in `body` (RFC 2046 §5.1.1)."""
    while True:
        boundary = secrets.token_hex(16).encode("ascii")
        if boundary not in body:
            return boundary


def _unsatisfiable(ctx: RequestCtx, entry: Entry, age: int, cache_status: bytes) -> None:
    conn, close = connection_part(ctx)
    parts = [
        b"HTTP/1.1 416 Range Not Satisfiable\r\n",
        b"Date: " + current_date_bytes() + b"\r\n",
        b"Content-Range: bytes */%d\r\n" % len(entry.body),
        b"Content-Length: 0\r\n",
        b"Age: %d\r\nCache-Status: %s\r\n%s\r\n" % (age, cache_status, conn),
    ]
    ctx.status = 416
    ctx.cache_status = cache_status
    ctx.responder.send_bytes(b"".join(parts), close=close)


class StreamDelivery:
    """deliver for a response that is not stored: streamed from the origin, its body judged
    whole when it fits the spool, else hashed while it streams (a method of the Fetcher)."""

    # Provided by Fetcher (proxy/phases/fetch.py), which composes the phases.
    cfg: Config
    cache: TieredCache
    stats: WorkerStats
    via: bytes
    members: Members
    decode_limits: DecodeLimits
    budget: BodyBudget
    enforcer: Enforcer
    judge_coded: Callable[
        [list[bytes], bytes], tuple[bytes, BlockEntry | None]
    ]  # upstream_response's, as are _listed and _refused

    async def stream(self, ctx: RequestCtx) -> Next:
        """The walk's STREAM step: `ctx.outcome`'s open response to this client (`ctx.fwd`
        for Cache-Status); the walk's own step, so no coroutine sits between it and the
        origin's body."""
        outcome = ctx.outcome
        assert outcome is not None
        up = outcome.upstream
        assert up is not None
        try:
            await self._stream(ctx, ctx.responder, up, outcome, ctx.fwd)
        finally:
            outcome.drop()
        return Next.DONE

    async def _stream(
        self,
        ctx: RequestCtx,
        responder: Responder,
        up: UpstreamResponse,
        outcome: FetchOutcome,
        fwd: bytes,
    ) -> None:
        status = up.status
        no_body = ctx.method == "HEAD" or status in NO_BODY_STATUSES or status < 200
        body, complete = b"", no_body
        if not no_body:
            # Spooled to be judged whole; what upstream_response read is its prefix.
            before = outcome.spooled
            prefix = before.body if before is not None else b""
            limit = self.cfg.blocklist.hash_spool_max_bytes
            outcome.spooled = spooled = await spool(up, limit, self.budget, prefix)
            spooled.take_over(before)
            body, complete = spooled.body, spooled.complete
        if not complete and self.cfg.blocklist.oversize_policy == "spool-disk":
            await self._stream_from_disk(ctx, responder, up, outcome, fwd, body)
            return
        hasher = None if no_body else self._judge_before_delivery(status, outcome, body, complete)
        if complete and not no_body:
            # The whole (spooled) body is known: head and body in one write.
            self._start(ctx, responder, up, outcome, fwd, len(body), first=body)
            ctx.bytes_sent = len(body)
            responder.end()
            return
        length = None if complete else up.content_length
        self._start(ctx, responder, up, outcome, fwd, length, no_body=no_body)
        if hasher is not None:  # a body, not whole: relayed as it arrives
            ctx.bytes_sent = await self._relay(ctx, responder, up, body, hasher)
        responder.end()

    async def _stream_from_disk(
        self,
        ctx: RequestCtx,
        responder: Responder,
        up: UpstreamResponse,
        outcome: FetchOutcome,
        fwd: bytes,
        spooled: bytes,
    ) -> None:
        """Too large for the memory spool: held on disk until judged whole, then sent."""
        cfg = self.cfg.blocklist
        hasher = IdentityHasher(outcome_codings(up.status, outcome), self.decode_limits)
        disk = DiskSpool(cfg.disk_spool_dir)
        try:
            await disk.fill(up, spooled, hasher, cfg.disk_spool_max_bytes)
            if outcome.spooled is not None:
                outcome.spooled.release()  # the memory part is on disk now
            result = hasher.result()
            _refuse_listed(outcome, self._listed(result))
            if self._refused(result):
                raise OriginError(OriginFailure.PROTOCOL, "body not checkable")
            self._start(ctx, responder, up, outcome, fwd, disk.size)
            ctx.bytes_sent = await disk.send(responder)
            responder.end()
        finally:
            disk.close()

    def _judge_before_delivery(
        self, status: int, outcome: FetchOutcome, body: bytes, complete: bool
    ) -> IdentityHasher | None:
        """A body that fits the spool is judged whole before its first byte goes out (listed:
        BodyBlocked). A larger one is refused, or (oversize_policy "stream") hashed while it
        streams: the returned hasher has seen what was spooled."""
        codings = outcome_codings(status, outcome)
        if complete:
            if not codings and not self.enforcer.digests_listed:
                # The body is its identity representation and the snapshot lists no digest:
                # no digest of it could be listed, and nothing keeps one of a body not stored
                # (SHA-256 costs a pass-through ~1.2 µs a KiB, issue 18).
                return None
            _digest, listed = self.judge_coded(codings, body)
            _refuse_listed(outcome, listed)
            return None
        if self.cfg.blocklist.oversize_policy == "refuse":
            raise OriginError(
                OriginFailure.PROTOCOL, "body too large to check against the blocklist"
            )
        hasher = IdentityHasher(codings, self.decode_limits)
        hasher.update(body)
        return hasher

    def _start(
        self,
        ctx: RequestCtx,
        responder: Responder,
        up: UpstreamResponse,
        outcome: FetchOutcome,
        fwd: bytes,
        length: int | None,
        *,
        first: bytes = b"",
        no_body: bool = False,
    ) -> None:
        """The relayed head (with `first`, body bytes in the same write), noted for the log."""
        fields, member = self._stream_head(outcome, up.status, fwd)
        ctx.status = up.status
        ctx.cache_status = member
        reason = up.reason or b"OK"
        responder.start(
            up.status,
            reason,
            [],
            content_length=length,
            first=first,
            no_body=no_body,
            fields=fields,
        )

    def _stream_head(self, outcome: FetchOutcome, status: int, fwd: bytes) -> tuple[bytes, bytes]:
        """The relayed field lines, serialised, with our Via and Cache-Status members appended
        (RFC 9110 §7.6.3, RFC 9211 §2), and our Cache-Status member alone (for the log)."""
        parts: list[bytes] = []
        via = self.via
        upstream_status = b""
        for name, value in outcome.headers:
            n = name.lower()
            if n == b"content-length":
                continue
            if n == b"via":
                via = value + b", " + self.via
                continue
            if n == b"cache-status":
                upstream_status = value + b", "
                continue
            parts += (name, b": ", value, b"\r\n")
        reason = outcome.not_stored
        member = self.members.member(
            fwd=fwd.decode(),
            fwd_status=status,
            detail=None if reason is None or reason is NoStoreReason.BYPASS else reason._value_,
        )
        parts += (b"Via: ", via, b"\r\nCache-Status: ", upstream_status, member, b"\r\n")
        return b"".join(parts), member

    async def _relay(
        self,
        ctx: RequestCtx,
        responder: Responder,
        up: UpstreamResponse,
        spooled: bytes,
        hasher: IdentityHasher,
    ) -> int:
        """A body too large to hold back: what was spooled, then the rest as it arrives,
        hashed on the way; returns the bytes sent. A listed digest found at the end was
        delivered this once, but is never stored, so the next request does not get it."""
        if spooled:
            await responder.write(spooled)
        sent = len(spooled)
        async for chunk in up.chunks():
            hasher.update(chunk)
            if hasher.failure is not None and self._refused(hasher.result()):
                # Undecodable or a bomb: stop here (the client sees a cut body).
                raise OriginError(OriginFailure.PROTOCOL, "body not checkable")
            await responder.write(chunk)
            sent += len(chunk)
        if self._listed(hasher.result()) is not None:
            ctx.no_store = NoStoreReason.BLOCKED
        return sent


def _refuse_listed(outcome: FetchOutcome, listed: BlockEntry | None) -> None:
    """A body judged listed before its first byte went out: the walk answers 451."""
    if listed is not None:
        outcome.blocked = listed
        raise BodyBlocked(listed)
