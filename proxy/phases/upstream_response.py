"""upstream_response: what the origin answered becomes a decision. A 304 merges into the
stored response (store), 5xx with a stored entry may stand in for stale-if-error, and every
"not stored" carries a `NoStoreReason`. The body of anything that would be stored or delivered
whole is judged against the blocklist's digests (its identity representation: content codings
removed) before its first byte goes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.blocklist.digest import DecodeLimits, DigestResult, identity_digest
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, RequestCtx
from proxy.metrics import WorkerStats
from proxy.origin import OriginError, OriginFailure, UpstreamResponse
from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl
from proxy.rfc.conditional import normalise_etag
from proxy.rfc.dates import parse_http_date
from proxy.rfc.freshness import freshness_lifetime, parse_age
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.merge import select_for_304
from proxy.rfc.storable import NoStoreReason, storable
from proxy.rfc.targeted import select_cache_control
from proxy.rfc.vary import vary_fields

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
class ParsedResponse:
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


def parse_response(headers: list[tuple[bytes, bytes]]) -> ParsedResponse:
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
    return ParsedResponse(
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


def heuristic_only(parsed: ParsedResponse) -> bool:
    """No explicit freshness (RFC 9111 §4.2.1): the lifetime would be heuristic (§4.2.2)."""
    cc = parsed.cc
    return cc.s_maxage is None and cc.max_age is None and parsed.expires is None


def body_codings(status: int, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Content-Encoding values of a whole body; a 206 part cannot be decoded alone, so its
    bytes are judged as received."""
    if status == 206:
        return []
    return [v for n, v in headers if n.lower() == b"content-encoding"]


class BodyBlocked(Exception):
    def __init__(self, entry: BlockEntry) -> None:
        super().__init__(entry.id)
        self.entry = entry


class UpstreamResponsePhase:
    """upstream_response and the body judgement, as methods of the Fetcher that composes them."""

    # Provided by Fetcher (proxy/phases/fetch.py), which composes the phases.
    cfg: Config
    cache: TieredCache
    stats: WorkerStats
    via: bytes
    blocklist: Callable[[], Snapshot]
    decode_limits: DecodeLimits

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
        parsed = parse_response(hdrs)
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
        fields = vary_fields(parsed.vary) if parsed.vary else ()
        limit = self.cache.max_object_bytes
        reason = self._no_store_reason(ctx, up, parsed, lifetime, fields, limit)
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
        new = self._entry(
            ctx,
            primary,
            self.variant(fields, ctx.fields) if fields else (),
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

    def _no_store_reason(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        parsed: ParsedResponse,
        lifetime: float | None,
        fields: tuple[str, ...] | None,
        limit: int,
    ) -> NoStoreReason | None:
        """RFC 9111 §3 and this edge's own rules: why this response is not stored, or None."""
        cfg = self.cfg.cache
        req_cc = ctx.req_cc or EMPTY_CC
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
        if reason is None and not cfg.heuristic_with_cookie and heuristic_only(parsed):
            if ctx.fields.values("cookie") and not parsed.cc.public:
                reason = NoStoreReason.COOKIE_HEURISTIC
        if reason is None and fields is None:
            reason = NoStoreReason.VARY_STAR
        if reason is None and up.content_length is not None and up.content_length > limit:
            reason = NoStoreReason.TOO_LARGE
        return reason

    # -- the body against the blocklist's digests --------------------------------------------

    def judge_body(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[bytes, BlockEntry | None]:
        """The digest to index a whole body by (its identity representation's, content
        codings removed: blocklists/FORMAT.md) and the entry listing it, if any. A body
        whose identity cannot be established (unknown coding, corrupt, over the decoding
        limits) is refused with OriginError: it cannot be shown not to be listed."""
        result = identity_digest(body, body_codings(status, headers), self.decode_limits)
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
