"""Freshness and age, RFC 9111 §4.2 (and the stale extensions of RFC 5861).

All times are POSIX seconds; ``now`` is always passed in.

The hit path should not call these per request: compute ``expires_at()`` once when storing and
compare it with ``now``; ``current_age()`` is only needed to write the Age header.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from proxy.rfc.cachecontrol import DELTA_SECONDS_MAX, CacheControl
from proxy.rfc.dates import parse_http_date

__all__ = [
    "HEURISTIC_STATUSES",
    "Reuse",
    "current_age",
    "expires_at",
    "freshness_lifetime",
    "initial_age",
    "is_fresh",
    "parse_age",
    "reuse",
    "stale_allowed",
    "within_stale_if_error",
    "within_stale_while_revalidate",
]

HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
"""RFC 9110 §15.1: status codes that are heuristically cacheable (RFC 9111 §4.2.2)."""


def freshness_lifetime(
    status: int,
    cc: CacheControl,
    date: float | None,
    expires: str | None,
    last_modified: float | None,
    response_time: float,
    *,
    shared: bool = True,
    heuristic_fraction: float = 0.1,
    heuristic_max_s: float = 86400.0,
    has_explicit_public: bool | None = None,
) -> float | None:
    """RFC 9111 §4.2.1/§4.2.2: the response's freshness lifetime in seconds.

    Order: s-maxage (shared caches only), max-age, Expires - Date, then a heuristic of
    ``heuristic_fraction`` of (Date - Last-Modified) capped at ``heuristic_max_s``.

    * An invalid max-age/s-maxage, or an ``expires`` that is not a valid HTTP-date (e.g. "0",
      or several field lines joined with ","), gives 0: present but stale (§4.2.1, §5.3).
    * Without Date, ``response_time`` stands in for it (RFC 9110 §6.6.1).
    * Heuristics only apply to HEURISTIC_STATUSES or when ``public`` is present (§4.2.2).
      Such a response without Last-Modified gets 0.0: it may be stored (§3) but must be
      validated before each reuse.
    * None means: no explicit freshness and not heuristically cacheable; don't store.

    ``has_explicit_public`` overrides ``cc.public`` (e.g. when a targeted field replaced
    Cache-Control but the caller still wants Cache-Control's ``public`` to count).
    """
    if shared:
        if cc.invalid_s_maxage:
            return 0.0
        if cc.s_maxage is not None:
            return float(cc.s_maxage)
    if cc.invalid_max_age:
        return 0.0
    if cc.max_age is not None:
        return float(cc.max_age)
    date_value = date if date is not None else response_time
    if expires is not None:
        exp = parse_http_date(expires)
        if exp is None:
            return 0.0
        return max(0.0, exp - date_value)
    public = cc.public if has_explicit_public is None else has_explicit_public
    if status not in HEURISTIC_STATUSES and not public:
        return None
    if last_modified is None:
        return 0.0
    delta = date_value - last_modified
    if delta <= 0:
        return 0.0
    return min(delta * heuristic_fraction, heuristic_max_s)


def parse_age(values: Sequence[str]) -> int | None:
    """RFC 9111 §5.1: the Age value, or None when absent or invalid (then it is ignored).

    A list-valued Age (several members or field lines) uses the first member only; if that
    member is not a non-negative integer the field is ignored. Capped at 2^31 (§1.2.2).
    """
    if not values:
        return None
    first = values[0].split(",", 1)[0].strip(" \t")
    if not first or not first.isascii() or not first.isdigit():
        return None
    if len(first) > 10:
        return DELTA_SECONDS_MAX
    return min(int(first), DELTA_SECONDS_MAX)


def initial_age(
    age_value: int | None, date: float | None, request_time: float, response_time: float
) -> float:
    """RFC 9111 §4.2.3 corrected_initial_age: the response's age when it was received."""
    date_value = date if date is not None else response_time
    apparent_age = max(0.0, response_time - date_value)
    response_delay = response_time - request_time
    corrected_age_value = (age_value or 0) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(
    age_value: int | None,
    date: float | None,
    request_time: float,
    response_time: float,
    now: float,
) -> float:
    """RFC 9111 §4.2.3 current_age = corrected_initial_age + resident_time."""
    return initial_age(age_value, date, request_time, response_time) + (now - response_time)


def expires_at(lifetime: float, corrected_initial_age: float, response_time: float) -> float:
    """The instant at which current_age reaches ``lifetime`` (precompute once per store)."""
    return response_time + lifetime - corrected_initial_age


def is_fresh(lifetime: float | None, age: float) -> bool:
    """RFC 9111 §4.2: fresh iff freshness_lifetime > current_age."""
    return lifetime is not None and lifetime > age


def stale_allowed(resp_cc: CacheControl, *, shared: bool = True) -> bool:
    """RFC 9111 §4.2.4: may this response ever be served stale without validation?

    No for no-cache (§5.2.2.4), must-revalidate (§5.2.2.2) and, in shared caches,
    proxy-revalidate (§5.2.2.8) and s-maxage, which implies it (§5.2.2.10).
    """
    if resp_cc.no_cache or resp_cc.must_revalidate:
        return False
    if shared and (resp_cc.proxy_revalidate or resp_cc.s_maxage is not None):
        return False
    return True


class Reuse(StrEnum):
    FRESH = "fresh"
    """Serve from cache (RFC 9111 §4.2)."""
    STALE_OK = "stale-ok"
    """Stale, but the request's max-stale accepts it (§5.2.1.2)."""
    VALIDATE = "validate"
    """Send a conditional request (or a plain one without validators) first (§4.3)."""


def reuse(
    lifetime: float,
    age: float,
    req_cc: CacheControl,
    resp_cc: CacheControl,
    *,
    shared: bool = True,
) -> Reuse:
    """RFC 9111 §4 step "fresh, allowed stale, or successfully validated" for one request.

    Applies response no-cache, request no-cache / max-age / min-fresh / max-stale (§5.2.1)
    and the stale prohibitions of ``stale_allowed``. Pragma and only-if-cached are the
    caller's (they change what happens next, not this answer).
    """
    if resp_cc.no_cache or req_cc.no_cache:
        return Reuse.VALIDATE
    if req_cc.max_age is not None and age > req_cc.max_age:
        return Reuse.VALIDATE
    remaining = lifetime - age
    if req_cc.min_fresh is not None and remaining < req_cc.min_fresh:
        return Reuse.VALIDATE
    if remaining > 0:
        return Reuse.FRESH
    if req_cc.max_stale is not None and -remaining <= req_cc.max_stale:
        if stale_allowed(resp_cc, shared=shared):
            return Reuse.STALE_OK
    return Reuse.VALIDATE


def within_stale_while_revalidate(
    lifetime: float, age: float, resp_cc: CacheControl, *, shared: bool = True
) -> bool:
    """RFC 5861 §3: stale, but within stale-while-revalidate: serve and refresh behind."""
    swr = resp_cc.stale_while_revalidate
    if swr is None or not stale_allowed(resp_cc, shared=shared):
        return False
    staleness = age - lifetime
    return 0 <= staleness <= swr


def within_stale_if_error(
    lifetime: float,
    age: float,
    resp_cc: CacheControl,
    req_cc: CacheControl,
    *,
    shared: bool = True,
) -> bool:
    """RFC 5861 §4: may a stale response stand in for an origin error (5xx, unreachable)?

    The larger of the response's and the request's stale-if-error windows applies.
    """
    windows = [w for w in (resp_cc.stale_if_error, req_cc.stale_if_error) if w is not None]
    if not windows or not stale_allowed(resp_cc, shared=shared):
        return False
    staleness = age - lifetime
    return staleness <= max(windows)
