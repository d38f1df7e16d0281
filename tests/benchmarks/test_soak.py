"""The soak scenario (benchmarks/soak.py, issue 19): its report maths on made-up windows, and a
short real run (a node, the bundled origin, wrk, pushes, a killed worker, a full version) that
must come back with no errors, no listed bytes and every event it promises."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.run import Origin
from benchmarks.soak import OperatorLog, SoakSettings, Window, run_soak, summarise, table
from benchmarks.targets import EdgeTarget

MiB = 1 << 20


def window(i: int, rps: float, rss_mib: int, fill: tuple[float, float], **kw: object) -> Window:
    w = Window(i, 60.0 * i, 60.0 * (i + 1), rps=rps, rss_bytes=rss_mib * MiB)
    w.cache_fill_start, w.cache_fill_end = fill
    for name, value in kw.items():
        setattr(w, name, value)
    return w


def test_goals_are_measured_from_the_first_window_that_starts_full() -> None:
    windows = [
        window(0, 3000, 200, (0.0, 0.6)),
        window(1, 2500, 300, (0.6, 1.0)),  # fills during this one
        window(2, 2000, 320, (1.0, 1.0)),  # the first full-cache window
        window(3, 1900, 330, (0.99, 1.0)),
        window(4, 1850, 340, (1.0, 1.0)),
    ]
    g = summarise(windows, OperatorLog(), 60.0)["goals"]
    assert g["throughput"]["first_full_window"] == 2
    assert g["throughput"]["ratio"] == pytest.approx(1850 / 2000) and g["throughput"]["ok"]
    assert g["rss"]["spread"] == pytest.approx(20 / 320) and g["rss"]["ok"]
    windows[4].rps = 1700  # 85% of the first full window
    windows[4].rss_bytes = 360 * MiB  # 12.5% above it
    g = summarise(windows, OperatorLog(), 60.0)["goals"]
    assert not g["throughput"]["ok"] and not g["rss"]["ok"]


def test_pss_and_anon_spreads_are_reported_beside_rss() -> None:
    """A bigger mapped list raises every process's RSS (each counts the shared pages) but
    not the heap: the report shows the three apart, and the goal stays RSS's."""
    windows = [
        window(0, 3000, 300, (1.0, 1.0), pss_bytes=200 * MiB, anon_bytes=100 * MiB),
        window(1, 3000, 340, (1.0, 1.0), pss_bytes=210 * MiB, anon_bytes=102 * MiB),
        window(2, 3000, 345, (1.0, 1.0), pss_bytes=212 * MiB, anon_bytes=101 * MiB),
    ]
    summary = summarise(windows, OperatorLog(), 60.0)
    g = summary["goals"]["rss"]
    assert g["spread"] == pytest.approx(45 / 300) and not g["ok"]
    assert g["pss_spread"] == pytest.approx(12 / 200)
    assert g["anon_spread"] == pytest.approx(2 / 100)
    assert "(PSS 6.0%, anon 2.0%)" in table(summary)
    assert "| 345 (0) | 212 / 101 |" in table(summary)


def test_without_a_window_that_starts_full_the_one_after_the_filling_counts() -> None:
    """Fill is the workers' sum: a restarted worker starts empty, so no window may start at
    95% again; then the window after the one that ended full is the baseline."""
    windows = [
        window(0, 3000, 200, (0.0, 0.5)),
        window(1, 2900, 210, (0.5, 0.97)),
        window(2, 2800, 215, (0.9, 0.94)),
        window(3, 2700, 220, (0.93, 0.94)),
    ]
    g = summarise(windows, OperatorLog(), 60.0)["goals"]
    assert g["throughput"]["first_full_window"] == 2
    assert g["throughput"]["ratio"] == pytest.approx(2700 / 2800)
    assert g["rss"]["spread"] == pytest.approx(5 / 215)


def test_a_window_with_the_kill_or_the_full_version_is_not_the_baseline() -> None:
    windows = [
        window(0, 3000, 200, (0.0, 1.0)),
        window(1, 1500, 300, (1.0, 0.5), events=["SIGKILL worker pid 9"]),
        window(2, 1600, 300, (0.5, 1.0), events=["full version 2 dropped"]),
        window(3, 2400, 310, (1.0, 1.0)),
        window(4, 2300, 305, (1.0, 1.0)),
    ]
    g = summarise(windows, OperatorLog(), 60.0)["goals"]
    assert g["throughput"]["first_full_window"] == 3
    assert g["throughput"]["ratio"] == pytest.approx(2300 / 2400)
    assert g["rss"]["spread"] == pytest.approx(5 / 305)
    for w in windows[3:]:
        w.events = ["full version 2 enforced after 3.00 s"]
    g = summarise(windows, OperatorLog(), 60.0)["goals"]
    assert g["throughput"]["first_full_window"] == 1  # all disturbed: the first full one


def test_the_kills_dip_is_left_out_of_the_rss_spread_and_the_full_versions_step_is_not() -> None:
    """A restarted worker starts empty, so the kill's window dips (not growth); the full
    version's window counts, since a list that grows the node for good is what RSS watches."""
    windows = [
        window(0, 3000, 300, (1.0, 1.0)),
        window(1, 3000, 302, (1.0, 1.0)),
        window(2, 2000, 240, (1.0, 0.5), events=["SIGKILL worker pid 9", "worker restarted"]),
        window(3, 2900, 310, (0.5, 1.0), events=["full version 2 dropped"]),
        window(4, 3000, 312, (1.0, 1.0)),
    ]
    g = summarise(windows, OperatorLog(), 60.0)["goals"]["rss"]
    assert g["spread"] == pytest.approx(12 / 300) and g["ok"]
    windows[3].rss_bytes = windows[4].rss_bytes = 340 * MiB  # the full version stepped it
    g = summarise(windows, OperatorLog(), 60.0)["goals"]["rss"]
    assert g["spread"] == pytest.approx(40 / 300) and not g["ok"]


def test_no_full_window_leaves_the_throughput_and_rss_goals_undecided() -> None:
    windows = [window(0, 3000, 200, (0.0, 0.3)), window(1, 2900, 210, (0.3, 0.6))]
    summary = summarise(windows, OperatorLog(), 60.0)
    assert summary["goals"]["throughput"]["ok"] is None
    assert summary["goals"]["rss"]["ok"] is None
    assert "n/a" in table(summary)


def test_errors_and_listed_bytes_count_every_source() -> None:
    windows = [
        window(0, 3000, 200, (0.0, 1.0), socket_errors=7, events=["SIGKILL worker pid 1"]),
        window(1, 3000, 200, (1.0, 1.0)),
        window(2, 3000, 200, (1.0, 1.0)),
    ]
    op = OperatorLog()
    summary = summarise(windows, op, 60.0)
    g = summary["goals"]
    # the killed worker's own connections are reported apart, not as errors
    assert g["errors"] == {"value": 0, "ok": True} and summary["kill_window_socket_errors"] == 7
    assert g["listed_bytes"]["ok"]
    windows[1].socket_errors = 1
    windows[2].s5xx, windows[2].unexpected = 2, 3
    assert summarise(windows, op, 60.0)["goals"]["errors"] == {"value": 6, "ok": False}
    windows[1].listed, windows[1].listed_bytes = 1, 1024
    op.listed_served, op.listed_bytes = 2, 2048
    g = summarise(windows, op, 60.0)["goals"]
    assert g["listed_bytes"] == {"value": 3072, "answers": 3, "ok": False}
    text = table(summarise(windows, op, 60.0))
    assert "MISSED" in text and "| min |" in text and "SIGKILL" in text


@pytest.mark.timeout(120)
def test_a_short_soak_runs_every_part_and_serves_nothing_listed(tmp_path: Path) -> None:
    # Required, not optional: .ci/run installs wrk, and `make` the edgeproxy executable.
    assert shutil.which("wrk") is not None, "the soak needs wrk (apt-get install wrk)"
    assert EdgeTarget.available(), "the soak needs the edgeproxy executable (make)"
    origin = Origin(tmp_path)
    settings = SoakSettings(
        soak_s=14.0,
        window_s=3.5,
        connections=8,
        memory_bytes=8 * MiB,  # the smallest a node takes (max_object_bytes)
        node_tier_bytes=8 * MiB,
        push_every_s=1.0,
        version_entries=200,
        kill_at=0.3,
        full_version_at=0.45,
    )
    try:
        summary = run_soak(tmp_path / "soak", origin.port, settings, lambda _m: None)
    finally:
        origin.stop()
    windows = summary["windows"]
    assert len(windows) >= 3 and all(w["requests"] > 0 for w in windows)
    assert all(w["ok"] > 0 and w["partial"] > 0 and w["blocked"] > 0 for w in windows)
    events = [e for w in windows for e in w["events"]]
    assert any(e.startswith("SIGKILL worker") for e in events), events
    assert any(e.startswith("worker restarted") for e in events), events
    assert any(e.startswith("full version 2 enforced") for e in events), events
    op = summary["operator"]
    assert op["pushes"] >= 4 and op["probes"] >= 6 and op["push_failures"] == 0, op
    g = summary["goals"]
    assert g["listed_bytes"] == {"value": 0, "answers": 0, "ok": True}
    assert g["errors"]["ok"], windows
    assert 0 < windows[0]["cache_fill_end"] <= 1.0
