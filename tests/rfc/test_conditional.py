"""RFC 9110 §13 conditional requests as answered by a cache (RFC 9111 §4.3.2) and sent by it
(§4.3.1); cases follow cache-tests conditional-etag and conditional-lm."""

import pytest

from proxy.rfc.conditional import (
    evaluate_preconditions,
    normalise_etag,
    parse_etags,
    revalidation_headers,
    strong_match,
    weak_match,
)
from proxy.rfc.dates import format_http_date

LM = 1_700_000_000.0
LM_S = format_http_date(LM)
EARLIER = format_http_date(LM - 1000)
LATER = format_http_date(LM + 1000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a"', ['"a"']),
        ('W/"a"', ['W/"a"']),
        ('w/"a"', ['W/"a"']),
        ("abc", ['"abc"']),
        ('"a", W/"b" , "c,d"', ['"a"', 'W/"b"', '"c,d"']),
        (" * ", "*"),
        ("", []),
        ('"unterminated', []),
    ],
)
def test_parse_etags_rfc9110_13_1_2(value: str, expected: object) -> None:
    assert parse_etags(value) == expected


@pytest.mark.parametrize(
    ("a", "b", "strong", "weak"),
    [  # RFC 9110 §8.8.3.2 table
        ('W/"1"', 'W/"1"', False, True),
        ('W/"1"', 'W/"2"', False, False),
        ('W/"1"', '"1"', False, True),
        ('"1"', '"1"', True, True),
        ('"1"', None, False, False),
    ],
)
def test_comparison_rfc9110_8_8_3_2(a: str, b: str | None, strong: bool, weak: bool) -> None:
    assert strong_match(a, b) is strong
    assert weak_match(a, b) is weak


def test_normalise_etag_rfc9110_8_8_3() -> None:
    assert normalise_etag('"x"') == '"x"'
    assert normalise_etag("x") == '"x"'
    assert normalise_etag('"x" junk') is None
    assert normalise_etag(None) is None


def ev(
    method: str = "GET",
    im: str | None = None,
    inm: str | None = None,
    ims: str | None = None,
    ius: str | None = None,
    etag: str | None = '"abcdef"',
    lm: float | None = LM,
    date: float | None = None,
) -> int | None:
    return evaluate_preconditions(method, im, inm, ims, ius, etag, lm, date)


@pytest.mark.parametrize(
    "inm",
    ['"abcdef"', '"1234", "abcdef", "5678"', '"abcdef", "1234"', "*", "abcdef", 'W/"abcdef"'],
)
def test_if_none_match_304_rfc9110_13_1_2(inm: str) -> None:
    assert ev(inm=inm) == 304


def test_if_none_match_weak_stored_rfc9110_13_1_2() -> None:
    assert ev(inm='W/"abcdef"', etag='W/"abcdef"') == 304


def test_if_none_match_no_match_rfc9110_13_1_2() -> None:
    assert ev(inm='"other"') is None


def test_if_none_match_unsafe_method_412_rfc9110_13_1_2() -> None:
    assert ev(method="POST", inm='"abcdef"') == 412


def test_if_none_match_precedence_over_ims_rfc9110_13_2_2() -> None:
    assert ev(inm='"abcdef"', ims=EARLIER) == 304  # IMS would say "modified"
    assert ev(inm='"nope"', ims=LATER) is None  # IMS ignored when INM present


@pytest.mark.parametrize(("ims", "expected"), [(LM_S, 304), (LATER, 304), (EARLIER, None)])
def test_if_modified_since_rfc9110_13_1_3(ims: str, expected: int | None) -> None:
    assert ev(ims=ims) == expected


def test_ims_rfc850_form_rfc9110_13_1_3() -> None:
    rfc850 = "Tuesday, 14-Nov-23 22:13:20 GMT"
    assert ev(ims=rfc850) == 304


@pytest.mark.parametrize("ims", ["garbage", f"{LM_S}, {LM_S}"])
def test_invalid_ims_ignored_rfc9110_13_1_3(ims: str) -> None:
    assert ev(ims=ims) is None


def test_ims_only_get_head_rfc9110_13_1_3() -> None:
    assert ev(method="HEAD", ims=LM_S) == 304
    assert ev(method="POST", ims=LM_S) is None


def test_ims_uses_date_without_last_modified_rfc9111_4_3_2() -> None:
    assert ev(ims=LM_S, lm=None, date=LM - 5) == 304
    assert ev(ims=LM_S, lm=None, date=LM + 5) is None
    assert ev(ims=LM_S, lm=None, date=None) is None


@pytest.mark.parametrize(
    ("im", "etag", "expected"),
    [
        ('"abcdef"', '"abcdef"', None),
        ("*", '"abcdef"', None),
        ('"x", "abcdef"', '"abcdef"', None),
        ('"x"', '"abcdef"', 412),
        ('W/"abcdef"', 'W/"abcdef"', 412),  # strong comparison
        ('"abcdef"', None, 412),
    ],
)
def test_if_match_rfc9110_13_1_1(im: str, etag: str | None, expected: int | None) -> None:
    assert ev(im=im, etag=etag) == expected


@pytest.mark.parametrize(
    ("ius", "expected"), [(EARLIER, 412), (LM_S, None), (LATER, None), ("garbage", None)]
)
def test_if_unmodified_since_rfc9110_13_1_4(ius: str, expected: int | None) -> None:
    assert ev(ius=ius) == expected


def test_ius_ignored_with_if_match_rfc9110_13_2_2() -> None:
    assert ev(im='"abcdef"', ius=EARLIER) is None


def test_ius_ignored_without_last_modified_rfc9110_13_1_4() -> None:
    assert ev(ius=EARLIER, lm=None) is None


def test_if_match_failure_beats_if_none_match_rfc9110_13_2_2() -> None:
    assert ev(im='"x"', inm='"abcdef"') == 412


def test_revalidation_headers_rfc9111_4_3_1() -> None:
    assert revalidation_headers('"abcdef"', LM_S) == [
        ("If-None-Match", '"abcdef"'),
        ("If-Modified-Since", LM_S),
    ]
    assert revalidation_headers('W/"a"', None) == [("If-None-Match", 'W/"a"')]
    assert revalidation_headers("abcdef", None) == [("If-None-Match", '"abcdef"')]
    assert revalidation_headers(None, "not a date") == []
    assert revalidation_headers(None, None) == []


def test_normalise_etag_shortcut_gives_the_scan_s_answer() -> None:
    """A strong tag as sent is returned without the scan (issue 18): on many spellings the
    answer is the scan's."""
    import itertools

    from proxy.rfc.conditional import _scan_tag

    def scanned(value: str) -> str | None:
        tag, end = _scan_tag(value, 0)
        return tag if tag is not None and end == len(value) else None

    parts = ['"', "W/", "w/", "x", " ", "\t", ",", '""', "é", "a b"]
    for n in range(1, 5):
        for combo in itertools.product(parts, repeat=n):
            value = "".join(combo)
            assert normalise_etag(value) == scanned(value), value
