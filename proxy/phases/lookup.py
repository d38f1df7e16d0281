"""lookup: the request's own cache directives, the cache key, and the one decision whether a
stored response answers it. `decide` is the only place a fresh hit is decided: the memo of hot
answers, the lookup phase, and shared-tier entries after fetch all ask it.

`lookup` is synchronous (the memory tier is read without awaiting), so a fresh hit is answered
before any task or coroutine exists; the tier behind memory is asked inside the coalesced fetch
(proxy/phases/fetch.py), once for every request waiting on a key.
"""

from __future__ import annotations

from proxy.blocklist.digest import UNJUDGED_DIGEST
from proxy.blocklist.enforce import Enforcer
from proxy.cache.coalesce import Coalescer
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.context import FetchOutcome, Next, RequestCtx, RequestFields
from proxy.metrics import Result
from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl, parse_cache_control
from proxy.rfc.freshness import (
    Reuse,
    reuse,
    stale_allowed,
    within_stale_if_error,
    within_stale_while_revalidate,
)
from proxy.rfc.vary import vary_key

READ_METHODS = frozenset({"GET", "HEAD"})


def lookup(
    ctx: RequestCtx,
    cache: TieredCache,
    enforcer: Enforcer,
    coalescer: Coalescer[FetchOutcome],
    now: float,
) -> Next:
    """What the cache can do for this request: answer it (HIT), answer and refresh
    (STALE_WHILE_REVALIDATE), or send it on (PASS, PRIVATE, MISS, FETCH_ALONE, HEAD_THROUGH).
    Every stored body found is checked against the current snapshot's digests first
    (BLOCKED)."""
    fields = ctx.fields
    ctx.req_cc = req_cc = request_cache_control(fields)
    if ctx.method not in READ_METHODS or ctx.request.has_body:
        ctx.invalidate = ctx.method not in READ_METHODS
        return Next.PASS
    if fields.special is not None and fields.first(b"authorization") is not None:
        # RFC 9111 §3.5: never answered from the cache nor coalesced (the answer may be this
        # user's), but stored when the response says it may be shared.
        return Next.PRIVATE
    vary = cache.vary_fields(ctx.primary)
    ctx.key = key = (ctx.primary, vary_key(vary, fields.values) if vary else ())
    entry = cache.get(key, ctx.target) if vary is not None else None
    if entry is not None and enforcer.digests_listed and enforcer.unservable(entry):
        entry = None  # stored unjudged, before body digests were listed: fetched anew
    if entry is not None:
        listed = enforcer.refuse_stored(entry)
        if listed is not None:
            ctx.blocked_by = listed
            return Next.BLOCKED
        ctx.entry = entry
        ctx.hit_detail = entry.tier_detail  # which tier answered (Cache-Status detail)
        decision = decide(entry, now, req_cc)
        if decision is not Reuse.VALIDATE:
            ctx.result = Result.HIT if decision is Reuse.FRESH else Result.STALE
            return Next.HIT
        if within_stale_while_revalidate(entry.lifetime, entry.age(now), entry.cc) and not (
            req_cc.no_cache or req_cc.max_age is not None
        ):
            ctx.result = Result.STALE
            return Next.STALE_WHILE_REVALIDATE
    if req_cc.only_if_cached:
        ctx.result = Result.MISS
        return Next.ONLY_IF_CACHED
    if ctx.entry is not None and ctx.method == "HEAD":
        # RFC 9111 §4.3.5: the HEAD goes on as HEAD (no body to fetch, judge or store); its
        # answer freshens the stored GET response or invalidates it (fetch.head_through).
        return Next.HEAD_THROUGH
    return miss(ctx, coalescer)


def miss(ctx: RequestCtx, coalescer: Coalescer[FetchOutcome]) -> Next:
    """A key that was uncacheable a moment ago is fetched without queueing behind others
    (hit-for-miss); the response may still be stored if it has become cacheable."""
    assert ctx.key is not None
    if coalescer.is_hit_for_miss(ctx.key):
        ctx.hit_for_miss = True
        return Next.FETCH_ALONE
    return Next.MISS


def decide(entry: Entry, now: float, req_cc: CacheControl) -> Reuse:
    """RFC 9111 §4.2 and §5.2.1 for one stored response and one request. A plain request
    (no directives) on a response without `no-cache` costs one comparison."""
    if req_cc is EMPTY_CC and fresh_plain(entry, now):
        return Reuse.FRESH
    return reuse(entry.lifetime, entry.age(now), req_cc, entry.cc)


def fresh_plain(entry: Entry, now: float) -> bool:
    """`decide`'s first answer: a plain request on a fresh response without `no-cache`. All
    an entry without its parsed Cache-Control (the memo's node-tier hits) can be judged by;
    anything else goes the full way."""
    return not entry.no_cache and now < entry.expires_at


def stored_refused(enforcer: Enforcer, entry: Entry) -> bool:
    """Whether `lookup` would refuse this stored body now (its digest listed, or stored
    unjudged while digests are listed), without acting on it: the memo then leaves the
    request to `lookup`, which answers 451 or fetches and purges."""
    if enforcer.digests_listed and entry.sha256 == UNJUDGED_DIGEST:
        return True
    return enforcer.listed_digest(entry.sha256) is not None


def request_cache_control(fields: RequestFields) -> CacheControl:
    """RFC 9111 §5.2.1, with `Pragma: no-cache` standing in when Cache-Control is absent
    (§5.4)."""
    if fields.special is None:
        return EMPTY_CC
    cc_values = fields.values("cache-control")
    if cc_values:
        return parse_cache_control(cc_values)
    if "no-cache" in ",".join(fields.values("pragma")).lower():
        return parse_cache_control(["no-cache"])
    return EMPTY_CC


def stale_on_error(entry: Entry, now: float, req_cc: CacheControl, grace_s: float) -> bool:
    """May this stale entry stand in for an origin error? RFC 5861 §4 within the explicit
    stale-if-error window; the configured grace beyond it (`cache.max_stale_serve_s`) never
    overrides no-cache, must-revalidate, proxy-revalidate or s-maxage (RFC 9111 §4.2.4)."""
    age = entry.age(now)
    if within_stale_if_error(entry.lifetime, age, entry.cc, req_cc):
        return True
    return (
        grace_s > 0
        and age - entry.lifetime <= grace_s
        and not entry.must_revalidate
        and not entry.no_cache
        and stale_allowed(entry.cc)
    )
