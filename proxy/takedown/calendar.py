"""Business days for the counter-notice put-back window, 17 U.S.C. 512(g)(2)(C).

The provider replaces removed material "not less than 10, nor more than 14, business days
following receipt of the counter notice". Day 0 is the day of receipt; day N is the N-th
business day after it (weekends and holidays do not count). The restore runs on day N at the
time of day the counter-notice arrived, so a full N business days have elapsed.

Holidays come from the `holidays` package for the configured countries (`restore.
holiday_countries`: ISO codes such as "US", "JP", "DE", or "US-NY" for a subdivision), computed
per year when first needed, and from the configured list or file, which overrides them: its
`holidays` are added, its `business_days` are worked even when the package calls them holidays.
Hand-kept lists run out (the example file covered one year), so the calendar knows how far its
data reaches (`known_until`: the package's last year for every configured country, else the
last year the list covers) and a restore window computed past it says so (`RestoreWindow.
beyond_known_data`) and is logged as a warning: a deadline may then ignore a holiday nobody
listed.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

import holidays as holiday_data

log = logging.getLogger("edgeproxy.takedown.calendar")


class UnknownCountry(ValueError):
    """A `holiday_countries` code the `holidays` package does not know."""


def _split(code: str) -> tuple[str, str | None]:
    country, _, subdiv = code.strip().partition("-")
    return country.upper(), (subdiv.upper() or None)


def check_country(code: str) -> None:
    """Raises UnknownCountry naming the code (and, for a subdivision, the country's)."""
    country, subdiv = _split(code)
    supported = holiday_data.list_supported_countries()
    if country not in supported:
        raise UnknownCountry(f"unknown holiday country {code!r} (an ISO 3166-1 alpha-2 code)")
    if subdiv is not None and subdiv not in supported[country]:
        raise UnknownCountry(
            f"unknown subdivision {code!r}; {country} has: {', '.join(supported[country])}"
        )


@functools.lru_cache(maxsize=256)
def _country_year(code: str, year: int) -> frozenset[dt.date]:
    country, subdiv = _split(code)
    return frozenset(holiday_data.country_holidays(country, subdiv=subdiv, years=year))


@functools.lru_cache(maxsize=64)
def _country_end_year(code: str) -> int:
    country, subdiv = _split(code)
    return int(holiday_data.country_holidays(country, subdiv=subdiv).end_year)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    holidays: frozenset[dt.date]
    weekend_days: frozenset[int] = frozenset({5, 6})  # date.weekday(): Mon=0 … Sun=6
    timezone: str = "UTC"
    countries: tuple[str, ...] = ()  # holidays from the `holidays` package
    business_days: frozenset[dt.date] = frozenset()  # worked although a country's holiday

    @classmethod
    def of(
        cls,
        holidays: Collection[dt.date],
        weekend_days: Collection[int],
        timezone: str,
        *,
        countries: Collection[str] = (),
        business_days: Collection[dt.date] = (),
    ) -> BusinessCalendar:
        for code in countries:
            check_country(code)
        return cls(
            frozenset(holidays),
            frozenset(weekend_days),
            timezone,
            tuple(countries),
            frozenset(business_days),
        )

    @classmethod
    def from_policy(cls, policy: RestorePolicy) -> BusinessCalendar:
        """The calendar `[restore]` describes (proxy/takedown/config.py `Restore`)."""
        return cls.of(
            policy.holidays,
            policy.weekend_days,
            policy.timezone,
            countries=policy.holiday_countries,
            business_days=policy.business_days,
        )

    @property
    def known_until(self) -> dt.date | None:
        """The last day the holiday data covers: the earliest last year of the configured
        countries' data, else the last year the list covers; None when there is no holiday
        data at all (a weekends-only calendar, by choice)."""
        if self.countries:
            return dt.date(min(_country_end_year(c) for c in self.countries), 12, 31)
        if self.holidays:
            return dt.date(max(d.year for d in self.holidays), 12, 31)
        return None

    def is_holiday(self, day: dt.date) -> bool:
        if day in self.holidays:
            return True
        if day in self.business_days:
            return False
        return any(day in _country_year(c, day.year) for c in self.countries)

    def is_business_day(self, day: dt.date) -> bool:
        return day.weekday() not in self.weekend_days and not self.is_holiday(day)

    def add_business_days(self, start: dt.date, n: int) -> dt.date:
        """The n-th business day after `start` (start itself never counts)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        day = start
        counted = 0
        while counted < n:
            day += dt.timedelta(days=1)
            if self.is_business_day(day):
                counted += 1
        return day

    def local(self, epoch_s: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch_s, ZoneInfo(self.timezone))


class RestorePolicy(Protocol):
    """What `from_policy` reads of `[restore]`."""

    @property
    def holidays(self) -> list[dt.date]: ...
    @property
    def weekend_days(self) -> list[int]: ...
    @property
    def timezone(self) -> str: ...
    @property
    def holiday_countries(self) -> list[str]: ...
    @property
    def business_days(self) -> list[dt.date]: ...


@dataclass(frozen=True, slots=True)
class RestoreWindow:
    received_on: dt.date
    not_before: dt.date
    not_after: dt.date
    restore_at: float  # epoch seconds: day `not_before` at the time of day of receipt
    # The window reaches past the holiday data (`BusinessCalendar.known_until`): a holiday
    # nobody listed may fall inside it. Logged as a warning when computed.
    beyond_known_data: bool = False
    known_until: dt.date | None = None


def restore_window(
    cal: BusinessCalendar, received_at: float, not_before_days: int, not_after_days: int
) -> RestoreWindow:
    local = cal.local(received_at)
    first = cal.add_business_days(local.date(), not_before_days)
    last = cal.add_business_days(local.date(), not_after_days)
    at = dt.datetime.combine(first, local.timetz())
    known = cal.known_until
    beyond = known is not None and last > known
    if beyond:
        log.warning(
            "restore window %s..%s reaches past the holiday data (known until %s): "
            "add the holidays for %d to the holidays file or set restore.holiday_countries",
            first,
            last,
            known,
            last.year,
        )
    return RestoreWindow(local.date(), first, last, at.timestamp(), beyond, known)
