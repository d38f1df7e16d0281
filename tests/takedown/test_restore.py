"""Counter-notice (17 U.S.C. 512(g)): business-day window, lawsuit hold, restore published."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import msgspec

from proxy.takedown.calendar import BusinessCalendar, restore_window
from proxy.takedown.config import Restore
from tests.takedown.conftest import T0, MakeEnv, fast_config, notice

MLK_DAY = dt.date(2026, 1, 19)


def counter(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "subscriber": {
            "name": "Site Owner",
            "address": "2 Side St",
            "phone": "+1 555 0199",
            "email": "owner@cdn.example",
        },
        "material": [{"url": "https://cdn.example/a.mp3"}],
        "statements": {
            "good_faith_mistake": True,
            "consent_to_jurisdiction": True,
            "accept_service": True,
        },
        "signature": "S. Owner",
    }
    doc.update(over)
    return doc


def test_business_days_skip_weekends_and_holidays() -> None:
    cal = BusinessCalendar.of([MLK_DAY], [5, 6], "UTC")
    w = restore_window(cal, T0, 10, 14)  # Monday 2026-01-05 10:00
    assert (w.not_before, w.not_after) == (dt.date(2026, 1, 20), dt.date(2026, 1, 26))
    assert w.restore_at == dt.datetime(2026, 1, 20, 10, tzinfo=dt.UTC).timestamp()
    plain = restore_window(BusinessCalendar.of([], [5, 6], "UTC"), T0, 10, 14)
    assert (plain.not_before, plain.not_after) == (dt.date(2026, 1, 19), dt.date(2026, 1, 23))
    saturday = dt.datetime(2026, 1, 10, 9, tzinfo=dt.UTC).timestamp()
    assert restore_window(cal, saturday, 10, 14).not_before == dt.date(2026, 1, 26)
    tokyo = BusinessCalendar.of([], [5, 6], "Asia/Tokyo")  # 10:00 UTC is 19:00 in Tokyo
    friday_late = dt.datetime(2026, 1, 9, 16, tzinfo=dt.UTC).timestamp()  # Sat 01:00 JST
    assert restore_window(tokyo, friday_late, 10, 14).not_before == dt.date(2026, 1, 23)


async def _enforced_case(env: Any) -> int:
    _, body = await env.post("/notices", "trusted", notice())
    await env.wait_state(body["case"], "enforced")
    return int(body["case"])


def _holiday_config() -> Any:
    cfg = fast_config()
    return msgspec.structs.replace(cfg, restore=Restore(holidays=[MLK_DAY]))


async def test_counter_notice_schedules_restore_which_publishes_deletes(
    make_env: MakeEnv,
) -> None:
    env = await make_env(cfg=_holiday_config())
    case = await _enforced_case(env)
    status, out = await env.post(f"/cases/{case}/counter-notice", "admin", counter())
    assert status == 201 and out["state"] == "restore_scheduled"
    assert out["restore"]["not_before"] == "2026-01-20"
    assert out["restore"]["not_after"] == "2026-01-26"
    assert out["restore"]["beyond_known_holidays"] is False
    env.clock.now = out["restore"]["restore_at"] - 1
    await env.svc.run_due()
    await asyncio.sleep(0.05)
    assert all(e.entries for e in env.edges)  # not a second early
    env.clock.advance(1)
    await env.svc.run_due()
    view = await env.wait_state(case, "restored")
    assert all(not e.entries for e in env.edges)
    for e in env.edges:
        assert [m for m, _ in e.log] == ["POST", "DELETE"]
    assert {d["edge"] for d in view["restore_edges"]} == {e.url for e in env.edges}
    assert all(d["version"] == 2 for d in view["restore_edges"])
    events = [e["event"] for e in view["timeline"]]
    for want in (
        "counter_notice",
        "restore_scheduled",
        "counter_notice_forwarded",
        "strike_tolled",
        "restore_due",
        "edge_restored",
        "restored",
    ):
        assert want in events, want
    assert view["restore"]["restored_at"] == out["restore"]["restore_at"]


async def test_a_window_past_the_holiday_data_is_flagged_on_the_case(make_env: MakeEnv) -> None:
    """Holidays known through 2026 only: a counter-notice in late December gets a window in
    2027, and the case says the count may miss a holiday (issue 17)."""
    env = await make_env(cfg=_holiday_config(), n_edges=1)
    env.clock.now = dt.datetime(2026, 12, 21, 10, tzinfo=dt.UTC).timestamp()
    case = await _enforced_case(env)
    status, out = await env.post(f"/cases/{case}/counter-notice", "admin", counter())
    assert status == 201
    assert out["restore"]["beyond_known_holidays"] is True
    assert out["restore"]["holidays_known_until"] == "2026-12-31"
    status, view = await env.get(f"/cases/{case}", "admin")
    assert status == 200
    scheduled = [e for e in view["timeline"] if e["event"] == "restore_scheduled"]
    assert scheduled and "beyond_known_holidays" in str(scheduled[0])


async def test_lawsuit_cancels_the_restore(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    case = await _enforced_case(env)
    _, out = await env.post(f"/cases/{case}/counter-notice", "operator", counter())
    status, _ = await env.post(f"/cases/{case}/lawsuit", "submitter2", {"court": "x"})
    assert status == 403  # not the complainant
    status, held = await env.post(
        f"/cases/{case}/lawsuit", "trusted", {"court": "N.D. Cal.", "docket": "5:26-cv-1"}
    )
    assert status == 200 and held["state"] == "litigation_hold"
    env.clock.now = out["restore"]["restore_at"] + 86400
    await env.svc.run_due()
    await asyncio.sleep(0.05)
    _, view = await env.get(f"/cases/{case}")
    assert view["state"] == "litigation_hold" and view["restore"]["state"] == "cancelled"
    assert env.edges[0].entries and [m for m, _ in env.edges[0].log] == ["POST"]


async def test_incomplete_counter_notice_lists_missing_elements(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    case = await _enforced_case(env)
    doc = counter(statements={"good_faith_mistake": True})
    del doc["subscriber"]["phone"]
    status, out = await env.post(f"/cases/{case}/counter-notice", "admin", doc)
    assert status == 422
    assert out["missing"] == [
        "subscriber.phone",
        "statements.consent_to_jurisdiction",
        "statements.accept_service",
    ]
    _, view = await env.get(f"/cases/{case}")
    assert view["state"] == "enforced" and view["restore"] is None
    _, pending = await env.post("/notices", "submitter", notice({"url": "https://cdn.example/z"}))
    status, _ = await env.post(f"/cases/{pending['case']}/counter-notice", "admin", counter())
    assert status == 409  # nothing was removed yet


def test_example_config_loads_with_its_holiday_file() -> None:
    from pathlib import Path

    from proxy.takedown import config

    root = Path(__file__).resolve().parents[2]
    cfg = config.load(root / "config" / "takedown.example.toml")
    assert MLK_DAY in cfg.restore.holidays and cfg.restore.timezone == "America/New_York"
