"""RFC 9111 §5.2 Cache-Control parsing (cases follow http-tests/cache-tests cc-parse)."""

import pytest

from proxy.rfc.cachecontrol import (
    DELTA_SECONDS_MAX,
    EMPTY_CC,
    MAX_STALE_UNLIMITED,
    parse_cache_control,
    parse_delta_seconds,
)


@pytest.mark.parametrize(
    ("values", "max_age"),
    [
        (["max-age=3600"], 3600),
        (['max-age="3600"'], 3600),  # §5.2: accept the quoted-string form
        (["MaX-AgE=3600"], 3600),  # §5.2: names are case-insensitive
        (["max-age=003600"], 3600),
        (["foobar, max-age=3600"], 3600),  # §5.2.3: unknown extensions ignored
        (['extension="max-age=100", max-age=1'], 1),  # quoted text is not a directive
        (['max-age=1, extension="max-age=100"'], 1),
        (['extension="a, max-age=100", max-age=1'], 1),
        (["max-age=1800, max-age=1"], 1800),  # §4.2.1: first occurrence
        (["max-age=1", "max-age=1800"], 1),  # several field lines are one list
        ([" , ,max-age=5 ,"], 5),  # RFC 9110 §5.6.1 empty list elements
        (["max-age=2147483648"], DELTA_SECONDS_MAX),
        (["max-age=99999999999"], DELTA_SECONDS_MAX),  # §1.2.2 overflow cap
        (["max-age=0"], 0),
    ],
)
def test_max_age_rfc9111_5_2_2_1(values: list[str], max_age: int) -> None:
    cc = parse_cache_control(values)
    assert cc.max_age == max_age
    assert not cc.invalid_freshness


@pytest.mark.parametrize(
    "value",
    [
        "max-age=a100",
        "max-age=100a",
        "max-age=-100",
        "max-age=3600.0",
        "max-age='3600'",
        "max-age =3600",
        "max-age= 3600",
        "max-age=",
        'max-age="60',
        "max-age=60, max-age=abc",
    ],
)
def test_invalid_max_age_is_stale_rfc9111_4_2_1(value: str) -> None:
    cc = parse_cache_control([value])
    assert cc.max_age is None
    assert cc.invalid_max_age and cc.invalid_freshness
    assert cc.has_explicit_freshness


def test_invalid_s_maxage_flag_rfc9111_5_2_2_10() -> None:
    cc = parse_cache_control(["s-maxage=x, max-age=60"])
    assert cc.invalid_s_maxage and cc.invalid_freshness and not cc.invalid_max_age
    assert cc.max_age == 60 and cc.s_maxage is None


@pytest.mark.parametrize(
    ("value", "attr"),
    [
        ("no-store", "no_store"),
        ("No-StOrE", "no_store"),
        ("no-cache", "no_cache"),
        ("private", "private"),
        ("public", "public"),
        ("must-revalidate", "must_revalidate"),
        ("proxy-revalidate", "proxy_revalidate"),
        ("must-understand", "must_understand"),
        ("no-transform", "no_transform"),
        ("immutable", "immutable"),
        ("only-if-cached", "only_if_cached"),
    ],
)
def test_boolean_directives_rfc9111_5_2(value: str, attr: str) -> None:
    assert getattr(parse_cache_control([value]), attr) is True
    assert getattr(EMPTY_CC, attr) is False


def test_qualified_no_cache_rfc9111_5_2_2_4() -> None:
    cc = parse_cache_control(['no-cache="Set-Cookie, a", max-age=60'])
    assert cc.no_cache is False
    assert cc.no_cache_fields == ("set-cookie", "a")
    assert cc.max_age == 60


def test_qualified_no_cache_token_form_rfc9111_5_2_2_4() -> None:
    assert parse_cache_control(["no-cache=a"]).no_cache_fields == ("a",)


def test_qualified_and_unqualified_no_cache_rfc9111_5_2_2_4() -> None:
    cc = parse_cache_control(['no-cache="a"', "no-cache"])
    assert cc.no_cache and cc.no_cache_fields == ("a",)


def test_qualified_private_rfc9111_5_2_2_7() -> None:
    cc = parse_cache_control(['private="x-user"'])
    assert cc.private is False and cc.private_fields == ("x-user",)


def test_empty_qualified_private_is_unqualified_rfc9111_5_2_2_7() -> None:
    assert parse_cache_control(['private=""']).private is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-stale", MAX_STALE_UNLIMITED),
        ("max-stale=30", 30),
        ("max-stale=abc", None),
    ],
)
def test_request_max_stale_rfc9111_5_2_1_2(value: str, expected: int | None) -> None:
    assert parse_cache_control([value]).max_stale == expected


def test_request_min_fresh_rfc9111_5_2_1_3() -> None:
    assert parse_cache_control(["min-fresh=20"]).min_fresh == 20


def test_stale_extensions_rfc5861() -> None:
    cc = parse_cache_control(["stale-while-revalidate=30, stale-if-error=600"])
    assert cc.stale_while_revalidate == 30 and cc.stale_if_error == 600
    assert parse_cache_control(["stale-while-revalidate=-1"]).stale_while_revalidate is None


@pytest.mark.parametrize("values", [[], [""], ["  "], [",,"]])
def test_empty_rfc9111_5_2(values: list[str]) -> None:
    assert parse_cache_control(values) == EMPTY_CC


def test_s_maxage_rfc9111_5_2_2_10() -> None:
    cc = parse_cache_control(["max-age=3600, s-maxage=1"])
    assert cc.s_maxage == 1 and cc.max_age == 3600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("12", 12),
        ("2147483649", DELTA_SECONDS_MAX),
        ("", None),
        ("1e3", None),
        ("+1", None),
        ("١٢", None),
    ],
)
def test_delta_seconds_rfc9111_1_2_2(text: str, expected: int | None) -> None:
    assert parse_delta_seconds(text) == expected
