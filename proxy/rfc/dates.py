"""HTTP-date, RFC 9110 §5.6.7.

Accepted forms: IMF-fixdate, the obsolete RFC 850 form and asctime. Day and month names and
"GMT" are matched case-insensitively (§5.6.7 encourages robustness); everything else is strict:
wrong separators, two-digit years outside rfc850-date, "UTC", out-of-range fields → None.
"""

from __future__ import annotations

import calendar
import time
from functools import lru_cache

__all__ = ["format_http_date", "parse_http_date"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_NAMES = frozenset(d.lower() for d in _DAYS)
_LONG_DAYS = frozenset(
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUM = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)}


def _digits(s: str, n: int) -> int | None:
    if len(s) != n or not s.isascii() or not s.isdigit():
        return None
    return int(s)


def _time_of_day(s: str) -> tuple[int, int, int] | None:
    parts = s.split(":")
    if len(parts) != 3:
        return None
    h, m, sec = (_digits(p, 2) for p in parts)
    if h is None or m is None or sec is None or h > 23 or m > 59 or sec > 60:
        return None
    return h, m, sec


def _build(year: int, month: int, day: int, tod: tuple[int, int, int]) -> float | None:
    if year < 1 or not 1 <= month <= 12:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return float(calendar.timegm((year, month, day, tod[0], tod[1], tod[2], 0, 0, 0)))


def _rfc850_year(yy: int, now: float | None) -> int:
    """§5.6.7: a two-digit year more than 50 years in the future is in the past century."""
    current = time.gmtime(now).tm_year if now is not None else 2000
    year = current - current % 100 + yy
    if year > current + 50:
        year -= 100
    return year


@lru_cache(maxsize=1024)
def _parse(value: str, now: float | None) -> float | None:
    v = value.strip(" \t")
    if "," in v:
        day_name, _, rest = v.partition(",")
        if not rest.startswith(" "):
            return None
        parts = rest[1:].split(" ")
        dn = day_name.lower()
        if dn in _DAY_NAMES and len(parts) == 5:
            # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
            day, mon, year, tod_s, gmt = parts
            d = _digits(day, 2)
            m = _MONTH_NUM.get(mon.lower())
            y = _digits(year, 4)
            tod = _time_of_day(tod_s)
            if d is None or m is None or y is None or tod is None or gmt.lower() != "gmt":
                return None
            return _build(y, m, d, tod)
        if dn in _LONG_DAYS and len(parts) == 3:
            # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
            date_s, tod_s, gmt = parts
            dparts = date_s.split("-")
            if len(dparts) != 3 or gmt.lower() != "gmt":
                return None
            d = _digits(dparts[0], 2)
            m = _MONTH_NUM.get(dparts[1].lower())
            yy = _digits(dparts[2], 2)
            tod = _time_of_day(tod_s)
            if d is None or m is None or yy is None or tod is None:
                return None
            return _build(_rfc850_year(yy, now), m, d, tod)
        return None
    # asctime-date: Sun Nov  6 08:49:37 1994
    parts = v.split(" ")
    if len(parts) == 6 and parts[2] == "":
        parts = [parts[0], parts[1], parts[3], parts[4], parts[5]]
        single_digit = True
    else:
        single_digit = False
    if len(parts) != 5 or parts[0].lower() not in _DAY_NAMES:
        return None
    m = _MONTH_NUM.get(parts[1].lower())
    d = _digits(parts[2], 1 if single_digit else 2)
    tod = _time_of_day(parts[3])
    y = _digits(parts[4], 4)
    if m is None or d is None or tod is None or y is None:
        return None
    return _build(y, m, d, tod)


def parse_http_date(value: str, *, now: float | None = None) -> float | None:
    """POSIX seconds for an HTTP-date (RFC 9110 §5.6.7), or None when it is not one.

    ``now`` only matters for the two-digit years of rfc850-date; without it, years are read
    within 50 years of 2000.
    """
    if not value or len(value) > 64:
        return None
    return _parse(value, None if now is None else float(int(now) // 86400 * 86400))


def format_http_date(t: float) -> str:
    """IMF-fixdate for POSIX seconds ``t`` (fraction truncated), RFC 9110 §5.6.7."""
    g = time.gmtime(int(t))
    return (
        f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year:04d} "
        f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT"
    )
