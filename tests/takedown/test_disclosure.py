"""Disclosure requests as a case (issue 15): a 512(h) subpoena or court order naming a site is
recorded, the identity record is disclosed to staff for the requester, and the audit chain
keeps the order and the fact of disclosure (not the personal data)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.takedown import audit
from tests.takedown.conftest import Env, MakeEnv
from tests.takedown.test_kyc import IDENTITY, ORDER, call, kyc_env


def _timeline(env: Env, case: int) -> list[tuple[str, dict[str, Any]]]:
    rows = env.svc.store.run_sync(
        lambda c: c.execute(
            "SELECT event, data FROM audit_log WHERE case_id = ? ORDER BY seq", (case,)
        ).fetchall()
    )
    return [(r[0], json.loads(r[1])) for r in rows]


async def test_subpoena_recorded_disclosed_and_audited(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    await call(env, "PUT", "/customers/Acme/identity", body=IDENTITY)
    status, d = await call(env, "POST", "/disclosures", body=ORDER)
    assert status == 201 and d["state"] == "disclosure_pending", d
    case = d["case"]
    # It is a case like any other: listed, with its timeline.
    _, listed = await call(env, "GET", "/cases")
    assert {"id": case, "legal_basis": "disclosure-512h"}.items() <= next(
        c for c in listed["cases"] if c["id"] == case
    ).items()
    status, out = await call(env, "POST", f"/disclosures/{case}/disclose", who="admin")
    assert status == 200, out
    assert out["state"] == "disclosed"
    assert out["identity"]["legal_name"] == IDENTITY["legal_name"]
    assert out["identity"]["customer"] == "Acme"
    status, again = await call(env, "POST", f"/disclosures/{case}/disclose")
    assert status == 409  # disclosed once; a second disclosure needs a new order
    events = _timeline(env, case)
    names = [e for e, _ in events]
    assert names == ["disclosure_requested", "disclosed", "identity_disclosed"]
    requested = events[0][1]
    for k in ("issuer", "reference", "date", "document_sha256", "requester"):
        assert requested[k] == ORDER[k]
    shared = events[2][1]
    assert shared["to"] == ORDER["requester"] and "legal_name" in shared["fields"]
    assert IDENTITY["address"] not in json.dumps(events)
    _, view = await call(env, "GET", f"/cases/{case}")
    assert [e["event"] for e in view["timeline"]] == names
    assert env.svc.store.run_sync(audit.verify)[1] is None


async def test_disclosure_without_identity_is_a_conflict_and_can_be_rejected(
    make_env: MakeEnv,
) -> None:
    env = await kyc_env(make_env)
    _, d = await call(env, "POST", "/disclosures", body={**ORDER, "kind": "court-order"})
    status, out = await call(env, "POST", f"/disclosures/{d['case']}/disclose")
    assert status == 409 and "no identity record" in out["error"]
    status, out = await call(
        env, "POST", f"/disclosures/{d['case']}/reject", body={"reason": "unsigned"}
    )
    assert status == 200 and out["state"] == "rejected"
    assert [e for e, _ in _timeline(env, d["case"])] == ["disclosure_requested", "rejected"]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"kind": "letter"}, "kind"),
        ({"issuer": ""}, "issuer"),
        ({"date": "yesterday"}, "date"),
        ({"document_sha256": "00"}, "document_sha256"),
        ({"site": "unknown.example"}, "not served here"),
        ({"requester": None}, "requester"),
    ],
)
async def test_bad_order_is_refused_and_opens_no_case(
    make_env: MakeEnv, over: dict[str, Any], field: str
) -> None:
    env = await kyc_env(make_env)
    status, out = await call(env, "POST", "/disclosures", body={**ORDER, **over})
    assert status == 400 and field in out["error"], out
    _, listed = await call(env, "GET", "/cases")
    assert listed["count"] == 0
