"""Issue 14, no undo: reversal (DSA Art. 20 internal complaint), withdrawal after enforcement and
unsuspension are case transitions whose removal reaches every edge, audited, with their own
deadline (`lift_s`), notifications and report lines. Fake edge admin APIs on 127.0.0.1 here;
tests/takedown/test_undo_edges.py does the same against real edge nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.takedown.conftest import Env, MakeEnv, notice
from tests.takedown.test_file_drop import COUNTER
from tests.takedown.test_metrics import scrape

ENTRY = "case1-t1"


async def enforced(env: Env, who: str = "submitter", *targets: dict[str, str]) -> int:
    status, body = await env.post("/notices", who, notice(*targets))
    assert status == 201, body
    if body["state"] == "under_review":
        status, _ = await env.post(
            f"/cases/{body['case']}/decision", "operator", {"decision": "action", "reason": "ok"}
        )
        assert status == 200
    await env.wait_state(body["case"], "enforced")
    return int(body["case"])


async def until_event(env: Env, case: int, event: str, timeout_s: float = 5.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        _, view = await env.get(f"/cases/{case}")
        if any(e["event"] == event for e in view["timeline"]):
            return dict(view)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {event} on case {case}: {view['timeline']}")
        await asyncio.sleep(0.02)


def events(view: dict[str, Any]) -> list[str]:
    return [e["event"] for e in view["timeline"]]


def strikes_tolled(env: Env, case: int) -> list[bool]:
    return [
        r[0] is not None
        for r in env.svc.store.run_sync(
            lambda c: c.execute(
                "SELECT tolled_at FROM strikes WHERE case_id = ?", (case,)
            ).fetchall()
        )
    ]


async def test_reversal_lifts_the_block_on_every_edge(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=2)
    case = await enforced(env)
    assert all(ENTRY in e.entries for e in env.edges)
    assert strikes_tolled(env, case) == [False]
    status, out = await env.post(
        f"/cases/{case}/reverse", "operator", {"statement": "the recording is the customer's own"}
    )
    assert status == 200, out
    assert out["state"] == "reversed" and out["reversed"] == "action"
    assert out["entries"] == [ENTRY] and out["lift_by"] == env.clock() + 60
    view = await until_event(env, case, "reversal_enforced")
    for edge in env.edges:
        assert ENTRY not in edge.entries
        assert edge.log[-1] == ("DELETE", ENTRY)
    assert view["state"] == "reversed"
    assert [e["edge"] for e in view["lift_edges"]] == sorted(e.url for e in env.edges)
    assert all(e["enforced_at"] is not None for e in view["lift_edges"])
    assert view["ended"]["by"] == "reversal"
    assert view["ended"]["statement"] == "the recording is the customer's own"
    assert view["ended"]["lifted_at"] == env.clock()
    assert view["overdue"] == []
    ev = events(view)
    assert ev.index("reversed") < ev.index("decision_reversed") < ev.index("reversal_enforced")
    assert ev.count("edge_removed") == 2
    reversed_ = next(e for e in view["timeline"] if e["event"] == "reversed")
    assert reversed_["actor"].startswith("operator:") and reversed_["data"]["from"] == "enforced"
    assert strikes_tolled(env, case) == [True]
    # The statement of reasons says the restriction ended, and how.
    _, sor = await env.get(f"/cases/{case}/statement", "customer")
    assert sor["restriction"]["ended"]["by"] == "reversal"
    # Both sides are told (no contact for the customer here: visible as undeliverable).
    queued = [e["data"] for e in view["timeline"] if e["event"] == "notification_queued"]
    assert ("reversal", "legal@rights.example") in {(q["kind"], q["to"]) for q in queued}
    # Nothing more to reverse.
    status, out = await env.post(f"/cases/{case}/reverse", "admin", {"statement": "again"})
    assert status == 409 and "reversed" in out["error"]


async def test_reversing_a_rejection_actions_the_case(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "submitter", notice())
    case = body["case"]
    await env.post(f"/cases/{case}/decision", "operator", {"decision": "reject", "reason": "no"})
    status, out = await env.post(f"/cases/{case}/complaint", "submitter", {"statement": "wrong"})
    assert status == 201 and out["party"] == "complainant" and out["decision"] == "reject"
    status, out = await env.post(f"/cases/{case}/reverse", "admin", {"statement": "it is ours"})
    assert status == 200 and out["reversed"] == "rejection"
    assert out["complaints_upheld"] == [1]
    view = await env.wait_state(case, "enforced")
    assert ENTRY in env.edges[0].entries
    assert view["decision"] == "action" and "rejection reversed" in view["decision_reason"]
    assert view["complaints"][0]["outcome"] == "upheld"


async def test_undo_refuses_what_cannot_be_undone(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "submitter", notice())
    status, out = await env.post(f"/cases/{body['case']}/reverse", "operator", {"statement": "x"})
    assert status == 409 and "under_review" in out["error"]
    status, out = await env.post(
        f"/cases/{body['case']}/complaint", "submitter", {"statement": "x"}
    )
    assert status == 409 and "no decision" in out["error"]
    _, unserved = await env.post("/notices", "submitter", notice({"url": "https://x.example/a"}))
    assert unserved["state"] == "rejected"
    status, out = await env.post(f"/cases/{unserved['case']}/reverse", "admin", {"statement": "x"})
    assert status == 409
    status, out = await env.post("/sites/cdn.example/unsuspend", "operator", {"statement": "x"})
    assert status == 409 and out["error"] == "site cdn.example is not suspended"
    status, out = await env.post("/sites/nowhere.example/unsuspend", "admin", {"statement": "x"})
    assert status == 404 and out["error"] == "no site nowhere.example"
    status, out = await env.post("/cases/999/reverse", "admin", {"statement": "x"})
    assert status == 404


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "statement", "is required"),
        ({"statement": ""}, "statement", "must be a string of length >= 1"),
        ({"statement": "   "}, "statement", "must not be blank"),
        ({"statement": ["x"]}, "statement", "must be a string, got a list"),
        ({"statement": "x", "oops": 1}, "oops", "unknown field"),
        (b"not json", "(body)", "the body is not valid JSON"),
        (b"[]", "(body)", "must be a JSON object, got a list"),
    ],
)
async def test_undo_bodies_are_validated(
    make_env: MakeEnv, body: Any, field: str, message: str
) -> None:
    env = await make_env(n_edges=1)
    case = await enforced(env)
    for path in (f"/cases/{case}/reverse", "/sites/cdn.example/unsuspend"):
        status, out = await env.post(path, "operator", body)
        assert status == 400, out
        assert out["errors"][0]["field"] == field and message in out["errors"][0]["message"]
    _, view = await env.get(f"/cases/{case}")
    assert view["state"] == "enforced" and all(ENTRY in e.entries for e in env.edges)


async def test_withdrawal_after_enforcement_ends_the_block(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=2)
    case = await enforced(env)
    status, out = await env.post(f"/cases/{case}/withdraw", "submitter", {})
    assert status == 200, out
    assert out["state"] == "withdrawn" and out["entries"] == [ENTRY]
    view = await until_event(env, case, "withdrawal_enforced")
    assert all(ENTRY not in e.entries for e in env.edges)
    assert view["ended"]["by"] == "withdrawal" and view["ended"]["lifted_at"] is not None
    assert strikes_tolled(env, case) == [True]
    # Before a decision, withdrawal just closes the case: nothing to lift.
    _, other = await env.post("/notices", "submitter", notice({"url": "https://cdn.example/z"}))
    status, out = await env.post(f"/cases/{other['case']}/withdraw", "submitter", {})
    assert status == 200 and out == {"case": other["case"], "state": "withdrawn"}


async def test_withdrawal_cancels_a_scheduled_restore(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    case = await enforced(env)
    status, out = await env.post(f"/cases/{case}/counter-notice", "customer", COUNTER)
    assert status == 201
    restore_at = out["restore"]["restore_at"]
    status, _ = await env.post(f"/cases/{case}/withdraw", "admin", {})
    assert status == 200
    await until_event(env, case, "withdrawal_enforced")
    env.clock.now = restore_at + 1
    await env.svc.run_due()
    _, view = await env.get(f"/cases/{case}")
    assert view["state"] == "withdrawn" and view["restore"]["state"] == "cancelled"
    assert "restore_due" not in events(view)


async def test_complaint_clock_dismissal_and_window(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    case = await enforced(env)
    status, out = await env.post(
        f"/cases/{case}/complaint", "customer", {"statement": "licensed from the label"}
    )
    assert status == 201 and out["party"] == "customer"
    d = env.svc.cfg.deadlines
    assert out["decide_by"] == env.clock() + d.complaint_s
    _, listing = await env.get("/cases")
    row = next(c for c in listing["cases"] if c["id"] == case)
    assert row["deadline"] == "complaint" and row["open_complaints"] is True
    assert row["seconds_left"] == d.complaint_s
    env.clock.advance(d.complaint_s + 1)
    _, view = await env.get(f"/cases/{case}")
    assert view["overdue"] == ["complaint"]
    m = await scrape(env)
    assert m[("edgeproxy_takedown_overdue_cases", (("reason", "complaint"),))] == 1
    status, out = await env.post(
        f"/cases/{case}/complaint/dismiss", "operator", {"statement": "no licence shown"}
    )
    assert status == 200 and out["complaints_dismissed"] == [1]
    _, view = await env.get(f"/cases/{case}")
    assert view["overdue"] == [] and view["state"] == "enforced"
    assert view["complaints"][0]["outcome"] == "dismissed"
    assert "complaint_dismissed" in events(view)
    status, _ = await env.post(f"/cases/{case}/complaint/dismiss", "operator", {"statement": "x"})
    assert status == 409  # none open
    env.clock.advance(d.complaint_window_s)
    status, out = await env.post(f"/cases/{case}/complaint", "submitter", {"statement": "late"})
    assert status == 409 and "window" in out["error"]


async def test_lift_deadline_when_an_edge_is_down(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=2)
    case = await enforced(env)
    env.edges[1].down = True
    status, _ = await env.post(f"/cases/{case}/reverse", "operator", {"statement": "mistake"})
    assert status == 200
    await until_event(env, case, "edge_removed")
    env.clock.advance(env.svc.cfg.deadlines.lift_s + 1)
    _, view = await env.get(f"/cases/{case}")
    assert view["overdue"] == ["lift"] and view["ended"]["lifted_at"] is None
    m = await scrape(env)
    assert m[("edgeproxy_takedown_overdue_cases", (("reason", "lift"),))] == 1
    _, listing = await env.get("/cases?overdue=1")
    assert [c["id"] for c in listing["cases"]] == [case]
    assert listing["cases"][0]["deadline"] == "lift" and listing["cases"][0]["seconds_left"] < 0
    env.edges[1].down = False
    view = await until_event(env, case, "reversal_enforced")
    assert view["overdue"] == [] and ENTRY not in env.edges[1].entries


async def test_unsuspension_lifts_the_host_entry_and_a_new_strike_suspends_again(
    make_env: MakeEnv,
) -> None:
    env = await make_env(n_edges=2)
    host_entry = "suspend-shady.example"
    first = await enforced(env, "trusted", {"url": "https://shady.example/1"})
    second = await enforced(env, "trusted", {"url": "https://shady.example/2"})
    await until_event(env, second, "suspension_enforced")  # its own publication, after the block
    assert all(host_entry in e.entries for e in env.edges)
    status, out = await env.post(
        "/sites/shady.example/unsuspend", "admin", {"statement": "identity verified"}
    )
    assert status == 200, out
    assert out["case"] == second and out["suspended"] is False and out["strikes_in_window"] == 2
    view = await until_event(env, second, "unsuspension_enforced")
    assert all(host_entry not in e.entries for e in env.edges)
    assert all(d["enforced_at"] for d in view["unsuspensions"][0]["edges"])
    unsuspended = next(e for e in view["timeline"] if e["event"] == "unsuspended")
    assert unsuspended["actor"].startswith("admin:")
    assert unsuspended["data"]["statement"] == "identity verified"
    # The page-level blocks of both cases stay.
    assert {f"case{first}-t1", f"case{second}-t2"} <= set(env.edges[0].entries)
    status, _ = await env.post("/sites/shady.example/unsuspend", "admin", {"statement": "again"})
    assert status == 409
    third = await enforced(env, "trusted", {"url": "https://shady.example/3"})
    _, view = await env.get(f"/cases/{third}")
    assert "suspended" in events(view)
    await until_event(env, third, "suspension_enforced")
    assert all(host_entry in e.entries for e in env.edges)


async def test_report_lines_for_undo(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    a = await enforced(env)
    b = await enforced(env, "submitter", {"url": "https://cdn.example/b"})
    await env.post(f"/cases/{a}/complaint", "customer", {"statement": "mine"})
    await env.post(f"/cases/{a}/reverse", "operator", {"statement": "upheld"})
    await env.post(f"/cases/{b}/withdraw", "submitter", {})
    await until_event(env, a, "reversal_enforced")
    await until_event(env, b, "withdrawal_enforced")
    status, rep = await env.get("/reports?from=2026-01-01&to=2026-01-31")
    assert status == 200
    assert rep["redress"] == {
        "complaints": 1,
        "complaints_upheld": 1,
        "complaints_dismissed": 0,
        "complaints_open": 0,
        "reversals": 1,
        "withdrawals_after_action": 1,
        "unsuspensions": 0,
        "undo_to_lifted_median_s": 0.0,
        "undo_to_lifted_p95_s": 0.0,
    }
    assert rep["cases"]["by_outcome"] == {"reversed": 1, "withdrawn": 1}
    r = await env.client.get(
        "/reports?from=2026-01-01&to=2026-01-31&format=md", headers=env.auth("operator")
    )
    text = await r.text()
    assert r.status == 200 and "## Redress" in text and "| reversals | 1 |" in text
