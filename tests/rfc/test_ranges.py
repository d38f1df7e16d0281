"""RFC 9110 §14 range requests served from a complete stored representation (cases follow
cache-tests partial)."""

import pytest

from proxy.rfc.dates import format_http_date
from proxy.rfc.ranges import (
    coalesce_ranges,
    content_range,
    if_range_allows,
    multipart_byteranges,
    parse_range,
    unsatisfied_content_range,
)


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        ("bytes=0-1", 11, [(0, 1)]),
        ("bytes=1-", 11, [(1, 10)]),  # §14.1.2 absent last-pos
        ("bytes=-1", 11, [(10, 10)]),  # suffix-range
        ("bytes=-500", 11, [(0, 10)]),  # suffix longer than representation
        ("bytes=5-500", 11, [(5, 10)]),  # last-pos clamped
        ("BYTES=0-0", 11, [(0, 0)]),  # unit is case-insensitive
        ("bytes=0-1, 4-5", 11, [(0, 1), (4, 5)]),
        ("bytes= 0-1 ,, 4-5 ", 11, [(0, 1), (4, 5)]),
        ("bytes=0-1, 20-30", 11, [(0, 1)]),  # unsatisfiable member dropped
        ("bytes=10-10", 11, [(10, 10)]),
    ],
)
def test_satisfiable_rfc9110_14_1_2(value: str, length: int, expected: object) -> None:
    assert parse_range(value, length) == expected


@pytest.mark.parametrize(
    ("value", "length"),
    [("bytes=11-", 11), ("bytes=20-30", 11), ("bytes=-0", 11), ("bytes=0-1", 0)],
)
def test_unsatisfiable_rfc9110_14_1_1(value: str, length: int) -> None:
    assert parse_range(value, length) == "unsatisfiable"


@pytest.mark.parametrize(
    "value",
    [
        "items=0-1",  # other unit
        "bytes",
        "bytes=",
        "bytes=a-b",
        "bytes=5-1",  # last < first: invalid
        "bytes=1",
        "bytes=--1",
        "bytes=-1-2",
        "bytes=0-1,x",
        "bytes=+1-2",
    ],
)
def test_ignored_rfc9110_14_2(value: str) -> None:
    assert parse_range(value, 11) is None


def test_too_many_ranges_ignored_rfc9110_14_2() -> None:
    many = "bytes=" + ",".join(f"{i}-{i}" for i in range(17))
    assert parse_range(many, 100) is None
    assert parse_range(many, 100, max_ranges=20) is not None


def test_zero_length_suffix_serves_whole_rfc9110_14_1_1() -> None:
    assert parse_range("bytes=-5", 0) is None


def test_content_range_rfc9110_14_4() -> None:
    assert content_range(0, 1, 11) == "bytes 0-1/11"
    assert unsatisfied_content_range(11) == "bytes */11"


LM = 1_700_000_000.0


@pytest.mark.parametrize(
    ("if_range", "etag", "lm", "date", "ok"),
    [
        (None, None, None, None, True),
        ('"a"', '"a"', None, None, True),
        ('"a"', '"b"', None, None, False),
        ('W/"a"', 'W/"a"', None, None, False),  # weak never matches strongly
        ('"a"', 'W/"a"', None, None, False),
        (format_http_date(LM), None, LM, None, True),
        (format_http_date(LM), None, LM, LM + 10, True),
        (format_http_date(LM), None, LM, LM, False),  # Last-Modified not strong
        (format_http_date(LM + 1), None, LM, None, False),  # exact match only
        (format_http_date(LM), None, None, None, False),
        ("garbage", '"a"', LM, None, False),
    ],
)
def test_if_range_rfc9110_13_1_5(
    if_range: str | None, etag: str | None, lm: float | None, date: float | None, ok: bool
) -> None:
    assert if_range_allows(if_range, etag, lm, date=date) is ok


def test_coalesce_merges_overlapping_and_touching_ranges_in_order_rfc9110_s14_6() -> None:
    assert coalesce_ranges([(5, 6), (0, 1)]) == [(0, 1), (5, 6)]
    assert coalesce_ranges([(0, 3), (2, 5), (6, 6)]) == [(0, 6)]
    assert coalesce_ranges([(0, 9)] * 16) == [(0, 9)]
    assert coalesce_ranges([(4, 4)]) == [(4, 4)]


def test_multipart_byteranges_rfc9110_s14_6() -> None:
    body = multipart_byteranges(b"0123456789", [(0, 1), (8, 9)], b"XYZ", b"text/plain")
    assert body == (
        b"\r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01"
        b"\r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89"
        b"\r\n--XYZ--\r\n"
    )
    untyped = multipart_byteranges(b"abc", [(0, 0), (2, 2)], b"B", None)
    assert b"Content-Type" not in untyped and untyped.endswith(b"c\r\n--B--\r\n")
