"""RFC 9110 §5.6.7 HTTP-date."""

import pytest

from proxy.rfc.dates import format_http_date, parse_http_date

T = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
        "Sun Nov 06 08:49:37 1994",
        "SUN, 06 NOV 1994 08:49:37 gmt",  # names case-insensitively (robustness)
        " Sun, 06 Nov 1994 08:49:37 GMT ",
    ],
)
def test_three_formats_rfc9110_5_6_7(value: str) -> None:
    assert parse_http_date(value) == T


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "",
        "-1",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18  Aug  2050 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02.01.18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
        "Thu, 31 Feb 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 24:01:18 GMT",
        "Xyz, 18 Aug 2050 02:01:18 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
    ],
)
def test_invalid_dates_rfc9110_5_6_7(value: str) -> None:
    assert parse_http_date(value) is None


def test_rfc850_two_digit_year_window_rfc9110_5_6_7() -> None:
    now = parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT")
    assert now is not None
    # "80" would be 2080, more than 50 years ahead of 2024: read as 1980
    got80 = parse_http_date("Tuesday, 01-Jan-80 00:00:00 GMT", now=now)
    assert got80 == parse_http_date("Tue, 01 Jan 1980 00:00:00 GMT")
    got = parse_http_date("Friday, 01-Jan-60 00:00:00 GMT", now=now)
    assert got == parse_http_date("Thu, 01 Jan 2060 00:00:00 GMT")


def test_leap_second_accepted_rfc9110_5_6_7() -> None:
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") is not None


@pytest.mark.parametrize("t", [0.0, T, T + 0.9, 1700000000.0, 253402300799.0])
def test_format_roundtrip_rfc9110_5_6_7(t: float) -> None:
    text = format_http_date(t)
    assert text.endswith(" GMT") and len(text) == 29
    assert parse_http_date(text) == float(int(t))


def test_format_exact_rfc9110_5_6_7() -> None:
    assert format_http_date(T) == "Sun, 06 Nov 1994 08:49:37 GMT"
