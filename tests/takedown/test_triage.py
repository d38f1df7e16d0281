"""Issue 14, triage: case lists show the target URLs, complainant, works and the deadline clock
(deadline_at, seconds left, negative once overdue), sortable by deadline and filterable by
state, over HTTP and on the CLI (`edgeproxy takedown cases`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.takedown.cli import main
from tests.takedown.conftest import T0, MakeEnv, notice
from tests.takedown.test_redress import until_event


async def test_list_shows_targets_parties_and_the_clock_sorted_by_deadline(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await make_env(n_edges=1)
    d = env.svc.cfg.deadlines
    # Case 1: under review since T0. Case 2: under review since T0 + 1 h, another complainant.
    _, one = await env.post("/notices", "submitter", notice({"url": "https://cdn.example/one"}))
    env.clock.advance(3600)
    doc = notice({"url": "https://cdn.example/two"}, {"sha256": "ab" * 32})
    doc["complainant"] = {"name": "Label B", "email": "b@label.example"}
    doc["works"] = [{"title": "Album B"}, {"description": "Cover art"}]
    _, two = await env.post("/notices", "submitter2", doc)
    # Case 3: actioned and enforced (no clock left), case 4: rejected.
    _, three = await env.post("/notices", "trusted", notice({"url": "https://cdn.example/3"}))
    await env.wait_state(three["case"], "enforced")
    _, four = await env.post("/notices", "submitter", notice({"url": "https://cdn.example/4"}))
    await env.post(f"/cases/{four['case']}/decision", "operator", {"decision": "reject"})
    env.clock.advance(d.decision_s - 1800)  # case 1 is now 30 min overdue, case 2 has 30 min

    status, listing = await env.get("/cases?sort=deadline")
    assert status == 200
    rows = listing["cases"]
    assert [c["id"] for c in rows] == [one["case"], two["case"], three["case"], four["case"]]
    first, second = rows[0], rows[1]
    assert first["targets"] == ["https://cdn.example/one"]
    assert first["complainants"] == [{"name": "Rights Org", "email": "legal@rights.example"}]
    assert first["works"] == ["Song A"]
    assert first["deadline"] == "decision" and first["deadline_at"] == T0 + d.decision_s
    assert first["seconds_left"] == -1800.0 and first["overdue"] == ["decision"]
    assert second["targets"] == ["https://cdn.example/two", "ab" * 32]
    assert second["complainants"] == [{"name": "Label B", "email": "b@label.example"}]
    assert second["works"] == ["Album B", "Cover art"]
    assert second["seconds_left"] == 1800.0 and second["overdue"] == []
    assert rows[2]["deadline"] is None and rows[2]["seconds_left"] is None
    # Filter by one state or several.
    _, only = await env.get("/cases?state=enforced")
    assert [c["id"] for c in only["cases"]] == [three["case"]]
    _, several = await env.get("/cases?state=rejected,under_review&sort=deadline")
    assert [c["id"] for c in several["cases"]] == [one["case"], two["case"], four["case"]]
    _, overdue = await env.get("/cases?overdue=1")
    assert [c["id"] for c in overdue["cases"]] == [one["case"]]
    # A submitter sees only its own cases, with the same columns.
    _, own = await env.get("/cases", "submitter2")
    assert [c["id"] for c in own["cases"]] == [two["case"]]
    # A customer sees the cases against its sites (all four are on cdn.example, Acme's).
    _, acme = await env.get("/cases", "customer")
    assert sorted(c["id"] for c in acme["cases"]) == sorted(c["id"] for c in rows)
    _, shady = await env.get("/cases", "customer2")
    assert shady["count"] == 0

    # The CLI reads the same list from the database (wall clock: every clock is long overdue).
    rc = main(["cases", "--db", str(env.db), "--sort", "deadline", "--state", "under_review"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out[0].split() == [
        "case",
        "state",
        "deadline",
        "complainant",
        "works",
        "targets",
    ]
    assert out[1].startswith(f"{one['case']}  ") and "decision OVERDUE" in out[1]
    assert "Rights Org" in out[1] and out[1].endswith("https://cdn.example/one")
    assert "Label B" in out[2] and "Album B; Cover art" in out[2]
    assert len(out) == 3
    rc = main(["cases", "--db", str(env.db), "--format", "json", "--state", "enforced,rejected"])
    parsed = json.loads(capsys.readouterr().out)
    assert rc == 0 and [c["id"] for c in parsed["cases"]] == [three["case"], four["case"]]
    rc = main(["cases", "--db", str(env.db), "--state", "nonsense"])
    assert rc == 2 and "unknown nonsense" in capsys.readouterr().err


async def test_cli_case_prints_the_timeline_as_markdown(
    make_env: MakeEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await make_env(n_edges=2)
    _, body = await env.post("/notices", "trusted", notice())
    await env.wait_state(body["case"], "enforced")
    await env.post(f"/cases/{body['case']}/reverse", "operator", {"statement": "mistake"})
    view = await until_event(env, body["case"], "reversal_enforced")
    rc = main(["case", "--db", str(env.db), "--case", str(body["case"]), "--format", "md"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith(f"# Case {body['case']}: reversed")
    assert '- ended by reversal 2026-01-05T10:00:00.000+00:00 (+0.000 s) ("mistake")' in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "|---" not in line]
    timeline = [r.split(" | ")[2] for r in rows if r.split(" | ")[0].strip("| ").isdigit()]
    seen = [e["event"] for e in view["timeline"]]  # read earlier: the CLI may see more
    assert timeline[: len(seen)] == seen and "reversal_enforced" in timeline
    assert sum(r.startswith("| block | ") for r in rows) == 2
    rc = main(["case", "--db", str(env.db), "--case", "99"])
    assert rc == 1 and "no case 99" in capsys.readouterr().err
