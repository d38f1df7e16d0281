"""Issue 19, the takedown store: the queries run once per publication, per edge poll and per
restore find their rows through an index, not by scanning every publication or delivery the
service ever made (SQLite's own query plan says which)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from proxy.takedown import publications, restore
from proxy.takedown.store import connect


def _sql(fn: object, fragment: str) -> str:
    """The SQL string in `fn`'s source that contains `fragment`, its pieces joined."""
    source = inspect.getsource(fn)  # type: ignore[arg-type]
    pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', source)
    for i, piece in enumerate(pieces):
        if fragment in piece:
            sql = piece
            for more in pieces[i + 1 :]:
                if not more.startswith((" ", "WHERE")):
                    break
                sql += more
            return sql
    raise AssertionError(f"no SQL with {fragment!r} in {fn}")


@pytest.mark.parametrize(
    ("fn", "fragment", "args", "index"),
    [
        (publications.pending_for, "FROM deliveries d", ("edge-a",), "deliveries_pending"),
        (publications.unpublished, "FROM publications", (), "publications_unpublished"),
        (restore.due_restores, "WHERE case_id = ? AND kind", (1,), "publications_case"),
    ],
)
def test_issue19_per_publication_queries_use_an_index(
    tmp_path: Path, fn: object, fragment: str, args: tuple[object, ...], index: str
) -> None:
    conn = connect(tmp_path / "t.db")
    sql = _sql(fn, fragment)
    plan = " | ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
    assert index in plan, (sql, plan)
    assert not re.search(r"\bSCAN (d|p|deliveries|publications)\b(?! USING)", plan), plan


def test_the_indexes_come_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    connect(path).execute("DROP INDEX deliveries_pending")
    names = {
        r[0] for r in connect(path).execute("SELECT name FROM sqlite_master WHERE type='index'")
    }
    assert {"deliveries_pending", "publications_unpublished", "publications_case"} <= names
