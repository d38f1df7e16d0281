"""The hash-chained audit log: verify-log catches edited, removed and reordered records."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.takedown.cli import main
from tests.takedown.conftest import MakeEnv, notice

Tamper = Callable[[sqlite3.Connection], object]


@pytest.fixture
async def db(make_env: MakeEnv, tmp_path: Path) -> Path:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "trusted", notice())
    await env.wait_state(body["case"], "enforced")
    await env.post("/notices", "submitter", notice({"url": "https://cdn.example/b"}))
    return snapshot(env.db, tmp_path / "copy.sqlite")


def snapshot(db: Path, copy: Path) -> Path:
    """A consistent copy while the service still runs, with its signed heads and anchor key
    (heads first: they never vouch for a record the copied database lacks)."""
    shutil.copy(f"{db}.heads.jsonl", f"{copy}.heads.jsonl")
    shutil.copy(f"{db}.anchor.key.pub", f"{copy}.anchor.key.pub")
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return copy


def _verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["verify-log", "--db", str(path)])
    return rc, capsys.readouterr().out


def _tamper(path: Path, fn: Tamper) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    fn(conn)
    conn.commit()
    conn.close()


def test_intact_log_verifies(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verify(db, capsys)
    assert rc == 0 and "OK" in out


def test_log_is_append_only(db: Path) -> None:
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 3")
    conn.close()


def _swap(conn: sqlite3.Connection) -> None:
    cols = "at, event, case_id, actor, data, prev_hash, hash"
    a = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = 8").fetchone()
    b = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = 9").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = 8", b)
    conn.execute(f"UPDATE audit_log SET {sets} WHERE seq = 9", a)


CASES: dict[str, tuple[Tamper, str]] = {
    "one byte edited": (
        lambda c: c.execute(
            "UPDATE audit_log SET data = replace(data, 'cdn', 'cdm') WHERE seq = ("
            "SELECT MIN(seq) FROM audit_log WHERE data LIKE '%cdn%')"
        ),
        "edited",
    ),
    "timestamp edited": (
        lambda c: c.execute("UPDATE audit_log SET at = at + 1 WHERE seq = 8"),
        "record 8: content",
    ),
    "record removed": (lambda c: c.execute("DELETE FROM audit_log WHERE seq = 8"), "record 8"),
    "records reordered": (_swap, "record 8"),
    "last record removed": (
        lambda c: c.execute("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)"),
        "removed",
    ),
    "notice body edited": (
        lambda c: c.execute(
            "UPDATE notices SET raw = CAST(replace(CAST(raw AS TEXT), 'Song', 'Sing') AS BLOB)"
            " WHERE id = 1"
        ),
        "notice 1 raw body",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampering_is_detected(name: str, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fn, where = CASES[name]
    _tamper(db, fn)
    rc, out = _verify(db, capsys)
    assert rc == 1, out
    assert "BROKEN" in out and where in out, out
