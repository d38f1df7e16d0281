"""fetch, upstream_response and store.

fetch builds the one upstream request from the canonical target (never the raw bytes):
hop-by-hop fields and URL/method override fields dropped, `Via` added, `X-Forwarded-For`
appended. upstream_response decides what is stored, with a `NoStoreReason` for every "no"; the
body of anything that would be delivered is hashed and checked against the blocklist before its
first byte goes out (up to `blocklist.hash_spool_max_bytes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from multidict import CIMultiDict

from proxy.blocklist.digest import DecodeLimits, DigestResult, IdentityHasher, identity_digest
from proxy.blocklist.keys import match_keys
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.entry import PER_DELIVERY, Entry
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import RequestCtx, RequestFields
from proxy.front.api import Responder
from proxy.metrics import WorkerStats
from proxy.origin import OriginError, OriginFailure, OriginPool, UpstreamResponse
from proxy.rfc.cache_status import cache_status_bytes
from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl
from proxy.rfc.conditional import normalise_etag
from proxy.rfc.dates import format_http_date, parse_http_date
from proxy.rfc.freshness import freshness_lifetime, initial_age, parse_age
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.invalidation import invalidated_targets
from proxy.rfc.merge import merge_304, select_for_304
from proxy.rfc.storable import NoStoreReason, storable
from proxy.rfc.target import BadTarget, canonical_target
from proxy.rfc.targeted import select_cache_control
from proxy.rfc.vary import vary_fields, vary_key

# Never forwarded upstream: they would let a client change what the origin serves apart from
# what the edge checked (the canonical-target rule), or they are ours to set.
DROP_UPSTREAM = frozenset(
    {
        b"host",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-for",
        b"forwarded",  # RFC 7239: replaced by ours, a client's for=/host=/proto= are unchecked
        b"max-forwards",  # RFC 9110 §7.6.2: decremented below, never passed on as received
        b"via",
        b"content-length",
        b"expect",
    }
)
CONDITIONAL = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)
TARGETED = ("edgeproxy-cache-control", "cdn-cache-control")
NO_BODY_STATUSES = frozenset({204, 304})
RESPONSE_DRIVEN = frozenset(NoStoreReason) - {
    NoStoreReason.REQUEST_NO_STORE,
    NoStoreReason.UPSTREAM_ERROR,
    NoStoreReason.BLOCKED,
    NoStoreReason.BYPASS,
    NoStoreReason.METHOD,
    NoStoreReason.AUTHORIZATION,
}


@dataclass(slots=True)
class FetchOutcome:
    entry: Entry | None = None  # what to deliver from (stored or not)
    stored: bool = False
    revalidated: bool = False
    fwd_status: int = 0
    error: OriginError | None = None
    blocked: BlockEntry | None = None
    not_stored: NoStoreReason | None = None
    upstream: UpstreamResponse | None = None  # open response to stream (not stored)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # hop-by-hop stripped
    prefix: bytes = b""  # body bytes already read from `upstream`
    complete: bool = False  # `prefix` is the whole body
    stale_candidate: Entry | None = None
    method: str = "GET"
    shared: bool = False  # `entry` came from the shared tier, not the origin
    _claimed: bool = False

    def claim(self) -> bool:
        """Exactly one request may stream an open upstream response."""
        if self._claimed:
            return False
        self._claimed = True
        return True


@dataclass(slots=True)
class _Parsed:
    cc: CacheControl
    date: float | None
    expires: str | None
    last_modified: float | None
    last_modified_raw: str | None
    etag: str | None
    age: int | None
    vary: list[str]
    set_cookie: bool
    content_range: bool
    cache_status: bytes
    location: str | None
    content_location: str | None


def _parse(headers: list[tuple[bytes, bytes]]) -> _Parsed:
    cc_values: list[str] = []
    targeted: dict[str, list[str]] = {}
    vary: list[str] = []
    ages: list[str] = []
    expires_values: list[str] = []
    date = last_modified_raw = etag = location = content_location = None
    set_cookie = content_range = False
    cache_status: list[bytes] = []
    for name, value in headers:
        n = name.lower()
        if n == b"cache-control":
            cc_values.append(value.decode("latin-1"))
        elif n == b"date":
            date = value.decode("latin-1")
        elif n == b"expires":
            expires_values.append(value.decode("latin-1"))
        elif n == b"last-modified":
            last_modified_raw = value.decode("latin-1")
        elif n == b"etag":
            etag = value.decode("latin-1")
        elif n == b"age":
            ages.append(value.decode("latin-1"))
        elif n == b"vary":
            vary.append(value.decode("latin-1"))
        elif n == b"set-cookie":
            set_cookie = True
        elif n == b"content-range":
            content_range = True
        elif n == b"cache-status":
            cache_status.append(value)
        elif n == b"location":
            location = value.decode("latin-1")
        elif n == b"content-location":
            content_location = value.decode("latin-1")
        elif n.decode("latin-1") in TARGETED:
            targeted.setdefault(n.decode("latin-1"), []).append(value.decode("latin-1"))
    cc, _source = select_cache_control(cc_values, [(t, targeted.get(t, [])) for t in TARGETED])
    return _Parsed(
        cc=cc,
        date=parse_http_date(date) if date else None,
        expires=", ".join(expires_values) if expires_values else None,
        last_modified=parse_http_date(last_modified_raw) if last_modified_raw else None,
        last_modified_raw=last_modified_raw,
        etag=normalise_etag(etag),
        age=parse_age(ages),
        vary=vary,
        set_cookie=set_cookie,
        content_range=content_range,
        cache_status=b", ".join(cache_status),
        location=location,
        content_location=content_location,
    )


class Fetcher:
    def __init__(
        self,
        cfg: Config,
        origin: OriginPool,
        cache: TieredCache,
        stats: WorkerStats,
        via: bytes,
        blocklist: Callable[[], Snapshot] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.origin = origin
        self.cache = cache
        self.stats = stats
        self.via = via
        self.via_str = via.decode()
        self.blocklist: Callable[[], Snapshot] = blocklist or (lambda: Snapshot.compile([], 0, 0.0))
        self.decode_limits = DecodeLimits.from_config(cfg.blocklist)
        self.clock = clock

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def variant(fields: tuple[str, ...], req: RequestFields) -> tuple[str, ...]:
        return vary_key(fields, req.values)

    # -- fetch --------------------------------------------------------------------------------

    def upstream_headers(self, ctx: RequestCtx, *, for_cache: bool) -> CIMultiDict[str]:
        site = ctx.site
        target = ctx.target
        assert site is not None and target is not None
        out: CIMultiDict[str] = CIMultiDict()
        xff = []
        via = []
        for name, value in strip_hop_by_hop(ctx.request.headers):
            n = name.lower()
            if n in DROP_UPSTREAM:
                if n == b"x-forwarded-for":
                    xff.append(value.decode("latin-1"))
                elif n == b"via":
                    via.append(value.decode("latin-1"))
                continue
            if for_cache and n in CONDITIONAL:
                continue
            out.add(name.decode("latin-1"), value.decode("latin-1"))
        out["Host"] = target.authority if site.forward_host else site.origin_host
        via.append(self.via_str)
        out["Via"] = ", ".join(via)
        xff.append(ctx.request.client_ip)
        out["X-Forwarded-For"] = ", ".join(xff)
        out["X-Forwarded-Proto"] = target.scheme
        out["X-Forwarded-Host"] = target.authority
        out["Forwarded"] = forwarded_element(ctx.request.client_ip, target.authority, target.scheme)
        max_forwards = ctx.fields.max_forwards()
        if max_forwards is not None:
            out["Max-Forwards"] = str(max(0, max_forwards - 1))
        if ctx.request.has_body and ctx.request.content_length is not None and not for_cache:
            out["Content-Length"] = str(ctx.request.content_length)
        return out

    async def _send(
        self, ctx: RequestCtx, method: str, headers: CIMultiDict[str], body: bool
    ) -> UpstreamResponse:
        site = ctx.site
        target = ctx.target
        assert site is not None and target is not None
        started = time.monotonic()
        stream = _body(ctx) if body else None
        up = await self.origin.request(site.origin, method, target.raw_path_query, headers, stream)
        elapsed = time.monotonic() - started
        ctx.origin_s += elapsed
        stats = self.stats
        stats.observe_origin(site.index, elapsed)
        stats.origin_responses[site.index][min(up.status // 100, 5) - 1] += 1
        return up

    async def fetch_for_cache(
        self, ctx: RequestCtx, entry: Entry | None, *, background: bool = False
    ) -> FetchOutcome:
        """One GET for the cache (HEAD misses fill the cache too). With a stored entry, a
        conditional request with its validators (RFC 9111 §4.3.1)."""
        headers = self.upstream_headers(ctx, for_cache=True)
        if entry is not None:
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            lm = entry.header(b"last-modified")
            if lm:
                headers["If-Modified-Since"] = lm.decode("latin-1")
        request_time = self.clock()
        try:
            up = await self._send(ctx, "GET", headers, body=False)
        except OriginError as e:
            return FetchOutcome(error=e, stale_candidate=entry)
        response_time = self.clock()
        try:
            return await self.upstream_response(ctx, up, entry, request_time, response_time)
        except OriginError as e:
            up.close()
            return FetchOutcome(error=e, stale_candidate=entry)
        except BaseException:
            up.close()
            raise

    async def fetch_pass(self, ctx: RequestCtx) -> FetchOutcome:
        headers = self.upstream_headers(ctx, for_cache=False)
        try:
            up = await self._send(ctx, ctx.method, headers, body=ctx.request.has_body)
        except OriginError as e:
            return FetchOutcome(error=e)
        hdrs = strip_hop_by_hop(up.headers)
        return FetchOutcome(
            upstream=up,
            headers=hdrs,
            fwd_status=up.status,
            not_stored=NoStoreReason.BYPASS,
            method=ctx.method,
        )

    # -- upstream_response + store ------------------------------------------------------------

    async def upstream_response(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        entry: Entry | None,
        request_time: float,
        response_time: float,
    ) -> FetchOutcome:
        target = ctx.target
        assert target is not None
        hdrs = strip_hop_by_hop(up.headers)
        parsed = _parse(hdrs)
        primary = (target.authority, target.raw_path_query)
        if up.status == 304 and entry is not None:
            up.release()
            if select_for_304(
                entry.etag,
                (entry.header(b"last-modified") or b"").decode("latin-1") or None,
                parsed.etag,
                parsed.last_modified_raw,
            ):
                return self._merge_304(ctx, entry, hdrs, request_time, response_time)
            # A 304 that does not identify the stored response: fetch it whole, once.
            self.cache.remove(entry)
            return await self.fetch_for_cache(ctx, None)
        cfg = self.cfg.cache
        req_cc = ctx.req_cc or EMPTY_CC
        if up.status >= 500 and entry is not None:
            # RFC 5861 §4: the pipeline may stand a stale entry in for this error.
            return FetchOutcome(
                upstream=up,
                headers=hdrs,
                fwd_status=up.status,
                stale_candidate=entry,
                error=OriginError(OriginFailure.PROTOCOL, f"origin answered {up.status}"),
                not_stored=NoStoreReason.UPSTREAM_ERROR,
            )
        lifetime = freshness_lifetime(
            up.status,
            parsed.cc,
            parsed.date,
            parsed.expires,
            parsed.last_modified,
            response_time,
            heuristic_fraction=cfg.heuristic_fraction,
            heuristic_max_s=cfg.heuristic_max_s,
        )
        reason = storable(
            "GET",
            up.status,
            req_cc,
            parsed.cc,
            has_authorization=ctx.fields.first(b"authorization") is not None,
            has_expires=parsed.expires is not None,
            lifetime=lifetime,
            vary=parsed.vary,
            has_set_cookie=parsed.set_cookie,
            store_set_cookie=cfg.store_set_cookie,
            content_range=parsed.content_range,
        )
        if reason is None and not cfg.heuristic_with_cookie and _heuristic_only(parsed):
            if ctx.fields.values("cookie") and not parsed.cc.public:
                reason = NoStoreReason.COOKIE_HEURISTIC
        fields = vary_fields(parsed.vary) if parsed.vary else ()
        if reason is None and fields is None:
            reason = NoStoreReason.VARY_STAR
        limit = self.cache.max_object_bytes
        if reason is None and up.content_length is not None and up.content_length > limit:
            reason = NoStoreReason.TOO_LARGE
        if reason is not None:
            ctx.no_store = reason
            return FetchOutcome(
                upstream=up,
                headers=hdrs,
                fwd_status=up.status,
                not_stored=reason,
                stale_candidate=entry,
            )
        body, complete = await up.read_up_to(limit)
        if not complete:
            ctx.no_store = NoStoreReason.TOO_LARGE
            return FetchOutcome(
                upstream=up,
                headers=hdrs,
                fwd_status=up.status,
                prefix=body,
                not_stored=NoStoreReason.TOO_LARGE,
            )
        up.release()
        digest, listed = self.judge_body(up.status, hdrs, body)
        if listed is not None:
            ctx.no_store = NoStoreReason.BLOCKED
            return FetchOutcome(blocked=listed, not_stored=NoStoreReason.BLOCKED)
        assert fields is not None and lifetime is not None
        variant = self.variant(fields, ctx.fields) if fields else ()
        new = self._entry(
            ctx,
            primary,
            variant,
            up.status,
            up.reason,
            hdrs,
            parsed,
            body,
            digest,
            request_time,
            response_time,
            lifetime,
            fields,
        )
        stored = self.cache.put(new)
        if not stored:
            ctx.no_store = NoStoreReason.TOO_LARGE
        return FetchOutcome(
            entry=new,
            stored=stored,
            fwd_status=up.status,
            not_stored=None if stored else NoStoreReason.TOO_LARGE,
        )

    def _merge_304(
        self,
        ctx: RequestCtx,
        entry: Entry,
        fresh: list[tuple[bytes, bytes]],
        request_time: float,
        response_time: float,
    ) -> FetchOutcome:
        """RFC 9111 §4.3.4: update the stored header fields from the 304 and reuse the body."""
        stored = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in entry.headers]
        new304 = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fresh]
        merged = [
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in merge_304(stored, new304, drop=("age", "cache-status"))
        ]
        parsed = _parse(merged)
        parsed.age = _parse(fresh).age
        lifetime = freshness_lifetime(
            entry.status,
            parsed.cc,
            parsed.date,
            parsed.expires,
            parsed.last_modified,
            response_time,
            heuristic_fraction=self.cfg.cache.heuristic_fraction,
            heuristic_max_s=self.cfg.cache.heuristic_max_s,
        )
        if lifetime is None:
            lifetime = 0.0
        new = self._entry(
            ctx,
            entry.primary,
            entry.variant,
            entry.status,
            entry.reason,
            merged,
            parsed,
            entry.body,
            entry.sha256,
            request_time,
            response_time,
            lifetime,
            entry.vary_fields,
        )
        stored_ok = False
        if not parsed.cc.no_store:
            stored_ok = self.cache.put(new)
        else:
            self.cache.remove(entry)
        return FetchOutcome(entry=new, stored=stored_ok, revalidated=True, fwd_status=304)

    def _entry(
        self,
        ctx: RequestCtx,
        primary: tuple[str, bytes],
        variant: tuple[str, ...],
        status: int,
        reason: bytes,
        hdrs: list[tuple[bytes, bytes]],
        parsed: _Parsed,
        body: bytes,
        digest: bytes,
        request_time: float,
        response_time: float,
        lifetime: float,
        fields: tuple[str, ...],
    ) -> Entry:
        cc = parsed.cc
        hidden = {f.encode() for f in (*cc.private_fields, *cc.no_cache_fields)}
        kept = [
            (n, v) for n, v in hdrs if n.lower() not in PER_DELIVERY and n.lower() not in hidden
        ]
        if parsed.date is None:
            # RFC 9110 §6.6.1: a recipient with a clock adds Date when it caches a response.
            kept.append((b"Date", format_http_date(response_time).encode()))
        target = ctx.target
        assert target is not None
        entry = Entry(
            primary=primary,
            variant=variant,
            target=target,
            status=status,
            reason=reason or b"OK",
            headers=tuple(kept),
            body=body,
            sha256=digest,
            request_time=request_time,
            response_time=response_time,
            corrected_initial_age=initial_age(parsed.age, parsed.date, request_time, response_time),
            lifetime=lifetime,
            stale_while_revalidate_s=float(cc.stale_while_revalidate or 0),
            stale_if_error_s=float(cc.stale_if_error or 0),
            must_revalidate=cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None,
            no_cache=cc.no_cache and not cc.no_cache_fields,
            etag=parsed.etag,
            last_modified=parsed.last_modified,
            date=parsed.date,
            vary_fields=fields,
            upstream_cache_status=parsed.cache_status,
            stored_at=response_time,
            site_index=ctx.site_index,
            keys=match_keys(target.host, target.path, target.query),  # memoised by block
        )
        entry.cc = cc
        entry.render_head(self.cfg.cache.entry_overhead_bytes, self.via)
        return entry

    def adopt_shared(self, ctx: RequestCtx, entry: Entry) -> Entry:
        """Finish an entry loaded from the shared tier as this node would have stored it:
        its site, the Cache-Control parsed from its stored fields, and our `Via`."""
        entry.site_index = ctx.site_index
        entry.cc = _parse(list(entry.headers)).cc
        t = entry.target
        entry.keys = match_keys(t.host, t.path, t.query)
        entry.render_head(self.cfg.cache.entry_overhead_bytes, self.via)
        return entry

    # -- the body against the blocklist's digests --------------------------------------------

    def judge_body(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[bytes, BlockEntry | None]:
        """The digest to index a whole body by (its identity representation's, content
        codings removed: blocklists/FORMAT.md) and the entry listing it, if any. A body
        whose identity cannot be established (unknown coding, corrupt, over the decoding
        limits) is refused with OriginError: it cannot be shown not to be listed."""
        result = identity_digest(body, _codings(status, headers), self.decode_limits)
        listed = self._listed(result)
        if listed is None and self._refused(result):
            raise OriginError(
                OriginFailure.PROTOCOL,
                f"body not checkable against the blocklist: {result.failure} ({result.detail})",
            )
        return result.identity or result.raw, listed

    def _listed(self, result: DigestResult) -> BlockEntry | None:
        snapshot = self.blocklist()
        for digest in result.digests:
            listed = snapshot.check_digest(digest)
            if listed is not None:
                return listed
        return None

    def _refused(self, result: DigestResult) -> bool:
        if result.refusal(self.cfg.blocklist.unknown_coding_policy) is None:
            return False
        self.stats.undecodable_bodies += 1
        return True

    # -- deliver a response that is not stored ------------------------------------------------

    async def stream(self, ctx: RequestCtx, outcome: FetchOutcome, *, fwd: bytes) -> None:
        up = outcome.upstream
        assert up is not None
        responder: Responder = ctx.responder
        try:
            await self._stream(ctx, responder, up, outcome, fwd)
        finally:
            up.close()

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
        body = outcome.prefix
        complete = outcome.complete or no_body
        spool = self.cfg.blocklist.hash_spool_max_bytes
        if not complete and len(body) <= spool:
            more, complete = await up.read_up_to(spool - len(body))
            body += more
        hasher = None
        if not no_body:
            if complete:
                _digest, listed = self.judge_body(status, outcome.headers, body)
                if listed is not None:
                    outcome.blocked = listed
                    raise BodyBlocked(listed)
            elif self.cfg.blocklist.oversize_policy == "refuse":
                raise OriginError(
                    OriginFailure.PROTOCOL, "body too large to check against the blocklist"
                )
            else:
                hasher = IdentityHasher(_codings(status, outcome.headers), self.decode_limits)
                hasher.update(body)
        headers: list[tuple[bytes, bytes]] = []
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
            headers.append((name, value))
        headers.append((b"Via", via))
        reason = outcome.not_stored
        member = cache_status_bytes(
            self.cfg.via_name,
            hit=False,
            fwd=fwd.decode(),
            fwd_status=status,
            detail=None if reason is None or reason is NoStoreReason.BYPASS else reason.value,
        )
        headers.append((b"Cache-Status", upstream_status + member))
        if complete and not no_body:
            length: int | None = len(body)
        else:
            length = up.content_length
        ctx.status = status
        ctx.cache_status = member
        if complete and not no_body:
            # The whole (spooled) body is known: head and body in one write.
            responder.start(status, up.reason or b"OK", headers, content_length=length, first=body)
            ctx.bytes_sent = len(body)
            responder.end()
            return
        responder.start(status, up.reason or b"OK", headers, content_length=length, no_body=no_body)
        if no_body:
            responder.end()
            return
        if body:
            await responder.write(body)
        sent = len(body)
        if not complete:
            async for chunk in up.chunks():
                if hasher is not None:
                    hasher.update(chunk)
                    if hasher.failure is not None and self._refused(hasher.result()):
                        # Undecodable or a bomb: stop here (the client sees a cut body).
                        raise OriginError(OriginFailure.PROTOCOL, "body not checkable")
                await responder.write(chunk)
                sent += len(chunk)
            if hasher is not None and self._listed(hasher.result()) is not None:
                # Too large to hold back: delivered once, but this digest is listed. The
                # next request will not get it (it is never stored).
                ctx.no_store = NoStoreReason.BLOCKED
        ctx.bytes_sent = sent
        responder.end()

    # -- invalidation -------------------------------------------------------------------------

    def invalidate(self, ctx: RequestCtx, outcome: FetchOutcome) -> None:
        """RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target
        URI and same-origin Location / Content-Location."""
        target = ctx.target
        assert target is not None
        loc = cloc = None
        for name, value in outcome.headers:
            n = name.lower()
            if n == b"location":
                loc = value.decode("latin-1")
            elif n == b"content-location":
                cloc = value.decode("latin-1")
        base = target.raw_path_query.decode("ascii")
        for authority, path_query in invalidated_targets(
            ctx.method,
            outcome.fwd_status,
            target.authority,
            loc,
            cloc,
            request_path=base,
            scheme=target.scheme,
        ):
            try:
                t = canonical_target(path_query.encode("latin-1"), authority.encode("latin-1"))
            except (BadTarget, UnicodeEncodeError):
                continue
            self.cache.purge_primary((t.authority, t.raw_path_query))


def _heuristic_only(parsed: _Parsed) -> bool:
    """No explicit freshness (RFC 9111 §4.2.1): the lifetime would be heuristic (§4.2.2)."""
    cc = parsed.cc
    return cc.s_maxage is None and cc.max_age is None and parsed.expires is None


def _codings(status: int, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Content-Encoding values of a whole body; a 206 part cannot be decoded alone, so its
    bytes are judged as received."""
    if status == 206:
        return []
    return [v for n, v in headers if n.lower() == b"content-encoding"]


def forwarded_element(client_ip: str, authority: str, scheme: str) -> str:
    """RFC 7239 §4: this hop's element; IPv6 addresses are bracketed and quoted (§6)."""
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    host = authority if _TOKEN_CHARS.issuperset(authority) else f'"{authority}"'
    return f"for={node};host={host};proto={scheme}"


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class BodyBlocked(Exception):
    def __init__(self, entry: BlockEntry) -> None:
        super().__init__(entry.id)
        self.entry = entry


async def _body(ctx: RequestCtx) -> AsyncIterator[bytes]:
    async for chunk in ctx.request.body:
        yield chunk
    await asyncio.sleep(0)
