"""RFC 9213 targeted cache control (cases follow cache-tests cdn-cache-control)."""

import pytest

from proxy.rfc.cachecontrol import MAX_STALE_UNLIMITED
from proxy.rfc.targeted import parse_targeted, select_cache_control

CDN = "cdn-cache-control"
OURS = "edgeproxy-cache-control"


def test_targeted_replaces_cache_control_rfc9213_2_2() -> None:
    cc, src = select_cache_control(["no-store"], [(CDN, ["max-age=10000"])])
    assert src == CDN and cc.max_age == 10000 and not cc.no_store


def test_targeted_no_store_wins_over_fresh_cc_rfc9213_2_2() -> None:
    cc, src = select_cache_control(["max-age=10000"], [(CDN, ["no-store"])])
    assert src == CDN and cc.no_store and cc.max_age is None


def test_short_targeted_beats_long_cc_rfc9213_2_2() -> None:
    cc, _ = select_cache_control(["max-age=3600"], [(CDN, ["max-age=1"])])
    assert cc.max_age == 1


def test_priority_order_rfc9213_2_2() -> None:
    cc, src = select_cache_control(["max-age=1"], [(OURS, ["max-age=5"]), (CDN, ["max-age=9"])])
    assert (src, cc.max_age) == (OURS, 5)


def test_absent_first_falls_to_second_rfc9213_2_2() -> None:
    cc, src = select_cache_control(["max-age=1"], [(OURS, []), (CDN, ["max-age=9"])])
    assert (src, cc.max_age) == (CDN, 9)


@pytest.mark.parametrize(
    "value",
    ["max-age=10000, &&&&&", "MaX-aGe=3600", "max-age =100", "max-age= 100", "", "   "],
)
def test_invalid_or_empty_field_ignored_rfc9213_2_1(value: str) -> None:
    cc, src = select_cache_control(["no-store"], [(CDN, [value])])
    assert src == "cache-control" and cc.no_store


@pytest.mark.parametrize("value", ['max-age="10000"', "max-age=1.5", "max-age=-1", "max-age=?1"])
def test_wrong_type_max_age_not_consumed_rfc9213_2_1(value: str) -> None:
    cc = parse_targeted(value)
    assert cc is not None and cc.max_age is None and cc.invalid_max_age


def test_overflow_capped_rfc9111_1_2_2() -> None:
    cc = parse_targeted("max-age=99999999999")
    assert cc is not None and cc.max_age == 2147483648


def test_extension_ignored_rfc9213_2_1() -> None:
    cc = parse_targeted("foobar, max-age=3600")
    assert cc is not None and cc.max_age == 3600


def test_params_ignored_rfc9213_2_1() -> None:
    cc = parse_targeted("max-age=60;foo=bar, private;x")
    assert cc is not None and cc.max_age == 60 and cc.private


def test_qualified_private_string_rfc9213_2_1() -> None:
    cc = parse_targeted('private="set-cookie, x"')
    assert cc is not None and not cc.private and cc.private_fields == ("set-cookie", "x")


@pytest.mark.parametrize("value", ["no-store=?0", "public=?0"])
def test_false_boolean_is_absent_rfc9213_2_1(value: str) -> None:
    cc = parse_targeted(value)
    assert cc is not None and not cc.no_store and not cc.public


@pytest.mark.parametrize("value", ["no-store=1", "private=5", "no-cache=tok"])
def test_restrictive_wrong_type_still_restricts_rfc9213_2_1(value: str) -> None:
    cc = parse_targeted(value)
    assert cc is not None and (cc.no_store or cc.private or cc.no_cache)


def test_public_wrong_type_ignored_rfc9213_2_1() -> None:
    cc = parse_targeted("public=1")
    assert cc is not None and not cc.public


def test_multiple_lines_combined_rfc8941_4_2() -> None:
    cc, _ = select_cache_control([], [(CDN, ["max-age=60", "must-revalidate"])])
    assert cc.max_age == 60 and cc.must_revalidate


def test_stale_directives_rfc9213_2_1() -> None:
    cc = parse_targeted("stale-while-revalidate=10, stale-if-error=20, max-stale")
    assert cc is not None
    assert (cc.stale_while_revalidate, cc.stale_if_error) == (10, 20)
    assert cc.max_stale == MAX_STALE_UNLIMITED


def test_no_targeted_uses_cache_control_rfc9111_5_2() -> None:
    cc, src = select_cache_control(["max-age=7"], [])
    assert (cc.max_age, src) == (7, "cache-control")


def test_must_understand_wrong_type_ignored_rfc9213_2_1() -> None:
    cc = parse_targeted("must-understand=1, no-store")
    assert cc is not None and not cc.must_understand and cc.no_store
