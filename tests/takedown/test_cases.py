"""Decisions, publishing to every edge, acknowledgements, deadlines, statements, retries."""

from __future__ import annotations

import asyncio

from tests.takedown.conftest import MakeEnv, notice

DIGEST = "ab" * 32


async def test_trusted_notice_is_enforced_on_every_edge_with_a_full_record(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    status, body = await env.post(
        "/notices", "trusted", notice({"url": "https://cdn.example/movie.mp4"}, {"sha256": DIGEST})
    )
    assert status == 201 and body["state"] in ("actioned", "published", "enforced")
    view = await env.wait_state(body["case"], "enforced")
    events = [e["event"] for e in view["timeline"]]
    for want in (
        "received",
        "validated",
        "decided",
        "actioned",
        "statement_issued",
        "published",
        "edge_enforced",
        "enforced",
    ):
        assert want in events, (want, events)
    assert events.index("actioned") < events.index("published") < events.index("enforced")
    assert view["automated"] and view["decision"] == "action"
    assert {e["edge"] for e in view["edges"]} == {e.url for e in env.edges}
    for e in view["edges"]:
        assert e["version"] == 1 and e["enforced_at"] == env.clock() and not e["overdue"]
    assert view["durations"]["receipt_to_enforced_s"] == 0.0
    for edge in env.edges:
        got = {(e["type"], e["value"]) for e in edge.entries.values()}
        assert got == {("url", "https://cdn.example/movie.mp4"), ("sha256", DIGEST)}
        assert all(e["notice"] == f"case {body['case']}" for e in edge.entries.values())
    _, sor = await env.get(f"/cases/{body['case']}/statement", "submitter")
    assert sor.get("error")  # not this submitter's case
    _, sor = await env.get(f"/cases/{body['case']}/statement")
    assert sor["automated_means"]["automated_decision"] is True
    assert sor["facts"]["source_type"] == "SOURCE_TRUSTED_FLAGGER"
    assert "512(b)" in sor["legal_ground"]["illegal_content_legal_ground"]
    assert "counter-notice" in sor["redress"]
    assert sor["affected"][0]["customer"] == "Acme"


async def test_operator_decision_publishes_and_records_durations(make_env: MakeEnv) -> None:
    env = await make_env()
    _, body = await env.post("/notices", "submitter", notice())
    case = body["case"]
    env.clock.advance(3600)
    status, out = await env.post(
        f"/cases/{case}/decision", "operator", {"decision": "action", "reason": "matches the work"}
    )
    assert status == 200 and out["state"] == "actioned"
    env.clock.advance(2)
    view = await env.wait_state(case, "enforced")
    assert view["durations"]["receipt_to_decision_s"] == 3600.0
    assert view["decision_reason"] == "matches the work" and not view["automated"]
    actioned = next(e for e in view["timeline"] if e["event"] == "actioned")
    assert actioned["actor"].startswith("operator:")
    status, again = await env.post(
        f"/cases/{case}/decision", "operator", {"decision": "reject", "reason": "oops"}
    )
    assert status == 409


async def test_rejection_publishes_nothing(make_env: MakeEnv) -> None:
    env = await make_env()
    _, body = await env.post("/notices", "submitter", notice())
    status, out = await env.post(
        f"/cases/{body['case']}/decision", "admin", {"decision": "reject", "reason": "fair use"}
    )
    assert out["state"] == "rejected"
    await asyncio.sleep(0.1)
    assert env.edges[0].entries == {}
    _, view = await env.get(f"/cases/{body['case']}")
    assert view["edges"] == [] and view["decision_reason"] == "fair use"


async def test_overdue_decisions_are_listed_and_logged(make_env: MakeEnv) -> None:
    env = await make_env()
    _, a = await env.post("/notices", "submitter", notice())
    env.clock.advance(3600)
    _, b = await env.post("/notices", "submitter", notice({"url": "https://cdn.example/b"}))
    _, listing = await env.get("/cases?overdue=1")
    assert listing["count"] == 0
    env.clock.advance(23 * 3600 + 1)  # a: 24 h + 1 s old, b: 23 h + 1 s
    _, listing = await env.get("/cases?overdue=1")
    assert [(c["id"], c["overdue"]) for c in listing["cases"]] == [(a["case"], ["decision"])]
    await env.svc.run_due()
    await env.svc.run_due()  # logged once
    _, view = await env.get(f"/cases/{a['case']}")
    assert [e["event"] for e in view["timeline"]].count("decision_overdue") == 1
    await env.post(
        f"/cases/{a['case']}/decision", "operator", {"decision": "reject", "reason": "late"}
    )
    _, listing = await env.get("/cases?overdue=1")
    assert listing["count"] == 0


async def test_edge_down_is_retried_reported_overdue_then_enforced(make_env: MakeEnv) -> None:
    env = await make_env()
    down = env.edges[1]
    down.down = True
    _, body = await env.post("/notices", "trusted", notice())
    case = body["case"]
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        _, view = await env.get(f"/cases/{case}")
        bad = next(e for e in view["edges"] if e["edge"] == down.url)
        if bad["attempts"] >= 3:
            break
        assert asyncio.get_running_loop().time() < deadline, view
        await asyncio.sleep(0.02)
    assert view["state"] == "published"
    good = next(e for e in view["edges"] if e["edge"] == env.edges[0].url)
    assert good["version"] == 1 and bad["version"] is None
    assert "503" in bad["last_error"]
    env.clock.advance(61)  # past the 60 s enforcement deadline
    _, listing = await env.get("/cases?overdue=1")
    assert [(c["id"], c["overdue"]) for c in listing["cases"]] == [(case, ["enforcement"])]
    await env.svc.run_due()
    _, view = await env.get(f"/cases/{case}")
    overdue = [e for e in view["timeline"] if e["event"] == "edge_overdue"]
    assert len(overdue) == 1 and overdue[0]["data"]["edge"] == down.url
    assert next(e for e in view["edges"] if e["edge"] == down.url)["overdue"]
    down.down = False
    view = await env.wait_state(case, "enforced")
    late = next(e for e in view["edges"] if e["edge"] == down.url)
    assert late["version"] == 1 and late["enforced_at"] == env.clock() and late["overdue"]
    assert late["last_error"] is None
    assert view["durations"]["decision_to_enforced_s"] == 61.0
    assert list(down.entries) == list(env.edges[0].entries)


async def test_publishing_resumes_after_restart(make_env: MakeEnv) -> None:
    env = await make_env()
    env.edges[0].down = env.edges[1].down = True
    _, body = await env.post("/notices", "trusted", notice())
    await asyncio.sleep(0.05)
    assert env.svc.publisher is not None
    await env.svc.publisher.stop()
    env.edges[0].down = env.edges[1].down = False
    env.svc.publisher.start()  # what a restarted service does first
    await env.wait_state(body["case"], "enforced")
