"""Intake: receipts, missing elements, per-target rejection, duplicates, raw bodies, auth."""

from __future__ import annotations

import hashlib
import json

from proxy.takedown.accounts import add_site
from tests.takedown.conftest import MakeEnv, notice


async def test_complete_notice_gets_receipt_and_waits_for_review(make_env: MakeEnv) -> None:
    env = await make_env()
    raw = json.dumps(notice(), indent=3).encode()  # odd formatting: must be kept byte-exact
    status, body = await env.post("/notices", "submitter", raw)
    assert status == 201
    assert set(body) >= {"id", "case", "receipt"}
    assert body["state"] == "under_review"
    receipt = body["receipt"]
    assert receipt["received_at"] == env.clock()
    assert receipt["sha256"] == hashlib.sha256(raw).hexdigest()
    assert receipt["bytes"] == len(raw)
    assert receipt["targets"][0]["status"] == "accepted"
    assert "operator" in receipt["next_step"]
    r = await env.client.get(f"/notices/{body['id']}/raw", headers=env.auth("submitter"))
    assert r.status == 200 and await r.read() == raw
    _, view = await env.get(f"/cases/{body['case']}")
    assert [e["event"] for e in view["timeline"] if not e["event"].startswith("notif")] == [
        "received",
        "receipt_sent",
        "validated",
        "under_review",
    ]
    queued = [e["data"] for e in view["timeline"] if e["event"] == "notification_queued"]
    assert queued == [
        {"outbox": 1, "kind": "receipt", "channel": "email", "to": "legal@rights.example"}
    ]
    assert all(e["at"] == env.clock() for e in view["timeline"])
    assert view["edges"] == [] and env.edges[0].entries == {}


async def test_incomplete_notice_is_kept_and_answered_with_missing_elements(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    doc = notice()
    del doc["signature"]
    doc["statements"] = {"good_faith": True}
    doc["complainant"] = {"name": "X"}
    raw = json.dumps(doc).encode()
    status, body = await env.post("/notices", "submitter", raw)
    assert status == 422
    assert body["missing"] == ["signature", "complainant.email", "statements.accurate"]
    assert body["missing_detail"][0]["law"].startswith("DMCA 512(c)(3)(A)(i)")
    assert body["state"] == "incomplete" and body["id"] and body["case"]
    assert "missing" in body["receipt"]["next_step"]
    r = await env.client.get(f"/notices/{body['id']}/raw", headers=env.auth("operator"))
    assert await r.read() == raw
    # Fixing it: a complete notice for the same targets joins the incomplete case.
    status, fixed = await env.post("/notices", "submitter", notice())
    assert status == 201 and fixed["case"] == body["case"]
    assert fixed["state"] == "under_review"


async def test_targets_on_hosts_not_served_are_rejected_per_target(make_env: MakeEnv) -> None:
    env = await make_env()
    status, body = await env.post(
        "/notices",
        "submitter",
        notice(
            {"url": "https://cdn.example/ok.mp4"},
            {"url": "https://elsewhere.example/x"},
            {"url": "ftp://cdn.example/x"},
            {"sha256": "zz"},
        ),
    )
    assert status == 201
    got = [(t["status"], t.get("reason")) for t in body["targets"]]
    assert got == [
        ("accepted", None),
        ("rejected", "host elsewhere.example is not served by this service"),
        ("rejected", "not an absolute http(s) URL"),
        ("rejected", "sha256 is not 64 hex digits"),
    ]
    status, body = await env.post(
        "/notices", "submitter", notice({"url": "https://elsewhere.example/x"})
    )
    assert status == 201 and body["state"] == "rejected"
    _, sor = await env.get(f"/cases/{body['case']}/statement")
    assert "error" in sor  # nothing was restricted


async def test_duplicate_notice_joins_the_open_case(make_env: MakeEnv) -> None:
    env = await make_env()
    _, first = await env.post("/notices", "submitter", notice())
    _, second = await env.post(
        "/notices", "submitter2", notice({"url": "HTTPS://CDN.example:443/a.mp3#frag"})
    )
    assert second["case"] == first["case"] and second["id"] != first["id"]
    _, view = await env.get(f"/cases/{first['case']}")
    assert [n["id"] for n in view["notices"]] == [first["id"], second["id"]]
    assert "notice_joined" in [e["event"] for e in view["timeline"]]
    assert len([t for t in view["targets"] if t["accepted"]]) == 1
    _, third = await env.post("/notices", "submitter", notice({"url": "https://cdn.example/b"}))
    assert third["case"] != first["case"]


async def test_authentication_and_roles(make_env: MakeEnv) -> None:
    env = await make_env()
    r = await env.client.post("/notices", json=notice())
    assert r.status == 401
    r = await env.client.post(
        "/notices", json=notice(), headers={"Authorization": "Bearer tdk_1_wrong"}
    )
    assert r.status == 401
    _, body = await env.post("/notices", "submitter", notice())
    case = body["case"]
    status, _ = await env.post(
        f"/cases/{case}/decision", "submitter", {"decision": "action", "reason": "x"}
    )
    assert status == 403
    status, _ = await env.get(f"/cases/{case}", "submitter2")
    assert status == 404  # another submitter's case is invisible
    status, listing = await env.get("/cases", "submitter2")
    assert listing["count"] == 0
    status, view = await env.get(f"/cases/{case}", "submitter")
    assert status == 200 and view["state"] == "under_review"
    status, _ = await env.post(f"/cases/{case}/decision", "operator", {"decision": "maybe"})
    assert status == 400


async def test_sites_with_ports_and_unicode_hosts(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    env.svc.store.run_sync(add_site, "127.0.0.1:8080", "Local", env.clock(), None, None)
    env.svc.store.run_sync(add_site, "Bücher.example", "Books", env.clock(), None, None)
    status, body = await env.post(
        "/notices",
        "submitter",
        notice(
            {"url": "http://127.0.0.1:8080/x"},
            {"url": "http://127.0.0.1:9090/x"},
            {"url": "https://BÜCHER.example/a"},
        ),
    )
    assert [t["status"] for t in body["targets"]] == ["accepted", "rejected", "accepted"]
    assert body["targets"][1]["reason"] == "host 127.0.0.1:9090 is not served by this service"
    _, view = await env.get(f"/cases/{body['case']}")
    assert [(t["value"], t["host"]) for t in view["targets"] if t["accepted"]] == [
        ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
        ("https://xn--bcher-kva.example/a", "xn--bcher-kva.example"),
    ]


async def test_withdrawal_by_its_submitter_only(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "submitter", notice())
    status, _ = await env.post(f"/cases/{body['case']}/withdraw", "submitter2", {})
    assert status == 403
    status, out = await env.post(f"/cases/{body['case']}/withdraw", "submitter", {})
    assert status == 200 and out["state"] == "withdrawn"
    status, _ = await env.post(
        f"/cases/{body['case']}/decision", "operator", {"decision": "action", "reason": "x"}
    )
    assert status == 409
