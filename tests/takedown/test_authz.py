"""Every route of the API for every kind of account (issue 14: anyone could counter-notice).

The routes are read from the app's router, so a route added without an entry in EXPECTED (and
a rule in `authz.RULES`) fails here. EXPECTED is written out by hand, not derived from the
rules, so that the two are checked against each other."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import pytest

from proxy.takedown.api import build_app
from tests.takedown.conftest import Env, MakeEnv, notice
from tests.takedown.test_file_drop import COUNTER
from tests.takedown.test_kyc import KYC_EXPECTED

# submitter filed the case (against cdn.example, customer Acme = "customer"); submitter2,
# trusted and customer2 (Shady) are strangers to it.
WHO = ("submitter", "submitter2", "trusted", "operator", "admin", "customer", "customer2")
STAFF = {"operator", "admin"}
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/healthz"): set(WHO),
    ("GET", "/metrics"): set(WHO),
    ("POST", "/notices"): set(WHO) - {"customer", "customer2"},
    ("GET", "/notices/{notice}/raw"): STAFF | {"submitter"},
    ("GET", "/cases"): set(WHO),
    ("GET", "/cases/{case}"): STAFF | {"submitter", "customer"},
    ("GET", "/cases/{case}/statement"): STAFF | {"submitter", "customer"},
    ("POST", "/cases/{case}/decision"): STAFF,
    ("POST", "/cases/{case}/withdraw"): {"admin", "submitter"},
    ("POST", "/cases/{case}/counter-notice"): STAFF | {"customer"},
    ("POST", "/cases/{case}/lawsuit"): STAFF | {"submitter"},
    ("POST", "/cases/{case}/reverse"): STAFF,
    # DSA Art. 20: the parties complain (the complainant, the affected customer); staff reverse.
    ("POST", "/cases/{case}/complaint"): {"submitter", "customer"},
    ("POST", "/cases/{case}/complaint/dismiss"): STAFF,
    ("POST", "/sites/{host}/unsuspend"): STAFF,
    ("GET", "/reports"): STAFF,
    ("GET", "/rejected-submissions"): STAFF,
    ("GET", "/rejected-submissions/{submission}/raw"): STAFF,
}
# Customer verification's routes need their own fixtures: tests/takedown/test_kyc.py.
EXPECTED.update(KYC_EXPECTED)
BODIES: dict[str, Any] = {
    "/notices": notice(),
    "/cases/{case}/decision": {"decision": "reject", "reason": "x"},
    "/cases/{case}/counter-notice": COUNTER,
    "/cases/{case}/reverse": {"statement": "mistaken identification"},
    "/cases/{case}/complaint": {"statement": "this is my own recording"},
    "/cases/{case}/complaint/dismiss": {"statement": "the notice stands"},
    "/sites/{host}/unsuspend": {"statement": "identity verified"},
}
QUERIES = {"/reports": "?from=2026-01-01&to=2026-12-31"}


def routes() -> list[tuple[str, str]]:
    svc = MagicMock()
    svc.cfg.service.max_notice_bytes = 1 << 20
    out = set()
    for r in build_app(svc, manage_service=False).router.routes():
        if r.method == "HEAD" or r.resource is None:
            continue
        out.add((r.method, r.resource.canonical))
    return sorted(out)


def test_every_route_has_an_expectation_and_a_rule() -> None:
    from proxy.takedown import authz

    assert set(routes()) == set(EXPECTED)
    assert set(authz.RULES) == set(EXPECTED)


async def actioned_case(env: Env) -> tuple[int, int]:
    status, body = await env.post("/notices", "submitter", notice())
    assert status == 201, body
    status, _ = await env.post(
        f"/cases/{body['case']}/decision", "operator", {"decision": "action", "reason": "ok"}
    )
    assert status == 200
    await env.wait_state(body["case"], "enforced")
    return body["case"], body["id"]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize(("method", "route"), [r for r in routes() if r not in KYC_EXPECTED])
async def test_route_by_role(make_env: MakeEnv, method: str, route: str, who: str) -> None:
    env = await make_env(n_edges=1)
    case, nid = await actioned_case(env)
    path = route.replace("{case}", str(case)).replace("{notice}", str(nid))
    if "{submission}" in route:  # a junk notice, kept as rejected submission 1
        assert (await env.post("/notices", "submitter", b"junk"))[0] == 400
    path = path.replace("{host}", "cdn.example").replace("{submission}", "1")
    path += QUERIES.get(route, "")
    body = BODIES.get(route, {})
    if method == "GET":
        r = await env.client.get(path, headers=env.auth(who))
    else:
        r = await env.client.post(path, json=body, headers=env.auth(who))
    allowed = who in EXPECTED[(method, route)]
    if allowed:
        assert r.status not in (401, 403, 404), (r.status, await r.text())
    else:
        assert r.status == (404 if method == "GET" else 403), (r.status, await r.text())
    if route not in ("/healthz", "/metrics"):
        anon = await env.client.request(method, path, json=body if method == "POST" else None)
        assert anon.status == 401


def _strike(env: Env, case: int) -> list[Any]:
    return [
        tuple(r)
        for r in env.svc.store.run_sync(
            lambda c: c.execute(
                "SELECT host, at, tolled_at FROM strikes WHERE case_id = ?", (case,)
            ).fetchall()
        )
    ]


async def test_issue14_counter_notice_by_a_stranger_leaves_no_trace(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    case, _ = await actioned_case(env)
    _, before = await env.get(f"/cases/{case}")
    strikes = _strike(env, case)
    assert strikes and strikes[0][2] is None
    for who in ("submitter2", "trusted", "customer2", "submitter"):
        # Strangers cannot see the case; its complainant can, but the answer is not its own.
        status, _ = await env.get(f"/cases/{case}", who)
        assert status == (200 if who == "submitter" else 404)
        status, out = await env.post(f"/cases/{case}/counter-notice", who, COUNTER)
        assert status == 403, out
    _, after = await env.get(f"/cases/{case}")
    assert after["state"] == before["state"] == "enforced"
    assert after["restore"] == before["restore"]
    assert _strike(env, case) == strikes
    refused = [e for e in after["timeline"] if e["event"] == "access_refused"]
    assert [e["actor"].split(":")[0] for e in refused] == [
        "submitter",
        "trusted",
        "customer",
        "submitter",
    ]
    assert {e["data"]["route"] for e in refused} == {"/cases/{case}/counter-notice"}
    assert not any(e["event"] == "counter_notice" for e in after["timeline"])
    # The affected customer may.
    status, out = await env.post(f"/cases/{case}/counter-notice", "customer", COUNTER)
    assert status == 201 and out["state"] == "restore_scheduled"
    assert _strike(env, case)[0][2] is not None


async def test_undo_refused_to_the_wrong_roles_is_on_record(make_env: MakeEnv) -> None:
    """A refused reversal is audited on its case; a refused unsuspension, which names no case,
    in the log; nothing is lifted either way."""
    env = await make_env(n_edges=1)
    case, _ = await actioned_case(env)
    for who in ("submitter", "customer", "trusted"):
        status, _ = await env.post(f"/cases/{case}/reverse", who, {"statement": "undo"})
        assert status == 403
        status, _ = await env.post("/sites/cdn.example/unsuspend", who, {"statement": "undo"})
        assert status == 403
    status, _ = await env.post(f"/cases/{case}/complaint", "operator", {"statement": "x"})
    assert status == 403  # staff reverse; complaints are the parties'
    _, view = await env.get(f"/cases/{case}")
    assert view["state"] == "enforced" and env.edges[0].entries
    refused = [e["data"] for e in view["timeline"] if e["event"] == "access_refused"]
    assert [r["route"] for r in refused] == ["/cases/{case}/reverse"] * 3 + [
        "/cases/{case}/complaint"
    ]
    site_refusals = env.svc.store.run_sync(
        lambda c: c.execute(
            "SELECT actor, data FROM audit_log WHERE event = 'access_refused' AND case_id IS NULL"
        ).fetchall()
    )
    assert [r[0].split(":")[0] for r in site_refusals] == ["submitter", "customer", "trusted"]
    assert all('"/sites/cdn.example/unsuspend"' in r[1] for r in site_refusals)
