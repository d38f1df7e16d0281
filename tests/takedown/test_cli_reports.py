"""CLI commands (add-account, add-site, decide) and the report in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from proxy.takedown.cli import main
from proxy.takedown.reports import percentile
from tests.takedown.conftest import MakeEnv, notice


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


def test_add_account_prints_key_last_and_add_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "t.sqlite"
    assert (
        main(["takedown", "add-account", "--db", str(db), "--name", "RIAA", "--role", "trusted"])
        == 0
    )
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("tdk_1_")
    assert (
        main(
            [
                "add-site",
                "--db",
                str(db),
                "--host",
                "Cdn.Example",
                "--customer",
                "Acme",
                "--verification",
                "payment",
                "--method",
                "card",
            ]
        )
        == 0
    )
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT key_hash FROM accounts").fetchone()[0] != key  # hash only
    row = conn.execute(
        "SELECT s.host, c.verification, c.verification_method, c.verified_at"
        " FROM sites s JOIN customers c ON c.id = s.customer_id"
    ).fetchone()
    assert row[:3] == ("cdn.example", "payment", "card") and row[3] > 0


async def test_decide_over_http(make_env: MakeEnv, capsys: pytest.CaptureFixture[str]) -> None:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "submitter", notice())
    server = str(env.client.make_url("")).rstrip("/")
    args = [
        "decide",
        "--server",
        server,
        "--case",
        str(body["case"]),
        "--action",
        "--reason",
        "verified match",
    ]
    rc = await asyncio.to_thread(main, [*args, "--key", env.keys["submitter"]])
    assert rc == 1 and "403" in capsys.readouterr().err
    rc = await asyncio.to_thread(main, [*args, "--key", env.keys["operator"]])
    assert rc == 0 and json.loads(capsys.readouterr().out)["state"] == "actioned"
    await env.wait_state(body["case"], "enforced")


async def test_report_formats(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await make_env(n_edges=1)
    _, a = await env.post("/notices", "trusted", notice())
    await env.wait_state(a["case"], "enforced")
    _, b = await env.post(
        "/notices", "submitter", notice({"url": "https://cdn.example/b"}, basis="hosted")
    )
    env.clock.advance(7200)
    await env.post(
        f"/cases/{b['case']}/decision", "operator", {"decision": "reject", "reason": "licensed"}
    )
    doc = notice()
    del doc["signature"]
    await env.post("/notices", "submitter", doc)
    await env.post("/notices", "submitter", notice({"url": "https://cdn.example/c"}, basis="order"))
    env.clock.advance(2 * 86400)  # the order case is now past its decision deadline
    day = "2026-01-05"
    base = ["report", "--db", str(env.db), "--from", day, "--to", "2026-01-07"]
    assert main([*base, "--format", "json", "--chart", str(tmp_path / "c.png")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["notices"]["total"] == 4 and rep["notices"]["incomplete"] == 1
    assert rep["notices"]["by_basis_and_outcome"] == {
        "cache": {"actioned": 1, "incomplete": 1},
        "hosted": {"rejected": 1},
        "order": {"pending": 1},
    }
    assert rep["trusted_submitters"] == {"notices": 1, "cases_actioned_automatically": 1}
    assert rep["times"]["receipt_to_decision"] == {"count": 2, "median_s": 0.0, "p95_s": 7200.0}
    assert rep["times"]["decision_to_enforced_all_edges"]["count"] == 1
    assert rep["overdue"]["now"] == 1 and rep["strikes"]["strikes"] == 1
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["section", "key", "value"]
    assert ["times", "receipt_to_decision.p95_s", "7200.0"] in rows
    assert main([*base, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "| cache | 1 | 1 | 0 | 0 | 2 |" in md and "## Strikes" in md
    assert (
        main(
            [
                "report",
                "--db",
                str(env.db),
                "--from",
                "2025-01-01",
                "--to",
                "2025-12-31",
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["notices"]["total"] == 0
