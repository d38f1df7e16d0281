"""The restore window's business-day calendar (issue 17): public holidays from the `holidays`
package for the configured countries, the configured list and file as overrides, and a warning
when a window reaches past the holiday data."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import msgspec
import pytest

from proxy.takedown import config
from proxy.takedown.calendar import BusinessCalendar, UnknownCountry, restore_window

D = dt.date


def _at(day: dt.date, hour: int = 10) -> float:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("country", "holiday"),
    [
        ("US", D(2031, 11, 27)),  # Thanksgiving, a year no hand-kept file covered
        ("JP", D(2031, 5, 5)),  # Children's Day
        ("DE", D(2031, 10, 3)),  # German Unity Day
        ("FR", D(2031, 7, 14)),  # Bastille Day
        ("US-NY", D(2031, 2, 12)),  # Lincoln's Birthday: New York only
    ],
)
def test_country_holidays_come_from_the_package(country: str, holiday: dt.date) -> None:
    cal = BusinessCalendar.of([], [5, 6], "UTC", countries=[country])
    assert holiday.weekday() < 5 and not cal.is_business_day(holiday)
    assert BusinessCalendar.of([], [5, 6], "UTC").is_business_day(holiday)


def test_a_country_holiday_moves_the_restore_window() -> None:
    # Received Monday 2031-11-17: the tenth business day is Monday Dec 1, or Tuesday Dec 2
    # with Thanksgiving (Thursday Nov 27) counted as a holiday.
    plain = BusinessCalendar.of([], [5, 6], "UTC")
    us = BusinessCalendar.of([], [5, 6], "UTC", countries=["US"])
    assert restore_window(plain, _at(D(2031, 11, 17)), 10, 14).not_before == D(2031, 12, 1)
    w = restore_window(us, _at(D(2031, 11, 17)), 10, 14)
    assert w.not_before == D(2031, 12, 2) and not w.beyond_known_data


def test_the_file_overrides_the_package_both_ways() -> None:
    thanksgiving, company_day = D(2031, 11, 27), D(2031, 11, 26)
    cal = BusinessCalendar.of(
        [company_day], [5, 6], "UTC", countries=["US"], business_days=[thanksgiving]
    )
    assert cal.is_business_day(thanksgiving) and not cal.is_business_day(company_day)
    assert not cal.is_business_day(D(2031, 12, 25))  # the package's other holidays still count


def test_a_window_past_a_hand_kept_list_warns(caplog: pytest.LogCaptureFixture) -> None:
    cal = BusinessCalendar.of([D(2026, 1, 1), D(2026, 12, 25)], [5, 6], "UTC")
    assert cal.known_until == D(2026, 12, 31)
    with caplog.at_level(logging.WARNING, logger="edgeproxy.takedown.calendar"):
        inside = restore_window(cal, _at(D(2026, 11, 2)), 10, 14)
        assert not inside.beyond_known_data and not caplog.records
        # Received Dec 16: day 14 is in January 2027, which the list does not cover.
        past = restore_window(cal, _at(D(2026, 12, 16)), 10, 14)
    assert past.beyond_known_data and past.known_until == D(2026, 12, 31)
    assert past.not_after.year == 2027
    [record] = caplog.records
    assert "past the holiday data (known until 2026-12-31)" in record.getMessage()
    assert "2027" in record.getMessage()


def test_a_window_past_the_package_data_warns(caplog: pytest.LogCaptureFixture) -> None:
    cal = BusinessCalendar.of([], [5, 6], "UTC", countries=["US", "JP"])
    end = cal.known_until
    assert end is not None and end.year >= 2099  # the earlier of the two countries' data
    with caplog.at_level(logging.WARNING, logger="edgeproxy.takedown.calendar"):
        w = restore_window(cal, _at(end - dt.timedelta(days=3)), 10, 14)
    assert w.beyond_known_data and caplog.records


def test_no_holiday_data_is_a_weekends_only_calendar_without_warnings() -> None:
    cal = BusinessCalendar.of([], [5, 6], "UTC")
    assert cal.known_until is None
    assert not restore_window(cal, _at(D(2040, 1, 2)), 10, 14).beyond_known_data


def test_config_loads_countries_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(
        "holidays = [2031-11-26]\nbusiness_days = [2031-11-27]\n", encoding="utf-8"
    )
    (tmp_path / "t.toml").write_text(
        '[restore]\nholiday_countries = ["JP", "US-NY"]\nholidays_file = "h.toml"\n',
        encoding="utf-8",
    )
    cfg = config.load(tmp_path / "t.toml")
    assert cfg.restore.holiday_countries == ["JP", "US-NY"]
    assert cfg.restore.holidays == [D(2031, 11, 26)]
    assert cfg.restore.business_days == [D(2031, 11, 27)]
    cal = BusinessCalendar.from_policy(cfg.restore)
    assert not cal.is_business_day(D(2031, 5, 5)) and cal.is_business_day(D(2031, 11, 27))


@pytest.mark.parametrize(
    ("code", "why"),
    [("XX", "unknown holiday country 'XX'"), ("US-ZZ", "unknown subdivision 'US-ZZ'")],
)
def test_an_unknown_country_fails_the_load_naming_it(tmp_path: Path, code: str, why: str) -> None:
    (tmp_path / "t.toml").write_text(
        f'[restore]\nholiday_countries = ["{code}"]\n', encoding="utf-8"
    )
    with pytest.raises(msgspec.ValidationError, match=why):
        config.load(tmp_path / "t.toml")
    with pytest.raises(UnknownCountry):
        BusinessCalendar.of([], [5, 6], "UTC", countries=[code])


def test_the_example_config_uses_the_package_with_its_file() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = config.load(root / "config" / "takedown.example.toml")
    cal = BusinessCalendar.from_policy(cfg.restore)
    assert cfg.restore.holiday_countries == ["US"]
    assert cal.known_until is not None and cal.known_until.year > 2026
    assert not cal.is_business_day(D(2030, 7, 4))  # years past the file's 2026
