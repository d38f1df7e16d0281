"""RFC 9111 §3 storing responses (cases follow cache-tests cc-response, status,
authorization, heuristic-freshness)."""

from typing import Any

import pytest

from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl, parse_cache_control
from proxy.rfc.freshness import freshness_lifetime
from proxy.rfc.storable import UNDERSTOOD_STATUSES, NoStoreReason, storable


def cc(v: str) -> CacheControl:
    return parse_cache_control([v])


def check(
    *,
    method: str = "GET",
    status: int = 200,
    req: str = "",
    resp: str = "max-age=60",
    lifetime: float | None = 60.0,
    **kw: Any,
) -> NoStoreReason | None:
    args: dict[str, Any] = dict(
        has_authorization=False,
        has_expires=False,
        lifetime=lifetime,
        vary=(),
        has_set_cookie=False,
        store_set_cookie=False,
    )
    args.update(kw)
    return storable(method, status, cc(req), cc(resp), **args)


def test_plain_fresh_get_storable_rfc9111_3() -> None:
    assert check() is None


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "get", "OPTIONS"])
def test_only_get_rfc9111_3(method: str) -> None:
    assert check(method=method) is NoStoreReason.METHOD


@pytest.mark.parametrize("status", [100, 101, 103, 304, 600, 0])
def test_non_final_or_304_rfc9111_3(status: int) -> None:
    assert check(status=status) is NoStoreReason.STATUS


@pytest.mark.parametrize(
    "status",
    [200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599],
)
def test_any_final_status_with_explicit_freshness_rfc9111_3(status: int) -> None:
    assert check(status=status) is None


def test_partial_not_stored_rfc9111_3_3() -> None:
    assert check(status=206) is NoStoreReason.PARTIAL


@pytest.mark.parametrize("resp", ["no-store", "No-StOrE", "max-age=10000, no-store"])
def test_no_store_rfc9111_5_2_2_5(resp: str) -> None:
    assert check(resp=resp) is NoStoreReason.NO_STORE


def test_request_no_store_rfc9111_5_2_1_5() -> None:
    assert check(req="no-store") is NoStoreReason.REQUEST_NO_STORE


def test_private_shared_rfc9111_5_2_2_7() -> None:
    assert check(resp="private, max-age=3600") is NoStoreReason.PRIVATE


def test_qualified_private_still_storable_rfc9111_5_2_2_7() -> None:
    assert check(resp='private="set-cookie", max-age=3600') is None


def test_no_cache_storable_rfc9111_5_2_2_4() -> None:
    assert check(resp="no-cache", lifetime=0.0) is None


@pytest.mark.parametrize("status", [200, 404, 301])
def test_must_understand_ignores_no_store_rfc9111_5_2_2_3(status: int) -> None:
    assert status in UNDERSTOOD_STATUSES
    assert check(status=status, resp="must-understand, no-store, max-age=60") is None


@pytest.mark.parametrize("status", [202, 299, 599])
def test_must_understand_unknown_status_rfc9111_5_2_2_3(status: int) -> None:
    got = check(status=status, resp="must-understand, no-store, max-age=60")
    assert got is NoStoreReason.STATUS


def test_must_understand_does_not_override_request_no_store_rfc9111_3() -> None:
    got = check(req="no-store", resp="must-understand, no-store, max-age=60")
    assert got is NoStoreReason.REQUEST_NO_STORE


@pytest.mark.parametrize(
    ("resp", "expected"),
    [
        ("max-age=60", NoStoreReason.AUTHORIZATION),
        ("max-age=60, must-revalidate", None),
        ("max-age=60, public", None),
        ("s-maxage=60", None),
        ("max-age=60, proxy-revalidate", NoStoreReason.AUTHORIZATION),
    ],
)
def test_authorization_rfc9111_3_5(resp: str, expected: NoStoreReason | None) -> None:
    assert check(resp=resp, has_authorization=True) is expected


@pytest.mark.parametrize("vary", [["*"], ["Accept, *"], ["", "*"]])
def test_vary_star_rfc9111_4_1(vary: list[str]) -> None:
    assert check(vary=vary) is NoStoreReason.VARY_STAR


def test_vary_fields_storable_rfc9111_4_1() -> None:
    assert check(vary=["Accept-Encoding"]) is None


def test_set_cookie_policy() -> None:
    assert check(has_set_cookie=True) is NoStoreReason.SET_COOKIE
    assert check(has_set_cookie=True, store_set_cookie=True) is None


def test_no_freshness_rfc9111_3() -> None:
    life = freshness_lifetime(599, EMPTY_CC, None, None, 1.0, 100.0)
    assert life is None
    assert check(status=599, resp="", lifetime=life) is NoStoreReason.NO_FRESHNESS


def test_heuristic_status_without_validators_storable_rfc9111_3() -> None:
    life = freshness_lifetime(200, EMPTY_CC, None, None, None, 100.0)
    assert check(resp="", lifetime=life) is None


def test_reason_values_are_labels() -> None:
    assert {r.value for r in NoStoreReason} >= {
        "method",
        "status",
        "no-store",
        "request-no-store",
        "private",
        "authorization",
        "no-freshness",
        "vary-star",
        "partial",
        "set-cookie",
        "too-large",
        "upstream-error",
        "blocked",
        "bypass",
    }
