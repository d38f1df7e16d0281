"""lookup: the request's own cache directives and the one decision whether a stored response
answers it. `decide` is the only place a fresh hit is decided: the memo of hot answers, the
synchronous plain lookup, the full lookup and the shared tier's entries all ask it."""

from __future__ import annotations

from proxy.cache.entry import Entry
from proxy.context import RequestFields
from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl, parse_cache_control
from proxy.rfc.freshness import Reuse, reuse, stale_allowed, within_stale_if_error


def decide(entry: Entry, now: float, req_cc: CacheControl) -> Reuse:
    """RFC 9111 §4.2 and §5.2.1 for one stored response and one request. A plain request
    (no directives) on a response without `no-cache` costs one comparison."""
    if req_cc is EMPTY_CC and not entry.no_cache and now < entry.expires_at:
        return Reuse.FRESH
    return reuse(entry.lifetime, entry.age(now), req_cc, entry.cc)


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
