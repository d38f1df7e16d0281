"""Issue 14: the audit chain's anchor. An insider who holds the database drops the triggers,
rewrites a record and recomputes every hash after it: the chain alone says intact, the signed
heads kept outside the database (the heads file, the edges, a report) do not."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import msgspec
import pytest

from proxy.takedown import anchor, audit
from proxy.takedown.cli import main
from tests.takedown.conftest import T0, Env, MakeEnv, notice
from tests.takedown.test_audit import snapshot


async def enforced_case(make_env: MakeEnv) -> Env:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "trusted", notice())
    await env.wait_state(body["case"], "enforced")
    return env


def first_seq(db: Path, event: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT MIN(seq) FROM audit_log WHERE event = ?", (event,)).fetchone()[0]
        )


def rewrite_as_insider(db: Path, seq: int, data: dict[str, object]) -> None:
    """What someone holding the file can do: drop the triggers, edit a record, recompute the
    chain from there and the head, and put the triggers back."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("UPDATE audit_log SET data = ? WHERE seq = ?", (audit.canonical_json(data), seq))
    prev = conn.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq - 1,)).fetchone()[0]
    rows = conn.execute("SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
    for r in rows:
        rec = audit.record_bytes(r["seq"], r["at"], r["event"], r["case_id"], r["actor"], r["data"])
        digest = audit.chain_hash(prev, rec)
        conn.execute(
            "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, r["seq"])
        )
        prev = digest
    conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (rows[-1]["seq"], prev))
    conn.commit()
    conn.close()
    # The rewrite is self-consistent: the chain on its own finds nothing.
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    assert audit.verify(conn) == (rows[-1]["seq"], None)
    conn.close()


def verify(db: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    rc = main(["verify-log", "--db", str(db), *extra])
    return rc, capsys.readouterr().out


async def test_intact_log_is_anchored(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await enforced_case(make_env)
    db = snapshot(env.db, tmp_path / "copy.sqlite")
    rc, out = verify(db, capsys)
    assert rc == 0, out
    assert "audit log OK" in out and "anchored: records 1-" in out, out


async def test_insider_rewrite_with_recomputed_chain_is_named(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await enforced_case(make_env)
    db = snapshot(env.db, tmp_path / "copy.sqlite")
    seq = first_seq(db, "decided")
    rewrite_as_insider(db, seq, {"decision": "reject", "automated": False})
    rc, out = verify(db, capsys)
    assert rc == 1, out
    assert f"audit log BROKEN at record {seq}: differs from the hash signed for it" in out, out
    assert "recomputed" in out


async def test_rewrite_caught_by_the_head_an_edge_kept(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The insider also deletes the heads file; the head the edge received with the block
    still vouches for the records up to it."""
    env = await enforced_case(make_env)
    [edge] = env.edges
    kept = edge.audit_heads[-1]
    assert (
        anchor.verify_head(
            msgspec.convert(kept, anchor.SignedHead),
            anchor.public_key_of(Path(f"{env.db}.anchor.key.pub").read_bytes()),
        )
        is None
    )
    db = snapshot(env.db, tmp_path / "copy.sqlite")
    seq = first_seq(db, "received")  # the case opened: on a court order, says the rewrite
    assert seq <= kept["seq"]
    rewrite_as_insider(db, seq, {"notice": 1, "legal_basis": "order", "trusted": True})
    Path(f"{db}.heads.jsonl").unlink()
    rc, out = verify(db, capsys)
    assert rc == 1 and "UNANCHORED" in out, out
    rc, out = verify(db, capsys, "--head", json.dumps(kept))
    assert rc == 1, out
    assert f"BROKEN at record {kept['seq']}: hash differs from the signed head" in out, out
    assert f"a record from 1 to {kept['seq']} was rewritten" in out


async def test_heads_file_tampering_is_reported(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await enforced_case(make_env)
    db = snapshot(env.db, tmp_path / "copy.sqlite")
    heads = Path(f"{db}.heads.jsonl")
    lines = heads.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2  # at start, and with the publication
    # A head's records edited to point elsewhere: its signature covers their digest.
    line = json.loads(lines[0])
    line["records"][0] = "f" * 64
    heads.write_bytes(json.dumps(line).encode() + b"\n" + b"".join(lines[1:]))
    rc, out = verify(db, capsys)
    assert rc == 1 and f"signed heads BROKEN: {heads}:1: records do not match" in out, out
    # A line removed from the middle: the next one no longer follows on.
    heads.write_bytes(b"".join(lines[1:]))
    rc, out = verify(db, capsys)
    assert rc == 1 and f"{heads}:1: follows the head at record" in out, out


async def test_signed_head_in_reports(
    make_env: MakeEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = await enforced_case(make_env)
    db = snapshot(env.db, tmp_path / "copy.sqlite")
    day = dt.datetime.fromtimestamp(T0, dt.UTC).date().isoformat()
    latest = json.loads(Path(f"{db}.heads.jsonl").read_bytes().splitlines()[-1])
    args = ["report", "--db", str(db), "--from", day, "--to", day]
    assert main([*args, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert f"Latest signed head: record {latest['seq']}, hash `{latest['hash']}`" in md
    assert main([*args, "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["audit_anchor"]["signature"] == latest["signature"]


async def test_heads_signed_periodically_only_when_the_log_moved(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    env = await enforced_case(make_env)
    heads = Path(f"{env.db}.heads.jsonl")
    before = heads.read_bytes().count(b"\n")
    await env.svc.sign_head()
    await env.svc.sign_head()
    after = heads.read_bytes().count(b"\n")
    assert after - before <= 1
    head = await env.svc.sign_head()
    assert head is not None and head.seq == env.svc.store.committed_head[0]  # type: ignore[index]
