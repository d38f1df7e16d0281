"""upstream_response: what the origin answered becomes a decision. A 304 merges into the
stored response (store), 5xx with a stored entry may stand in for stale-if-error, and every
"not stored" carries a `NoStoreReason`. The body of anything that would be stored or delivered
whole is judged against the blocklist's digests (its identity representation: content codings
removed) before its first byte goes out.

`route` then says what one request gets from the outcome: the leader of a coalesced fetch and
its followers share it, but each has its own Vary values, directives and claim on an open
response.
"""

from __future__ import annotations

from hashlib import sha256

from proxy.blocklist.digest import DecodeFailure, DecodeLimits, DigestResult, identity_digest
from proxy.blocklist.enforce import UNJUDGED_DIGEST, Enforcer
from proxy.blocklist.model import Entry as BlockEntry
from proxy.cache.coalesce import Coalescer
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, ItemKey, Next, RequestCtx
from proxy.metrics import Result, WorkerStats
from proxy.origin import OriginError, OriginFailure, UpstreamResponse
from proxy.phases.lookup import decide, miss, stale_on_error
from proxy.phases.spool import BodyBudget, spool
from proxy.rfc.cache_status import Members
from proxy.rfc.freshness import Reuse, freshness_lifetime
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.invalidation import content_location_is_target
from proxy.rfc.merge import head_updates_stored, select_for_304, text_fields
from proxy.rfc.response import ParsedResponse, heuristic_only, parse_response, read_response
from proxy.rfc.storable import NoStoreReason, storable
from proxy.rfc.vary import vary_fields

NO_BODY_STATUSES = frozenset({204, 304})
RESPONSE_DRIVEN = frozenset(NoStoreReason) - {
    NoStoreReason.REQUEST_NO_STORE,
    NoStoreReason.UPSTREAM_ERROR,
    NoStoreReason.BLOCKED,
    NoStoreReason.BYPASS,
    NoStoreReason.METHOD,
    NoStoreReason.AUTHORIZATION,
}


def body_codings(status: int, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Content-Encoding values of a whole body, read from its fields (`codings_of`)."""
    return codings_of(status, [v for n, v in headers if n.lower() == b"content-encoding"])


def codings_of(status: int, codings: list[bytes]) -> list[bytes]:
    """The content codings to remove from a body whose Content-Encoding values are `codings`
    (as `read_response` found them, ParsedResponse.codings): none for a 206 part, which
    cannot be decoded alone, so its bytes are judged as received."""
    return [] if status == 206 else codings


def outcome_codings(status: int, outcome: FetchOutcome) -> list[bytes]:
    """`body_codings` of an outcome's fields: those `read_response` found, when it did."""
    if outcome.codings is not None:
        return codings_of(status, outcome.codings)
    return body_codings(status, outcome.headers)


class BodyBlocked(Exception):
    def __init__(self, entry: BlockEntry) -> None:
        super().__init__(entry.id)
        self.entry = entry


class UpstreamResponsePhase:
    """upstream_response, the body judgement and `route`, as methods of the Fetcher that
    composes the phases."""

    # Provided by Fetcher (proxy/phases/fetch.py), which composes the phases.
    cfg: Config
    cache: TieredCache
    stats: WorkerStats
    via: bytes
    members: Members
    enforcer: Enforcer
    coalescer: Coalescer[FetchOutcome]
    decode_limits: DecodeLimits
    budget: BodyBudget

    async def upstream_response(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        entry: Entry | None,
        request_time: float,
        response_time: float,
    ) -> FetchOutcome:
        hdrs, parsed = read_response(up.headers)  # hop-by-hop stripped and parsed: one pass
        if up.status == 304 and entry is not None:
            up.release()
            last_modified = (entry.header(b"last-modified") or b"").decode("latin-1") or None
            if select_for_304(
                entry.etag,
                last_modified,
                parsed.etag,
                parsed.last_modified_raw,
                answers_stored=True,  # the conditional request carried this entry's validators
            ):
                return self._merge_304(ctx, entry, hdrs, request_time, response_time)
            # A 304 that does not identify the stored response: fetch it whole, once.
            self.cache.remove(entry)
            return await self.fetch_for_cache(ctx, None)
        if up.status >= 500 and entry is not None:
            return self._error_with_stale(up, hdrs, entry)
        cc = parsed.cc
        # A no-store response (must-understand aside) is refused by `storable` before it
        # looks at the lifetime: a pass-through's answer is not worked out (issue 18).
        unused = cc.no_store and not cc.must_understand
        lifetime = None if unused else self.lifetime(up.status, parsed, response_time)
        fields = vary_fields(parsed.vary) if parsed.vary else ()
        reason = self._no_store_reason(ctx, up, parsed, lifetime, fields)
        if reason is not None:
            ctx.no_store = reason
            return FetchOutcome(
                upstream=up,
                headers=hdrs,
                codings=parsed.codings,
                fwd_status=up.status,
                not_stored=reason,
                stale_candidate=entry,
            )
        assert fields is not None and lifetime is not None
        times = (request_time, response_time)
        return await self._keep(ctx, up, hdrs, parsed, lifetime, fields, times)

    def head_response(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        entry: Entry,
        request_time: float,
        response_time: float,
    ) -> FetchOutcome:
        """RFC 9111 §4.3.5, the answer to `head_through`'s HEAD for a stored GET response: a 200
        whose validators, Content-Length and coding agree with it updates its fields and
        freshness as a 304 would (and the HEAD is answered from it); any other 200 or 4xx
        (a 410 says the stored body is gone) invalidates it and is relayed; a 5xx leaves it
        standing in for stale-if-error. Nothing is read: a response to HEAD has no body."""
        hdrs = strip_hop_by_hop(up.headers)
        if up.status >= 500:
            return self._error_with_stale(up, hdrs, entry, "HEAD")
        if up.status == 200 and head_updates_stored(
            text_fields(entry.headers),
            len(entry.body),
            text_fields(hdrs),
        ):
            up.release()
            return self._merge_304(ctx, entry, hdrs, request_time, response_time, 200)
        self.cache.remove(entry)
        ctx.no_store = NoStoreReason.METHOD
        return FetchOutcome(
            upstream=up,
            headers=hdrs,
            fwd_status=up.status,
            not_stored=NoStoreReason.METHOD,
            method="HEAD",
        )

    @staticmethod
    def _error_with_stale(
        up: UpstreamResponse, hdrs: list[tuple[bytes, bytes]], entry: Entry, method: str = "GET"
    ) -> FetchOutcome:
        """A 5xx while `entry` is stored: `route` may stand it in (RFC 5861 §4)."""
        return FetchOutcome(
            upstream=up,
            headers=hdrs,
            fwd_status=up.status,
            stale_candidate=entry,
            error=OriginError(OriginFailure.PROTOCOL, f"origin answered {up.status}"),
            not_stored=NoStoreReason.UPSTREAM_ERROR,
            method=method,
        )

    def post_answer_reusable(self, ctx: RequestCtx, hdrs: list[tuple[bytes, bytes]]) -> bool:
        """RFC 9110 §9.3.3: a POST response with explicit freshness whose Content-Location is
        the POST's target URI may be stored as that resource's, for later GETs and HEADs
        (`upstream_response` then decides as for a GET: storable, judged, stored)."""
        parsed = parse_response(hdrs)
        if heuristic_only(parsed):
            return False
        cloc = [v for n, v in hdrs if n.lower() == b"content-location"]
        target = ctx.target
        return len(cloc) == 1 and content_location_is_target(
            cloc[0].decode("latin-1"),
            target.authority,
            target.raw_path_query.decode("ascii"),
            target.scheme,
        )

    def lifetime(self, status: int, parsed: ParsedResponse, response_time: float) -> float | None:
        """RFC 9111 §4.2.1, with this edge's heuristic settings (§4.2.2)."""
        cfg = self.cfg.cache
        return freshness_lifetime(
            status,
            parsed.cc,
            parsed.date,
            parsed.expires,
            parsed.last_modified,
            response_time,
            heuristic_fraction=cfg.heuristic_fraction,
            heuristic_max_s=cfg.heuristic_max_s,
        )

    async def _keep(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        hdrs: list[tuple[bytes, bytes]],
        parsed: ParsedResponse,
        lifetime: float,
        fields: tuple[str, ...],
        times: tuple[float, float],
    ) -> FetchOutcome:
        """A storable response: read whole (up to the object limit, within the in-flight
        budget), judged against the blocklist's digests, then stored. Too large: streamed on
        from what was read."""
        spooled = await spool(up, self.cache.max_object_bytes, self.budget)
        if not spooled.complete:
            ctx.no_store = NoStoreReason.TOO_LARGE
            return FetchOutcome(
                upstream=up,
                headers=hdrs,
                codings=parsed.codings,
                fwd_status=up.status,
                spooled=spooled,
                not_stored=NoStoreReason.TOO_LARGE,
            )
        spooled.release()  # from here the body is the entry's (and the memory tier's)
        body = spooled.body
        up.release()
        digest, listed = self.judge_coded(codings_of(up.status, parsed.codings), body)
        if listed is not None:
            ctx.no_store = NoStoreReason.BLOCKED
            return FetchOutcome(blocked=listed, not_stored=NoStoreReason.BLOCKED)
        variant = self.variant(fields, ctx.fields) if fields else ()
        new = self._entry(
            ctx,
            ctx.primary,
            variant,
            up.status,
            up.reason,
            hdrs,
            parsed,
            body,
            digest,
            *times,
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
            relay_head=self.relay_head(new, hdrs, parsed),
        )

    def _no_store_reason(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        parsed: ParsedResponse,
        lifetime: float | None,
        fields: tuple[str, ...] | None,
    ) -> NoStoreReason | None:
        """RFC 9111 §3 and this edge's own rules: why this response is not stored, or None."""
        cfg = self.cfg.cache
        reason = storable(
            "GET",
            up.status,
            ctx.req_cc,
            parsed.cc,
            has_authorization=ctx.fields.first(b"authorization") is not None,
            has_expires=parsed.expires is not None,
            lifetime=lifetime,
            vary=parsed.vary,
            has_set_cookie=parsed.set_cookie,
            # Stored with Set-Cookie, or without it (store.py) on explicit freshness alone.
            store_set_cookie=cfg.store_set_cookie
            or (cfg.set_cookie_policy == "strip" and not heuristic_only(parsed)),
        )
        if reason is None and not cfg.heuristic_with_cookie and heuristic_only(parsed):
            if ctx.fields.values("cookie") and not parsed.cc.public:
                reason = NoStoreReason.COOKIE_HEURISTIC
        if reason is None and fields is None:
            reason = NoStoreReason.VARY_STAR
        limit = self.cache.max_object_bytes
        if reason is None and up.content_length is not None and up.content_length > limit:
            reason = NoStoreReason.TOO_LARGE
        return reason

    # -- what one request gets from a fetch's outcome ----------------------------------------

    def route(self, ctx: RequestCtx) -> Next:
        """The outcome of the fetch this request led or followed, for this request: a stored
        or fetched entry to deliver, an open response to stream (only the one request that
        claims it), its own fetch (another Vary variant, or a validation its directives
        ask for), a 451, or a stale entry standing in for an origin error."""
        outcome = ctx.outcome
        assert outcome is not None
        now = self.clock()
        if outcome.error is not None:
            return self._route_error(ctx, outcome, now)
        if outcome.blocked is not None:
            ctx.blocked_by = outcome.blocked
            return Next.BLOCKED
        if outcome.entry is None:
            # Not stored: the leader streams what it fetched; followers fetch for themselves.
            if ctx.leader and outcome.claim():
                ctx.result = Result.PASS if outcome.not_stored else Result.MISS
                ctx.fwd = b"miss"
                return Next.STREAM
            ctx.fwd = b"uri-miss"
            return Next.PASS
        stored = outcome.entry
        if stored.vary_fields:
            own = self.variant(stored.vary_fields, ctx.fields)
            if own != stored.variant:
                return self._own_variant(ctx, (stored.primary, own))
        listed = self.enforcer.refuse_stored(stored)
        if listed is not None:
            ctx.blocked_by = listed
            return Next.BLOCKED
        if self.enforcer.unservable(stored):  # judged unjudgeable under a list since swapped
            outcome.error = OriginError(OriginFailure.PROTOCOL, "body not checkable")
            return Next.ORIGIN_ERROR
        if outcome.shared:
            return self._route_shared(ctx, stored, now)
        ctx.result = Result.REVALIDATED if outcome.revalidated else Result.MISS
        ctx.cache_status = self._fetched_status(ctx, stored, outcome, now)
        ctx.entry = stored
        return Next.DELIVER

    def _fetched_status(
        self, ctx: RequestCtx, stored: Entry, outcome: FetchOutcome, now: float
    ) -> bytes:
        """Cache-Status of a response this request's fetch brought (RFC 9211 §2.2: fwd=stale
        whenever a stored response existed but could not be used)."""
        fwd = "stale" if ctx.entry is not None or outcome.stale_candidate else "miss"
        not_stored = outcome.not_stored
        status = self.members.member(
            fwd=fwd,
            fwd_status=outcome.fwd_status,
            stored=True if outcome.stored else None,
            ttl=int(stored.lifetime - stored.age(now)) if outcome.stored else None,
            collapsed=ctx.collapsed,
            detail=None if outcome.stored or not_stored is None else not_stored.value,
        )
        if stored.upstream_cache_status:
            status = stored.upstream_cache_status + b", " + status
        return status

    def _own_variant(self, ctx: RequestCtx, key: ItemKey) -> Next:
        """The leader's response varies on a field this request differs in: fetch (and store)
        this request's own variant, coalesced with others that share it; once only."""
        if ctx.vary_refetch:
            ctx.fwd = b"miss"
            return Next.PASS
        ctx.vary_refetch = True
        ctx.collapsed = False
        ctx.key = key
        ctx.entry = None
        return miss(ctx, self.coalescer)

    def _route_shared(self, ctx: RequestCtx, entry: Entry, now: float) -> Next:
        """An entry from the tier behind memory: delivered, unless this request (a follower of
        the lookup) asks for more than it gives; then a validation of its own."""
        decision = decide(entry, now, ctx.req_cc)
        ctx.entry = entry
        if decision is Reuse.VALIDATE:
            ctx.key = (entry.primary, entry.variant)
            return Next.FETCH_ALONE
        ctx.result = Result.HIT if decision is Reuse.FRESH else Result.STALE
        ctx.hit_detail = entry.tier_detail or b"; detail=shared"  # node: another worker's fetch
        return Next.HIT

    def _route_error(self, ctx: RequestCtx, outcome: FetchOutcome, now: float) -> Next:
        """The origin failed (or answered 5xx): a stale entry where RFC 5861 and the grace
        allow it and the blocklist does not list it, else the error itself."""
        stale = outcome.stale_candidate or ctx.entry
        unreachable = outcome.upstream is None  # no answer at all, not a 5xx
        if stale is not None and self._may_serve_stale_on_error(ctx, stale, now, unreachable):
            if outcome.claim():
                outcome.drop()
            ctx.result = Result.STALE
            ctx.entry = stale
            ctx.hit_detail = b"; detail=stale-if-error"
            return Next.HIT
        if outcome.upstream is None:
            return Next.ORIGIN_ERROR
        if not (ctx.leader and outcome.claim()):
            ctx.fwd = b"miss"
            return Next.PASS
        ctx.result = Result.MISS
        ctx.fwd = b"stale"
        return Next.STREAM

    def _may_serve_stale_on_error(
        self, ctx: RequestCtx, entry: Entry, now: float, unreachable: bool
    ) -> bool:
        """RFC 5861 §4 and the configured graces: `cache.max_stale_serve_s` for any error,
        `cache.stale_if_unreachable_s` when the origin could not be reached at all (RFC 9111
        §4.2.4 allows a disconnected cache to serve stale, as Squid and Traffic Server do)."""
        if self.enforcer.listed_digest(entry.sha256) is not None:
            return False
        if self.enforcer.unservable(entry):
            return False
        cfg = self.cfg.cache
        grace = max(cfg.max_stale_serve_s, cfg.stale_if_unreachable_s if unreachable else 0.0)
        return stale_on_error(entry, now, ctx.req_cc, grace)

    # -- the body against the blocklist's digests --------------------------------------------

    def judge_body(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[bytes, BlockEntry | None]:
        """The digest to index a whole body by (its identity representation's, content
        codings removed: blocklists/FORMAT.md) and the entry listing it, if any. A body
        whose identity cannot be established (unknown coding, corrupt, over the decoding
        limits) is refused with OriginError: it cannot be shown not to be listed. Only an
        unknown coding while the list holds no body digest is let through (there is nothing
        it could match): indexed by `UNJUDGED_DIGEST`, dropped once digests are listed."""
        return self.judge_coded(body_codings(status, headers), body)

    def judge_coded(self, codings: list[bytes], body: bytes) -> tuple[bytes, BlockEntry | None]:
        """`judge_body` for a body whose content codings are known (`body_codings`)."""
        if not codings:
            # No content coding: the body is its identity representation, and its one digest
            # (identity = raw) is what identity_digest would give, without the result object.
            digest = sha256(body).digest()
            return digest, self.enforcer.snapshot.check_digest(digest)
        result = identity_digest(body, codings, self.decode_limits)
        listed = self._listed(result)
        if listed is None and self._refused(result):
            raise OriginError(
                OriginFailure.PROTOCOL,
                f"body not checkable against the blocklist: {result.failure} ({result.detail})",
            )
        if result.identity is not None:
            return result.identity, listed
        if result.failure is None or self.cfg.blocklist.unknown_coding_policy == "raw-only":
            return result.raw, listed
        return UNJUDGED_DIGEST, listed

    def _listed(self, result: DigestResult) -> BlockEntry | None:
        snapshot = self.enforcer.snapshot
        for digest in result.digests:
            listed = snapshot.check_digest(digest)
            if listed is not None:
                return listed
        return None

    def _refused(self, result: DigestResult) -> bool:
        failure = result.refusal(self.cfg.blocklist.unknown_coding_policy)
        if failure is None:
            return False
        if failure is DecodeFailure.UNKNOWN_CODING and not self.enforcer.digests_listed:
            return False  # no body digest is listed: there is nothing it could match
        self.stats.undecodable_bodies += 1
        return True
