"""Issue 14, bad input: junk never opens a case. A body that is not a notice (not JSON, not an
object, a field of the wrong type) answers 400 with one error naming the field, is kept byte
for byte as a rejected submission and counted in /metrics; a well-formed but incomplete notice
still gets its case and a 422 listing the missing legal elements; a reversed report range is a
400 naming the parameters, not an empty report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.takedown.cli import main
from tests.takedown.conftest import Env, MakeEnv, notice
from tests.takedown.test_file_drop import COUNTER
from tests.takedown.test_metrics import scrape
from tests.takedown.test_redress import enforced


def _with(**over: Any) -> bytes:
    return json.dumps(notice(**over)).encode()


def _nested(path: str, value: Any) -> bytes:
    doc = notice()
    head, _, leaf = path.partition(".")
    doc[head] = {**doc[head], leaf: value}
    return json.dumps(doc).encode()


JUNK = [
    (b"\xffnot json", "(body)", "the body is not valid JSON"),
    (b"", "(body)", "the body is not valid JSON"),
    (b'{"targets": [', "(body)", "the body is not valid JSON"),
    (b"[1, 2]", "(body)", "must be a JSON object, got a list"),
    (b'"a notice"', "(body)", "must be a JSON object, got a string"),
    (b"{}", "targets", "is required"),
    (_with(targets="https://cdn.example/a.mp3"), "targets", "must be a list, got a string"),
    (_with(targets=[]), "targets", "must be a list of length >= 1"),
    (_with(targets=["https://cdn.example/a.mp3"]), "targets[0]", "must be an object, got a string"),
    (_with(targets=[{"url": 5}]), "targets[0].url", "must be a string, got an integer"),
    (_with(targets=[{}, {"link": "x"}]), "targets", "no target names a `url` or a `sha256`"),
    (_with(works="Song A"), "works", "must be a list, got a string"),
    (_with(works=["Song A"]), "works[0]", "must be an object, got a string"),
    (_with(complainant="Rights Org"), "complainant", "must be an object, got a string"),
    (_nested("complainant.name", 7), "complainant.name", "must be a string, got an integer"),
    (_nested("statements.good_faith", "yes"), "statements.good_faith", "must be true or false"),
    (_with(signature=True), "signature", "must be a string, got true or false"),
]


def _rejected(env: Env) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in env.svc.store.run_sync(
            lambda c: c.execute(
                "SELECT route, case_id, raw, raw_sha256, errors FROM rejected_submissions"
                " ORDER BY id"
            ).fetchall()
        )
    ]


async def test_junk_notices_are_refused_by_field_and_kept_without_a_case(
    make_env: MakeEnv,
) -> None:
    env = await make_env(n_edges=1)
    before = await scrape(env)
    for raw, field, message in JUNK:
        r = await env.client.post("/notices", data=raw, headers=env.auth("submitter"))
        out = await r.json()
        assert r.status == 400, (raw, out)
        [err] = out["errors"]
        assert (err["field"], message in err["message"]) == (field, True), (raw, err)
        assert out["error"].startswith("not a valid notice: ")
        assert out["sha256"] == hashlib.sha256(raw).hexdigest() and out["bytes"] == len(raw)
        assert "case" not in out
    _, listing = await env.get("/cases")
    assert listing["count"] == 0
    kept = _rejected(env)
    assert [(k[0], k[1], bytes(k[2])) for k in kept] == [("notice", None, raw) for raw, *_ in JUNK]
    assert json.loads(kept[6][4]) == [
        {"field": "targets", "message": "must be a list, got a string"}
    ]
    after = await scrape(env)
    key = ("edgeproxy_takedown_rejected_submissions", (("route", "notice"),))
    assert before[key] == 0 and after[key] == len(JUNK)
    assert after[("edgeproxy_takedown_notices", (("state", "incomplete"),))] == 0
    log = env.svc.store.run_sync(
        lambda c: c.execute(
            "SELECT case_id, data FROM audit_log WHERE event = 'submission_rejected'"
        ).fetchall()
    )
    assert len(log) == len(JUNK) and all(r[0] is None for r in log)
    # Staff read them back, newest first, and each one's bytes exactly as sent.
    status, listed = await env.get("/rejected-submissions?limit=3")
    n = len(JUNK)
    assert status == 200 and [r["id"] for r in listed["rejected_submissions"]] == [n, n - 1, n - 2]
    newest = listed["rejected_submissions"][0]
    assert newest["errors"] == [
        {"field": "signature", "message": "must be a string, got true or false"}
    ]
    assert newest["route"] == "notice" and newest["bytes"] == len(JUNK[-1][0])
    r = await env.client.get("/rejected-submissions/1/raw", headers=env.auth("admin"))
    assert r.status == 200 and await r.read() == JUNK[0][0]
    r = await env.client.get("/rejected-submissions/99/raw", headers=env.auth("admin"))
    assert r.status == 404
    status, out = await env.get("/rejected-submissions?limit=0")
    assert status == 400 and out["error"].startswith("limit: must be an integer")


async def test_incomplete_but_well_formed_notice_still_opens_a_case(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    doc = notice()
    del doc["signature"], doc["works"]
    status, body = await env.post("/notices", "submitter", doc)
    assert status == 422 and body["missing"] == ["signature", "works"]
    assert body["state"] == "incomplete"
    assert _rejected(env) == []


async def test_counter_notice_material_as_a_string_is_must_be_a_list(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    case = await enforced(env)
    for bad, field, message in [
        ({**COUNTER, "material": "https://cdn.example/a.mp3"}, "material", "must be a list"),
        ({**COUNTER, "subscriber": "O"}, "subscriber", "must be an object, got a string"),
        (
            {**COUNTER, "statements": {"good_faith_mistake": 1}},
            "statements.good_faith_mistake",
            "must be true or false, got an integer",
        ),
    ]:
        raw = msgspec.json.encode(bad)
        status, out = await env.post(f"/cases/{case}/counter-notice", "customer", raw)
        assert status == 400, out
        assert out["errors"] == [{"field": field, "message": out["errors"][0]["message"]}]
        assert message in out["errors"][0]["message"]
        assert "missing" not in out
    _, view = await env.get(f"/cases/{case}")
    assert view["state"] == "enforced" and view["restore"] is None
    assert "counter_notice" not in [e["event"] for e in view["timeline"]]
    assert sum(e["event"] == "submission_rejected" for e in view["timeline"]) == 3
    assert [k[:2] for k in _rejected(env)] == [("counter_notice", case)] * 3
    m = await scrape(env)
    assert m[("edgeproxy_takedown_rejected_submissions", (("route", "counter_notice"),))] == 3
    # Missing elements of a well-formed counter-notice are still "missing", not junk.
    partial = {k: v for k, v in COUNTER.items() if k != "material"}
    status, out = await env.post(f"/cases/{case}/counter-notice", "customer", partial)
    assert status == 422 and out["missing"] == ["material"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-12-31&to=2026-01-01", "from/to: the range is reversed"),
        ("to=2026-01-01", "from: required"),
        ("from=2026-01-01", "to: required"),
        ("from=2026-13-01&to=2026-12-31", "from: not a date"),
        ("from=2026-01-01&to=yesterday", "to: not a date"),
        ("from=2026-01-01&to=2026-12-31&format=pdf", "format: must be json, csv or md"),
    ],
)
async def test_report_range_errors_name_the_parameters(
    make_env: MakeEnv, query: str, message: str
) -> None:
    env = await make_env(n_edges=1)
    status, out = await env.get(f"/reports?{query}")
    assert status == 400 and out["error"].startswith(message), out


async def test_cli_report_refuses_a_reversed_range(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await make_env(n_edges=1)
    rc = main(["report", "--db", str(env.db), "--from", "2026-12-31", "--to", "2026-01-01"])
    err = capsys.readouterr().err
    assert rc == 2 and "--from 2026-12-31 is after --to 2026-01-01" in err


async def test_malformed_list_queries_are_400(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    status, out = await env.get("/cases?state=enforced,bogus")
    assert status == 400 and out["error"].startswith("state: unknown bogus")
    status, out = await env.get("/cases?sort=urgency")
    assert status == 400 and out["error"].startswith("sort: must be one of id, deadline")
