"""What operators, submitters and customers read: a case's record, overdue lists, statements.

All read from the same rows and audit records the transactions wrote; nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from proxy.takedown.config import TakedownConfig
from proxy.takedown.publications import deliveries
from proxy.takedown.states import S, State, iso

LEGAL_GROUND = {
    "hosted": "Copyright infringement: hosted material, 17 U.S.C. 512(c); DSA Art. 6",
    "cache": "Copyright infringement: cached copy of material removed at its origin or ordered"
    " removed, 17 U.S.C. 512(b)(2)(E); DSA Art. 5(1)(e)",
    "order": "Court or authority order, DSA Art. 9 / Art. 5(2)",
}


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 6)


def overdue_reasons(
    row: sqlite3.Row, now: float, cfg: TakedownConfig, open_complaint_at: float | None = None
) -> list[str]:
    """Deadlines this case is past right now (not ones it met late).

    An incomplete notice has no open deadline of ours: its receipt is the fix request
    (512(c)(3)(B)(ii)), and the submitter is the one who acts next.
    """
    return [kind for kind, at in open_deadlines(row, cfg, open_complaint_at) if now > at]


def open_deadlines(
    row: sqlite3.Row, cfg: TakedownConfig, open_complaint_at: float | None = None
) -> list[tuple[str, float]]:
    """Every clock running on the case: (which deadline, when it falls due)."""
    d = cfg.deadlines
    state = State(row["state"])
    out = []
    if state in (S.VALIDATED, S.UNDER_REVIEW):
        out.append(("decision", row["received_at"] + d.decision_s))
    if state in (S.ACTIONED, S.PUBLISHED) and row["decided_at"] is not None:
        out.append(("enforcement", row["decided_at"] + d.enforcement_s))
    if (
        state is S.RESTORE_SCHEDULED
        and row["restore_state"] in ("scheduled", "publishing")
        and row["restore_at"] is not None
    ):
        # Due at restore_at; late only past the 512(g)(2)(C) window's slack.
        out.append(("restore", row["restore_at"] + 4 * 86400))
    if state in (S.REVERSED, S.WITHDRAWN) and row["ended_at"] is not None:
        if row["lifted_at"] is None:
            out.append(("lift", row["ended_at"] + d.lift_s))
    if open_complaint_at is not None:
        out.append(("complaint", open_complaint_at + d.complaint_s))
    return out


def open_complaints(conn: sqlite3.Connection) -> dict[int, float]:
    """Case id -> when its oldest undecided complaint arrived."""
    return {
        int(r[0]): float(r[1])
        for r in conn.execute(
            "SELECT case_id, MIN(received_at) FROM complaints WHERE decided_at IS NULL"
            " GROUP BY case_id"
        )
    }


def case_view(
    conn: sqlite3.Connection, case_id: int, now: float, cfg: TakedownConfig
) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is None:
        return None
    timeline = _timeline(conn, case_id)
    pubs = _publications(conn, case_id)
    deadline = cfg.deadlines.enforcement_s
    block = next((p for p in pubs if p["kind"] == "block"), None)
    restore = next((p for p in pubs if p["kind"] == "restore"), None)
    lift = next((p for p in pubs if p["kind"] in ("reversal", "withdrawal")), None)
    complaint_at = open_complaints(conn).get(case_id)
    edges = deliveries(conn, block["id"], now, deadline) if block else []
    decided = row["decided_at"]
    for e in edges:
        e["decision_to_enforced_s"] = _span(decided, e["enforced_at"])
    notices = _notices(conn, case_id)
    targets = _targets(conn, case_id)
    received = row["received_at"]
    return {
        "id": case_id,
        "state": row["state"],
        "legal_basis": row["legal_basis"],
        "trusted": bool(row["trusted"]),
        "decision": row["decision"],
        "decision_reason": row["decision_reason"],
        "automated": bool(row["automated"]),
        "received_at": received,
        "decided_at": decided,
        "published_at": row["published_at"],
        "enforced_at": row["enforced_at"],
        "timeline": timeline,
        "edges": edges,
        "restore_edges": deliveries(conn, restore["id"], now, deadline) if restore else [],
        "suspensions": [
            {"host": p["host"], "edges": deliveries(conn, p["id"], now, deadline)}
            for p in pubs
            if p["kind"] == "suspend"
        ],
        "unsuspensions": [
            {"host": p["host"], "edges": deliveries(conn, p["id"], now, cfg.deadlines.lift_s)}
            for p in pubs
            if p["kind"] == "unsuspend"
        ],
        "ended": _ended(row),
        "lift_edges": deliveries(conn, lift["id"], now, cfg.deadlines.lift_s) if lift else [],
        "complaints": _complaints(conn, case_id, cfg),
        "durations": _durations(row),
        "deadlines": _deadlines(row, cfg),
        "overdue": overdue_reasons(row, now, cfg, complaint_at),
        "restore": _restore(row),
        "notices": notices,
        "targets": targets,
    }


def _timeline(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    return [
        {
            "event": r["event"],
            "at": r["at"],
            "time": iso(r["at"]),
            "actor": r["actor"],
            "data": json.loads(r["data"]),
            "seq": r["seq"],
        }
        for r in conn.execute(
            "SELECT seq, at, event, actor, data FROM audit_log WHERE case_id = ? ORDER BY seq",
            (case_id,),
        )
    ]


def _publications(conn: sqlite3.Connection, case_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT id, kind, host, created_at, published_at, file_sequence, done_at"
        " FROM publications WHERE case_id = ? ORDER BY id",
        (case_id,),
    ).fetchall()


def _notices(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": n["id"],
            "received_at": n["received_at"],
            "complete": bool(n["complete"]),
            "missing": json.loads(n["missing"]),
            "sha256": n["raw_sha256"],
        }
        for n in conn.execute(
            "SELECT id, received_at, complete, missing, raw_sha256 FROM notices"
            " WHERE case_id = ? ORDER BY id",
            (case_id,),
        )
    ]


def _targets(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": t["id"],
            "kind": t["kind"],
            "value": t["value"],
            "host": t["host"],
            "accepted": bool(t["accepted"]),
            "reason": t["reason"],
            "notice": t["notice_id"],
        }
        for t in conn.execute("SELECT * FROM targets WHERE case_id = ? ORDER BY id", (case_id,))
    ]


def _durations(row: sqlite3.Row) -> dict[str, float | None]:
    received, decided = row["received_at"], row["decided_at"]
    return {
        "receipt_to_decision_s": _span(received, decided),
        "decision_to_published_s": _span(decided, row["published_at"]),
        "decision_to_enforced_s": _span(decided, row["enforced_at"]),
        "receipt_to_enforced_s": _span(received, row["enforced_at"]),
    }


def _deadlines(row: sqlite3.Row, cfg: TakedownConfig) -> dict[str, float | None]:
    received, decided = row["received_at"], row["decided_at"]
    return {
        "decision_due_at": received + cfg.deadlines.decision_s,
        "enforcement_due_at": None if decided is None else decided + cfg.deadlines.enforcement_s,
        "lift_due_at": None if row["ended_at"] is None else row["ended_at"] + cfg.deadlines.lift_s,
        "complaints_until": None if decided is None else decided + cfg.deadlines.complaint_window_s,
    }


def _ended(row: sqlite3.Row) -> dict[str, Any] | None:
    """How the restriction ended by reversal or withdrawal, and when every edge lifted it."""
    if row["ended_at"] is None:
        return None
    return {
        "by": row["ended_by"],
        "at": row["ended_at"],
        "at_iso": iso(row["ended_at"]),
        "statement": row["end_statement"],
        "lifted_at": row["lifted_at"],
        "lifted_at_iso": iso(row["lifted_at"]),
        "ended_to_lifted_s": _span(row["ended_at"], row["lifted_at"]),
    }


def _complaints(
    conn: sqlite3.Connection, case_id: int, cfg: TakedownConfig
) -> list[dict[str, Any]]:
    return [
        {
            "id": c["id"],
            "party": c["party"],
            "received_at": c["received_at"],
            "statement": c["statement"],
            "decide_by": c["received_at"] + cfg.deadlines.complaint_s,
            "decided_at": c["decided_at"],
            "outcome": c["outcome"],
            "decision_statement": c["decision_statement"],
        }
        for c in conn.execute("SELECT * FROM complaints WHERE case_id = ? ORDER BY id", (case_id,))
    ]


def _restore(row: sqlite3.Row) -> dict[str, Any] | None:
    if row["restore_state"] is None:
        return None
    return {
        "state": row["restore_state"],
        "counter_notice_at": row["counter_notice_at"],
        "not_before": row["restore_not_before"],
        "not_after": row["restore_not_after"],
        "restore_at": row["restore_at"],
        "restore_at_iso": iso(row["restore_at"]),
        "restored_at": row["restored_at"],
        "lawsuit_at": row["lawsuit_at"],
    }


SORTS = ("id", "deadline")


def list_cases(
    conn: sqlite3.Connection,
    now: float,
    cfg: TakedownConfig,
    *,
    overdue_only: bool = False,
    state: str | Sequence[str] | None = None,
    account_id: int | None = None,
    customer_id: int | None = None,
    sort: str = "id",
) -> list[dict[str, Any]]:
    """The triage list: per case its targets, complainants, works and the clock that runs out
    first (`deadline`, `deadline_at`, `seconds_left`, negative once overdue). `sort=deadline`
    puts the most urgent first and cases with no running clock last."""
    sql = "SELECT * FROM cases"
    args: list[Any] = []
    where = []
    states = [state] if isinstance(state, str) else list(state or [])
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        args += states
    if account_id is not None:
        where.append("id IN (SELECT case_id FROM notices WHERE account_id = ?)")
        args.append(account_id)
    if customer_id is not None:  # the cases that target the customer's sites
        where.append(
            "id IN (SELECT t.case_id FROM targets t JOIN sites s ON s.host = t.host"
            " WHERE t.accepted = 1 AND s.customer_id = ?)"
        )
        args.append(customer_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    complaints = open_complaints(conn)
    out = []
    for row in conn.execute(sql + " ORDER BY id", args).fetchall():
        clocks = open_deadlines(row, cfg, complaints.get(row["id"]))
        reasons = [kind for kind, at in clocks if now > at]
        if overdue_only and not reasons:
            continue
        first = min(clocks, key=lambda c: c[1], default=None)
        out.append(
            {
                "id": row["id"],
                "state": row["state"],
                "received_at": row["received_at"],
                "decided_at": row["decided_at"],
                "legal_basis": row["legal_basis"],
                **_parties(conn, row["id"]),
                "deadline": first[0] if first else None,
                "deadline_at": first[1] if first else None,
                "deadline_at_iso": iso(first[1]) if first else None,
                "seconds_left": round(first[1] - now, 3) if first else None,
                "overdue": reasons,
                "open_complaints": row["id"] in complaints,
            }
        )
    if sort == "deadline":
        out.sort(key=lambda c: (c["deadline_at"] is None, c["deadline_at"] or 0.0, c["id"]))
    return out


def _parties(conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
    """Targets, complainants and works of a case, for a list an operator scans."""
    targets = [
        r[0]
        for r in conn.execute(
            "SELECT value FROM targets WHERE case_id = ? AND accepted = 1 ORDER BY id", (case_id,)
        )
    ]
    complainants: list[dict[str, Any]] = []
    works: list[str] = []
    for (parsed,) in conn.execute(
        "SELECT parsed FROM notices WHERE case_id = ? ORDER BY id", (case_id,)
    ):
        doc = json.loads(parsed) if parsed else None
        if not isinstance(doc, dict):
            continue
        c = doc.get("complainant")
        if isinstance(c, dict):
            who = {"name": c.get("name"), "email": c.get("email")}
            if who not in complainants:
                complainants.append(who)
        for w in doc.get("works") or []:
            title = w.get("title") or w.get("description") if isinstance(w, dict) else None
            if title and str(title) not in works:
                works.append(str(title))
    return {"targets": targets, "complainants": complainants, "works": works}


def statement_of_reasons(
    conn: sqlite3.Connection, case_id: int, cfg: TakedownConfig
) -> dict[str, Any] | None:
    """DSA Art. 17(3)(a)-(f), for the customer whose site the restriction affects."""
    row = conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is None or row["decision"] != "action":
        return None
    targets = conn.execute(
        "SELECT t.kind, t.value, t.host, c.name AS customer FROM targets t"
        " LEFT JOIN sites s ON s.host = t.host LEFT JOIN customers c ON c.id = s.customer_id"
        " WHERE t.case_id = ? AND t.accepted = 1 ORDER BY t.id",
        (case_id,),
    ).fetchall()
    works: list[str] = []
    for (parsed,) in conn.execute(
        "SELECT parsed FROM notices WHERE case_id = ? AND complete = 1", (case_id,)
    ):
        for w in (json.loads(parsed) or {}).get("works") or []:
            works.append(str(w.get("title") or w.get("description")))
    suspended = [
        r[0]
        for r in conn.execute(
            "SELECT host FROM publications WHERE case_id = ? AND kind = 'suspend'", (case_id,)
        )
    ]
    trusted = bool(row["trusted"])
    automated = bool(row["automated"])
    return {
        "case": case_id,
        "provider": cfg.service.operator_name,
        "decision": "action",
        "application_date": iso(row["decided_at"]),
        "restriction": {  # (a)
            "type": "disabling of access to the identified material on every edge node",
            "decision_visibility": ["DECISION_VISIBILITY_CONTENT_DISABLED"],
            "site_suspensions": suspended,
            "territorial_scope": "worldwide",
            "duration": "until restored after a valid counter-notice (17 U.S.C. 512(g)),"
            " the notice is withdrawn, or the decision is reversed",
            "ended": _ended(row),
        },
        "affected": [dict(t) for t in targets],
        "facts": {  # (b)
            "triggered_by": "notice (DSA Art. 16)"
            if not trusted
            else "notice from a trusted submitter (DSA Art. 16 / 22)",
            "source_type": "SOURCE_TRUSTED_FLAGGER" if trusted else "SOURCE_ARTICLE_16",
            "received_at": iso(row["received_at"]),
            "works": works,
            "decision_reason": row["decision_reason"],
        },
        "automated_means": {  # (c)
            "automated_detection": False,
            "automated_decision": automated,
            "explanation": "Decided automatically because the submitter is a trusted submitter"
            if automated
            else "Decided by a human operator",
        },
        "legal_ground": {  # (d)
            "decision_ground": "DECISION_GROUND_ILLEGAL_CONTENT",
            "illegal_content_legal_ground": LEGAL_GROUND.get(row["legal_basis"] or "", ""),
            "illegal_content_explanation": "The notice identified the works and the exact"
            " locations and contained the statements DMCA 512(c)(3) and DSA Art. 16(2) require.",
        },
        "contractual_ground": None,  # (e): no terms-of-service ground is used
        "redress": cfg.service.redress.replace("{case}", str(case_id)),  # (f)
    }
