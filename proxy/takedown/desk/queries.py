"""What the console's pages read beyond `views.case_view`: the queue, each notice as received,
counter-notices, strikes and suspensions, blocklist versions with their acknowledgements.

Plain reads on the store thread; nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from proxy.takedown.config import TakedownConfig
from proxy.takedown.publications import deliveries
from proxy.takedown.states import DECIDABLE, S
from proxy.takedown.strikes import live_count, thresholds
from proxy.takedown.views import overdue_reasons

ENFORCING = (S.ACTIONED, S.PUBLISHED)


def _first_notice(conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT parsed FROM notices WHERE case_id = ? ORDER BY complete DESC, id LIMIT 1",
        (case_id,),
    ).fetchone()
    doc = json.loads(row[0]) if row and row[0] else {}
    return doc if isinstance(doc, dict) else {}


def _summary(
    conn: sqlite3.Connection, row: sqlite3.Row, now: float, cfg: TakedownConfig, due: float
) -> dict[str, Any]:
    doc = _first_notice(conn, row["id"])
    who = doc.get("complainant")
    works = doc.get("works")
    targets = conn.execute(
        "SELECT COUNT(*), GROUP_CONCAT(DISTINCT host) FROM targets"
        " WHERE case_id = ? AND accepted = 1",
        (row["id"],),
    ).fetchone()
    return {
        "id": row["id"],
        "state": row["state"],
        "legal_basis": row["legal_basis"],
        "trusted": bool(row["trusted"]),
        "received_at": row["received_at"],
        "due_at": due,
        "due_in_s": due - now,
        "overdue": overdue_reasons(row, now, cfg),
        "complainant": str(who.get("name", "")) if isinstance(who, dict) else "",
        "work": str((works[0] or {}).get("title", ""))
        if isinstance(works, list) and works and isinstance(works[0], dict)
        else "",
        "targets": targets[0],
        "hosts": targets[1] or "",
    }


def queue(conn: sqlite3.Connection, now: float, cfg: TakedownConfig) -> dict[str, Any]:
    """Cases waiting for a decision, then cases waiting for their edges, each soonest due
    first (the overdue on top)."""
    d = cfg.deadlines
    marks = ",".join("?" * len(DECIDABLE))
    decide = [
        _summary(conn, r, now, cfg, r["received_at"] + d.decision_s)
        for r in conn.execute(f"SELECT * FROM cases WHERE state IN ({marks})", DECIDABLE)
    ]
    marks = ",".join("?" * len(ENFORCING))
    enforce = [
        _summary(conn, r, now, cfg, (r["decided_at"] or r["received_at"]) + d.enforcement_s)
        for r in conn.execute(f"SELECT * FROM cases WHERE state IN ({marks})", ENFORCING)
    ]
    incomplete = conn.execute(
        "SELECT COUNT(*) FROM cases WHERE state = ?", (S.INCOMPLETE.value,)
    ).fetchone()[0]
    return {
        "decide": sorted(decide, key=lambda c: c["due_at"]),
        "enforce": sorted(enforce, key=lambda c: c["due_at"]),
        "incomplete": incomplete,
    }


def all_cases(
    conn: sqlite3.Connection, now: float, cfg: TakedownConfig, state: str | None, limit: int
) -> list[dict[str, Any]]:
    sql, args = "SELECT * FROM cases", []
    if state:
        sql, args = sql + " WHERE state = ?", [state]
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [_summary(conn, r, now, cfg, r["received_at"] + cfg.deadlines.decision_s) for r in rows]


def notices(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    """Each notice of the case as received: its bytes (shown as text, escaped by the template)
    and the fields parsed from them."""
    out = []
    for n in conn.execute(
        "SELECT n.*, a.name AS account, a.role FROM notices n"
        " LEFT JOIN accounts a ON a.id = n.account_id WHERE n.case_id = ? ORDER BY n.id",
        (case_id,),
    ):
        raw = bytes(n["raw"])
        parsed = json.loads(n["parsed"]) if n["parsed"] else None
        try:
            pretty = json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = raw.decode("utf-8", "replace")
        out.append(
            {
                "id": n["id"],
                "received_at": n["received_at"],
                "account": n["account"],
                "role": n["role"],
                "remote": n["remote"],
                "complete": bool(n["complete"]),
                "missing": json.loads(n["missing"]),
                "sha256": n["raw_sha256"],
                "bytes": len(raw),
                "text": pretty,
                "doc": parsed if isinstance(parsed, dict) else {},
            }
        )
    return out


def counter_notices(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    out = []
    for r in conn.execute(
        "SELECT id, received_at, raw, raw_sha256 FROM counter_notices WHERE case_id = ?"
        " ORDER BY id",
        (case_id,),
    ):
        raw = bytes(r["raw"])
        try:
            text = json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
        except ValueError:
            text = raw.decode("utf-8", "replace")
        out.append({"id": r["id"], "received_at": r["received_at"], "text": text})
    return out


def restores(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT id, state, counter_notice_at, restore_not_before, restore_not_after,"
            " restore_at, restore_state, restored_at, lawsuit_at FROM cases"
            " WHERE restore_state IS NOT NULL ORDER BY restore_at"
        )
    ]


def sites(conn: sqlite3.Connection, now: float, cfg: TakedownConfig) -> list[dict[str, Any]]:
    """Every site with its customer, live strikes against the policy's thresholds, and its
    warning and suspension."""
    out = []
    for r in conn.execute(
        "SELECT s.host, s.warned_at, s.suspended_at, c.name AS customer, c.verification"
        " FROM sites s JOIN customers c ON c.id = s.customer_id ORDER BY s.suspended_at IS NULL,"
        " s.host"
    ):
        t = thresholds(cfg.strikes, r["verification"])
        out.append(
            {
                **dict(r),
                "strikes": live_count(conn, r["host"], now, cfg.strikes),
                "warn_at": t.warn_at,
                "suspend_at": t.suspend_at,
                "cases": [
                    c[0]
                    for c in conn.execute(
                        "SELECT case_id FROM strikes WHERE host = ? ORDER BY at DESC LIMIT 20",
                        (r["host"],),
                    )
                ],
            }
        )
    return out


def strikes_of(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT host, at, tolled_at FROM strikes WHERE case_id = ? ORDER BY id", (case_id,)
        )
    ]


def publications(
    conn: sqlite3.Connection, now: float, cfg: TakedownConfig, limit: int
) -> list[dict[str, Any]]:
    """Blocklist changes, newest first, each with every edge's version and acknowledgement."""
    out = []
    for p in conn.execute(
        "SELECT id, kind, case_id, host, entries, created_at, published_at, file_sequence"
        " FROM publications ORDER BY id DESC LIMIT ?",
        (limit,),
    ):
        out.append(
            {
                **{k: p[k] for k in p.keys() if k != "entries"},
                "entries": json.loads(p["entries"]),
                "edges": deliveries(conn, p["id"], now, cfg.deadlines.enforcement_s),
            }
        )
    return out


def public_case(conn: sqlite3.Connection, case_id: int) -> dict[str, Any] | None:
    """What anyone may learn from a case reference (the 451 page links here): the state, the
    decision date and the legal ground. No names, addresses or notice text."""
    row = conn.execute(
        "SELECT id, state, legal_basis, received_at, decided_at, decision, enforced_at,"
        " restore_state FROM cases WHERE id = ?",
        (case_id,),
    ).fetchone()
    return None if row is None else dict(row)
