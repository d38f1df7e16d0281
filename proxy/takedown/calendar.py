"""Business days for the counter-notice put-back window, 17 U.S.C. 512(g)(2)(C).

The provider replaces removed material "not less than 10, nor more than 14, business days
following receipt of the counter notice". Day 0 is the day of receipt; day N is the N-th
business day after it (weekends and configured holidays do not count). The restore runs on day
N at the time of day the counter-notice arrived, so a full N business days have elapsed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    holidays: frozenset[dt.date]
    weekend_days: frozenset[int] = frozenset({5, 6})  # date.weekday(): Mon=0 … Sun=6
    timezone: str = "UTC"

    @classmethod
    def of(
        cls, holidays: Collection[dt.date], weekend_days: Collection[int], timezone: str
    ) -> BusinessCalendar:
        return cls(frozenset(holidays), frozenset(weekend_days), timezone)

    def is_business_day(self, day: dt.date) -> bool:
        return day.weekday() not in self.weekend_days and day not in self.holidays

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


@dataclass(frozen=True, slots=True)
class RestoreWindow:
    received_on: dt.date
    not_before: dt.date
    not_after: dt.date
    restore_at: float  # epoch seconds: day `not_before` at the time of day of receipt


def restore_window(
    cal: BusinessCalendar, received_at: float, not_before_days: int, not_after_days: int
) -> RestoreWindow:
    local = cal.local(received_at)
    first = cal.add_business_days(local.date(), not_before_days)
    last = cal.add_business_days(local.date(), not_after_days)
    at = dt.datetime.combine(first, local.timetz())
    return RestoreWindow(local.date(), first, last, at.timestamp())
