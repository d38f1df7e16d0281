"""RFC 9111 §4.2 freshness, age and reuse (cases follow cache-tests cc-freshness,
expires-freshness, heuristic-freshness and age-parse)."""

import pytest

from proxy.rfc.cachecontrol import (
    EMPTY_CC,
    MAX_STALE_UNLIMITED,
    CacheControl,
    parse_cache_control,
)
from proxy.rfc.freshness import (
    HEURISTIC_STATUSES,
    Reuse,
    current_age,
    expires_at,
    freshness_lifetime,
    initial_age,
    is_fresh,
    parse_age,
    reuse,
    stale_allowed,
    within_stale_if_error,
    within_stale_while_revalidate,
)

NOW = 1_700_000_000.0
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # == NOW


def cc(v: str) -> CacheControl:
    return parse_cache_control([v])


def lifetime(
    status: int = 200,
    c: str = "",
    expires: str | None = None,
    lm: float | None = None,
    date: float | None = NOW,
    shared: bool = True,
) -> float | None:
    return freshness_lifetime(status, cc(c), date, expires, lm, NOW, shared=shared)


def test_date_constant() -> None:
    from proxy.rfc.dates import parse_http_date

    assert parse_http_date(DATE) == NOW


def test_max_age_rfc9111_4_2_1() -> None:
    assert lifetime(c="max-age=3600") == 3600


def test_s_maxage_beats_max_age_shared_rfc9111_4_2_1() -> None:
    assert lifetime(c="max-age=3600, s-maxage=1") == 1
    assert lifetime(c="max-age=1, s-maxage=3600") == 3600


def test_s_maxage_ignored_private_rfc9111_5_2_2_10() -> None:
    assert lifetime(c="s-maxage=3600, max-age=1", shared=False) == 1


def test_max_age_beats_past_expires_rfc9111_4_2_1() -> None:
    assert lifetime(c="max-age=3600", expires="Thu, 01 Jan 1970 00:00:00 GMT") == 3600


def test_max_age_beats_invalid_expires_rfc9111_5_3() -> None:
    assert lifetime(c="max-age=3600", expires="0") == 3600


def test_max_age_zero_beats_future_expires_rfc9111_4_2_1() -> None:
    assert lifetime(c="max-age=0", expires="Thu, 01 Jan 2099 00:00:00 GMT") == 0


def test_expires_minus_date_rfc9111_4_2_1() -> None:
    assert lifetime(expires="Tue, 14 Nov 2023 23:13:20 GMT") == 3600


def test_expires_without_date_uses_response_time_rfc9111_4_2_1() -> None:
    assert lifetime(expires="Tue, 14 Nov 2023 23:13:20 GMT", date=None) == 3600


@pytest.mark.parametrize("expires", ["0", "-1", "garbage", f"{DATE}, {DATE}"])
def test_invalid_expires_is_expired_rfc9111_5_3(expires: str) -> None:
    assert lifetime(status=599, expires=expires) == 0.0


def test_past_expires_is_zero_rfc9111_4_2_1() -> None:
    assert lifetime(expires="Thu, 01 Jan 1970 00:00:00 GMT") == 0.0


@pytest.mark.parametrize("c", ["max-age=abc", "max-age=-1", "max-age =60"])
def test_invalid_max_age_is_stale_rfc9111_4_2_1(c: str) -> None:
    assert lifetime(c=c, expires="Thu, 01 Jan 2099 00:00:00 GMT") == 0.0


def test_invalid_s_maxage_is_stale_shared_rfc9111_4_2_1() -> None:
    assert lifetime(c="s-maxage=x, max-age=60") == 0.0
    assert lifetime(c="s-maxage=x, max-age=60", shared=False) == 60


@pytest.mark.parametrize("status", sorted(HEURISTIC_STATUSES))
def test_heuristic_statuses_rfc9111_4_2_2(status: int) -> None:
    assert lifetime(status=status, lm=NOW - 86400 * 3) == pytest.approx(86400 * 0.3)


@pytest.mark.parametrize("status", [201, 202, 302, 303, 307, 403, 500, 502, 503, 504, 599])
def test_not_heuristic_rfc9111_4_2_2(status: int) -> None:
    assert lifetime(status=status, lm=NOW - 86400) is None


def test_public_enables_heuristics_rfc9111_4_2_2() -> None:
    assert lifetime(status=599, c="public", lm=NOW - 1000) == pytest.approx(100)


def test_has_explicit_public_override_rfc9111_4_2_2() -> None:
    got = freshness_lifetime(599, EMPTY_CC, NOW, None, NOW - 1000, NOW, has_explicit_public=True)
    assert got == pytest.approx(100)


def test_heuristic_cap_rfc9111_4_2_2() -> None:
    assert lifetime(lm=NOW - 86400 * 365) == 86400.0


def test_heuristic_without_last_modified_zero_rfc9111_3() -> None:
    assert lifetime() == 0.0


def test_heuristic_future_last_modified_zero_rfc9111_4_2_2() -> None:
    assert lifetime(lm=NOW + 10) == 0.0


def test_heuristic_not_used_with_expires_rfc9111_4_2_2() -> None:
    assert lifetime(expires="0", lm=NOW - 86400) == 0.0


@pytest.mark.parametrize(
    ("values", "age"),
    [
        (["15"], 15),
        (["0"], 0),
        (["abc"], None),
        (["-7200"], None),
        (["7200.0"], None),
        (["7200,0"], 7200),  # §5.1: first member of a list
        (["0,7200"], 0),
        (["0", "7200"], 0),
        (["7200", "0"], 7200),
        (["99999999999"], 2147483648),
        ([], None),
        ([""], None),
    ],
)
def test_parse_age_rfc9111_5_1(values: list[str], age: int | None) -> None:
    assert parse_age(values) == age


def test_current_age_rfc9111_4_2_3() -> None:
    # Date 10 s before receipt, Age 5, 2 s round trip, resident 100 s
    got = current_age(5, NOW - 10, NOW - 2, NOW, NOW + 100)
    # apparent 10, corrected age value 5 + 2 = 7 -> initial 10, + 100
    assert got == 110
    got = current_age(50, NOW - 10, NOW - 2, NOW, NOW + 100)
    assert got == 152


def test_current_age_without_date_rfc9111_4_2_3() -> None:
    assert current_age(None, None, NOW - 1, NOW, NOW + 5) == 6


def test_apparent_age_not_negative_rfc9111_4_2_3() -> None:
    assert current_age(None, NOW + 1000, NOW, NOW, NOW) == 0


def test_age_exceeding_max_age_stale_rfc9111_4_2() -> None:
    life = lifetime(c="max-age=10")
    age = current_age(parse_age(["15"]), NOW, NOW, NOW, NOW)
    assert not is_fresh(life, age)


def test_expires_at_rfc9111_4_2_3() -> None:
    init = initial_age(100, NOW, NOW, NOW)
    at = expires_at(3600, init, NOW)
    assert at == NOW + 3500
    assert is_fresh(3600, current_age(100, NOW, NOW, NOW, at - 1))
    assert not is_fresh(3600, current_age(100, NOW, NOW, NOW, at))


@pytest.mark.parametrize(
    ("life", "age", "fresh"), [(10, 9.9, True), (10, 10, False), (None, 0, False), (0, 0, False)]
)
def test_is_fresh_rfc9111_4_2(life: float | None, age: float, fresh: bool) -> None:
    assert is_fresh(life, age) is fresh


@pytest.mark.parametrize(
    ("resp", "shared", "ok"),
    [
        ("max-age=1", True, True),
        ("max-age=1, must-revalidate", True, False),
        ("max-age=1, no-cache", True, False),
        ("max-age=1, proxy-revalidate", True, False),
        ("max-age=1, proxy-revalidate", False, True),
        ("s-maxage=1", True, False),
    ],
)
def test_stale_allowed_rfc9111_4_2_4(resp: str, shared: bool, ok: bool) -> None:
    assert stale_allowed(cc(resp), shared=shared) is ok


@pytest.mark.parametrize(
    ("life", "age", "req", "resp", "expected"),
    [
        (100, 10, "", "", Reuse.FRESH),
        (100, 100, "", "", Reuse.VALIDATE),
        (100, 10, "", "no-cache", Reuse.VALIDATE),  # §5.2.2.4
        (100, 10, "no-cache", "", Reuse.VALIDATE),  # §5.2.1.4
        (100, 10, "max-age=5", "", Reuse.VALIDATE),  # §5.2.1.1
        (100, 10, "max-age=10", "", Reuse.FRESH),
        (100, 10, "min-fresh=95", "", Reuse.VALIDATE),  # §5.2.1.3
        (100, 10, "min-fresh=50", "", Reuse.FRESH),
        (100, 150, "max-stale=60", "", Reuse.STALE_OK),  # §5.2.1.2
        (100, 150, "max-stale=10", "", Reuse.VALIDATE),
        (100, 10**6, "max-stale", "", Reuse.STALE_OK),
        (100, 150, "max-stale", "must-revalidate", Reuse.VALIDATE),  # §5.2.2.2
    ],
)
def test_reuse_rfc9111_4_and_5_2_1(
    life: float, age: float, req: str, resp: str, expected: Reuse
) -> None:
    assert reuse(life, age, cc(req), cc(resp)) is expected


def test_max_stale_constant_rfc9111_5_2_1_2() -> None:
    assert cc("max-stale").max_stale == MAX_STALE_UNLIMITED


def test_stale_while_revalidate_rfc5861_3() -> None:
    r = cc("max-age=10, stale-while-revalidate=20")
    assert within_stale_while_revalidate(10, 25, r)
    assert not within_stale_while_revalidate(10, 31, r)
    assert not within_stale_while_revalidate(10, 25, cc("max-age=10"))
    assert not within_stale_while_revalidate(
        10, 25, cc("max-age=10, stale-while-revalidate=20, must-revalidate")
    )


def test_stale_if_error_rfc5861_4() -> None:
    r = cc("max-age=10, stale-if-error=60")
    assert within_stale_if_error(10, 60, r, EMPTY_CC)
    assert not within_stale_if_error(10, 80, r, EMPTY_CC)
    assert within_stale_if_error(10, 80, r, cc("stale-if-error=100"))
    assert not within_stale_if_error(10, 20, cc("max-age=10"), EMPTY_CC)
