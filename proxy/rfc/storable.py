"""May a response be stored? RFC 9111 §3 for a shared cache, one reason per "no"."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from proxy.rfc.cachecontrol import CacheControl
from proxy.rfc.vary import vary_fields

__all__ = ["UNDERSTOOD_STATUSES", "NoStoreReason", "storable"]


class NoStoreReason(StrEnum):
    """Why a response was not stored; bounded label set for metrics and Cache-Status detail."""

    METHOD = "method"
    STATUS = "status"
    NO_STORE = "no-store"
    REQUEST_NO_STORE = "request-no-store"
    PRIVATE = "private"
    AUTHORIZATION = "authorization"
    NO_FRESHNESS = "no-freshness"
    VARY_STAR = "vary-star"
    PARTIAL = "partial"
    SET_COOKIE = "set-cookie"
    COOKIE_HEURISTIC = "cookie-heuristic"  # asked with Cookie, freshness only heuristic
    TOO_LARGE = "too-large"
    UPSTREAM_ERROR = "upstream-error"
    BLOCKED = "blocked"
    BYPASS = "bypass"


UNDERSTOOD_STATUSES = frozenset(
    {
        200, 203, 204, 300, 301, 302, 303, 307, 308,
        400, 403, 404, 405, 406, 410, 414, 451,
        500, 501, 502, 503, 504,
    }
)  # fmt: skip
"""Final status codes whose caching requirements this cache implements (§5.2.2.3).

206 is absent on purpose: partial responses are not stored (§3.3 is optional).
"""


def storable(
    method: str,
    status: int,
    req_cc: CacheControl,
    resp_cc: CacheControl,
    *,
    has_authorization: bool,
    has_expires: bool,
    lifetime: float | None,
    vary: Sequence[str],
    has_set_cookie: bool,
    store_set_cookie: bool,
) -> NoStoreReason | None:
    """RFC 9111 §3: None when a shared cache may store the response, else the reason not.

    * only GET responses are stored (a HEAD response has no body to serve a GET with);
    * the status must be final and not 304 (a 304 updates a stored response: merge.py);
      206 is partial content, not stored (a 200 that carries Content-Range is a whole
      response: RFC 9110 §14.4 gives the field meaning only in 206 and 416);
    * must-understand (§5.2.2.3): store only UNDERSTOOD_STATUSES, and then ignore no-store;
    * request or response no-store (§5.2.1.5, §5.2.2.5); unqualified private (§5.2.2.7);
    * Authorization in the request needs must-revalidate, public or s-maxage (§3.5);
    * Vary: * can never match a later request (§4.1), so storing it is pointless;
    * Set-Cookie only when the operator allows it (``store_set_cookie``);
    * there must be explicit freshness or a heuristically cacheable status: ``lifetime``
      from freshness.freshness_lifetime() is None otherwise.
    """
    if method != "GET":
        return NoStoreReason.METHOD
    if status < 200 or status > 599 or status == 304:
        return NoStoreReason.STATUS
    if status == 206:
        return NoStoreReason.PARTIAL
    ignore_no_store = False
    if resp_cc.must_understand:
        if status not in UNDERSTOOD_STATUSES:
            return NoStoreReason.STATUS
        ignore_no_store = True
    if req_cc.no_store:
        return NoStoreReason.REQUEST_NO_STORE
    if resp_cc.no_store and not ignore_no_store:
        return NoStoreReason.NO_STORE
    if resp_cc.private:
        return NoStoreReason.PRIVATE
    if has_authorization and not (
        resp_cc.must_revalidate or resp_cc.public or resp_cc.s_maxage is not None
    ):
        return NoStoreReason.AUTHORIZATION
    if vary and vary_fields(vary) is None:
        return NoStoreReason.VARY_STAR
    if has_set_cookie and not store_set_cookie:
        return NoStoreReason.SET_COOKIE
    if lifetime is None and not has_expires:
        return NoStoreReason.NO_FRESHNESS
    return None
