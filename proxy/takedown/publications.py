"""Publications: what must reach every edge, and each edge's acknowledgement of it.

A publication is one change to the blocklist with one delivery row per configured edge: it adds
entries (`block` a case's targets, `suspend` a host) or removes entries this service added
(`REMOVALS`: a `restore` after a counter-notice, a `reversal`, a `withdrawal`, an
`unsuspend`). The publisher (`publisher.py`) moves them; the functions here record each step
in the caller's transaction and move the case along.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.takedown import audit
from proxy.takedown.states import S, State, iso, transition

ADDS = ("block", "suspend")
# Removals travel the same path as blocks (DELETE on the admin API, a delta's `removes` in the
# file drop) and are acknowledged the same way.
REMOVALS = ("restore", "reversal", "withdrawal", "unsuspend")


def create_publication(
    conn: sqlite3.Connection,
    kind: str,
    now: float,
    edges: Sequence[str],
    *,
    entries: list[dict[str, str]],
    case_id: int | None = None,
    host: str | None = None,
) -> int:
    pid = conn.execute(
        "INSERT INTO publications (kind, case_id, host, entries, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (kind, case_id, host, json.dumps(entries), now),
    ).lastrowid
    assert pid is not None
    conn.executemany(
        "INSERT INTO deliveries (publication_id, edge) VALUES (?, ?)", [(pid, e) for e in edges]
    )
    return int(pid)


@dataclass(frozen=True, slots=True)
class Pending:
    publication: int
    kind: str  # one of ADDS or REMOVALS
    entries: list[dict[str, str]]  # for a removal: the entries to remove
    audit_head: dict[str, Any] | None = None  # the signed chain head shipped with it


def unpublished(conn: sqlite3.Connection) -> list[int]:
    return [
        r[0]
        for r in conn.execute("SELECT id FROM publications WHERE published_at IS NULL ORDER BY id")
    ]


def active_entries(conn: sqlite3.Connection) -> list[dict[str, str]]:
    """Every entry that should be enforced now: the full list a file-drop version carries.
    Applied in publication order, so an entry removed and later added again (a site suspended,
    unsuspended, suspended again) is active."""
    out: dict[str, dict[str, str]] = {}
    for kind, entries in conn.execute(
        "SELECT kind, entries FROM publications WHERE published_at IS NOT NULL ORDER BY id"
    ):
        for e in json.loads(entries):
            if kind in REMOVALS:
                out.pop(e["id"], None)
            else:
                out[e["id"]] = e
    return list(out.values())


def own_entry_ids(conn: sqlite3.Connection) -> set[str]:
    """Ids of every entry this service ever asked to block: the only ones it may remove."""
    ids: set[str] = set()
    for (entries,) in conn.execute(
        "SELECT entries FROM publications WHERE kind IN ('block', 'suspend')"
    ):
        ids.update(e["id"] for e in json.loads(entries))
    return ids


def record_refusal(conn: sqlite3.Connection, pid: int, now: float, reason: str) -> None:
    """The file drop refused to write this publication (it stays unpublished and is retried)."""
    row = conn.execute(
        "SELECT kind, case_id, host FROM publications WHERE id = ?", (pid,)
    ).fetchone()
    audit.append(
        conn,
        now,
        "publication_refused",
        case_id=row["case_id"],
        data={"publication": pid, "kind": row["kind"], "host": row["host"], "reason": reason[:500]},
    )


def last_file_sequence(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(file_sequence) FROM publications").fetchone()
    return int(row[0] or 0)


def mark_published(
    conn: sqlite3.Connection,
    pid: int,
    now: float,
    file_sequence: int | None,
    audit_head: dict[str, Any] | None = None,
) -> None:
    row = conn.execute(
        "SELECT kind, case_id, host FROM publications WHERE id = ?", (pid,)
    ).fetchone()
    conn.execute(
        "UPDATE publications SET published_at = ?, file_sequence = ?, audit_head = ? WHERE id = ?",
        (now, file_sequence, json.dumps(audit_head) if audit_head else None, pid),
    )
    data: dict[str, Any] = {"publication": pid, "kind": row["kind"], "file_sequence": file_sequence}
    if audit_head:
        data["audit_head"] = {"seq": audit_head["seq"], "hash": audit_head["hash"]}
    cid = row["case_id"]
    if row["kind"] == "block" and cid is not None:
        conn.execute("UPDATE cases SET published_at = ? WHERE id = ?", (now, cid))
        if (
            State(conn.execute("SELECT state FROM cases WHERE id = ?", (cid,)).fetchone()[0])
            is S.ACTIONED
        ):
            transition(conn, cid, S.PUBLISHED, now, "system", data)
            return
    audit.append(
        conn, now, f"{row['kind']}_published", case_id=cid, data={**data, "host": row["host"]}
    )


def pending_for(conn: sqlite3.Connection, edge: str) -> list[Pending]:
    """This edge's unacknowledged, published deliveries, oldest first (order matters)."""
    return [
        Pending(
            r["id"],
            r["kind"],
            json.loads(r["entries"]),
            json.loads(r["audit_head"]) if r["audit_head"] else None,
        )
        for r in conn.execute(
            "SELECT p.id, p.kind, p.entries, p.audit_head FROM deliveries d JOIN publications p"
            " ON p.id = d.publication_id WHERE d.edge = ? AND d.enforced_at IS NULL"
            " AND p.published_at IS NOT NULL ORDER BY p.id",
            (edge,),
        )
    ]


def record_failure(conn: sqlite3.Connection, pid: int, edge: str, now: float, error: str) -> None:
    row = conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, last_attempt_at = ?"
        " WHERE publication_id = ? AND edge = ? RETURNING attempts",
        (error[:500], now, pid, edge),
    ).fetchone()
    if row is not None and row[0] == 1:  # the first failure is evidence; retries are counted
        case_id = conn.execute("SELECT case_id FROM publications WHERE id = ?", (pid,)).fetchone()
        audit.append(
            conn,
            now,
            "edge_failed",
            case_id=case_id[0],
            data={"publication": pid, "edge": edge, "error": error[:500]},
        )


def record_ack(
    conn: sqlite3.Connection, pid: int, edge: str, version: int, enforced_at: float, now: float
) -> float | None:
    """Record one edge's acknowledgement; returns the case's time from decision to
    enforcement on every edge when this one completed it."""
    conn.execute(
        "UPDATE deliveries SET version = ?, enforced_at = ?, attempts = attempts + 1,"
        " last_attempt_at = ?, last_error = NULL WHERE publication_id = ? AND edge = ?",
        (version, enforced_at, now, pid, edge),
    )
    pub = conn.execute(
        "SELECT kind, case_id, host FROM publications WHERE id = ?", (pid,)
    ).fetchone()
    cid = pub["case_id"]
    audit.append(
        conn,
        now,
        "edge_enforced"
        if pub["kind"] in ADDS
        else "edge_restored"
        if pub["kind"] == "restore"
        else "edge_removed",
        case_id=cid,
        data={
            "publication": pid,
            "kind": pub["kind"],
            "edge": edge,
            "version": version,
            "enforced_at": enforced_at,
        },
    )
    left = conn.execute(
        "SELECT COUNT(*) FROM deliveries WHERE publication_id = ? AND enforced_at IS NULL",
        (pid,),
    ).fetchone()[0]
    if left:
        return None
    last = conn.execute(
        "SELECT MAX(enforced_at) FROM deliveries WHERE publication_id = ?", (pid,)
    ).fetchone()[0]
    conn.execute("UPDATE publications SET done_at = ? WHERE id = ?", (now, pid))
    if cid is None:
        return None
    state = State(conn.execute("SELECT state FROM cases WHERE id = ?", (cid,)).fetchone()[0])
    if pub["kind"] == "block" and state is S.PUBLISHED:
        conn.execute("UPDATE cases SET enforced_at = ? WHERE id = ?", (last, cid))
        transition(conn, cid, S.ENFORCED, now, "system", {"enforced_at": last})
        decided = conn.execute("SELECT decided_at FROM cases WHERE id = ?", (cid,)).fetchone()[0]
        return None if decided is None else max(0.0, float(last) - float(decided))
    if pub["kind"] == "block":
        conn.execute("UPDATE cases SET enforced_at = ? WHERE id = ?", (last, cid))
    elif pub["kind"] == "restore" and state is S.RESTORE_SCHEDULED:
        conn.execute(
            "UPDATE cases SET restored_at = ?, restore_state = 'done' WHERE id = ?", (last, cid)
        )
        transition(conn, cid, S.RESTORED, now, "system", {"restored_at": last})
    elif pub["kind"] == "suspend":
        audit.append(
            conn,
            now,
            "suspension_enforced",
            case_id=cid,
            data={"host": pub["host"], "enforced_at": last},
        )
    elif pub["kind"] in ("reversal", "withdrawal"):
        # The restriction is over on every edge: the proof the undo took effect.
        conn.execute("UPDATE cases SET lifted_at = ? WHERE id = ?", (last, cid))
        audit.append(conn, now, f"{pub['kind']}_enforced", case_id=cid, data={"lifted_at": last})
    elif pub["kind"] == "unsuspend":
        audit.append(
            conn,
            now,
            "unsuspension_enforced",
            case_id=cid,
            data={"host": pub["host"], "lifted_at": last},
        )
    return None


def deliveries(
    conn: sqlite3.Connection, pid: int, now: float, deadline_s: float
) -> list[dict[str, Any]]:
    pub = conn.execute("SELECT created_at FROM publications WHERE id = ?", (pid,)).fetchone()
    out = []
    for d in conn.execute(
        "SELECT * FROM deliveries WHERE publication_id = ? ORDER BY edge", (pid,)
    ):
        due = pub["created_at"] + deadline_s
        out.append(
            {
                "edge": d["edge"],
                "version": d["version"],
                "enforced_at": d["enforced_at"],
                "enforced_at_iso": iso(d["enforced_at"]),
                "attempts": d["attempts"],
                "last_error": d["last_error"],
                "overdue": (d["enforced_at"] or now) > due,
            }
        )
    return out


def report_overdue(conn: sqlite3.Connection, now: float, deadline_s: float) -> int:
    """Log each delivery that missed its acknowledgement deadline, once."""
    rows = conn.execute(
        "SELECT d.publication_id, d.edge, d.attempts, d.last_error, p.case_id, p.kind"
        " FROM deliveries d JOIN publications p ON p.id = d.publication_id"
        " WHERE d.enforced_at IS NULL AND d.overdue_reported = 0 AND p.created_at + ? < ?",
        (deadline_s, now),
    ).fetchall()
    for r in rows:
        conn.execute(
            "UPDATE deliveries SET overdue_reported = 1 WHERE publication_id = ? AND edge = ?",
            (r["publication_id"], r["edge"]),
        )
        audit.append(
            conn,
            now,
            "edge_overdue",
            case_id=r["case_id"],
            data={
                "publication": r["publication_id"],
                "kind": r["kind"],
                "edge": r["edge"],
                "attempts": r["attempts"],
                "last_error": r["last_error"],
                "deadline_s": deadline_s,
            },
        )
    return len(rows)
