"""Counter-notice, lawsuit and put-back, 17 U.S.C. 512(g).

A valid counter-notice (512(g)(3)) schedules the restore inside the 10-14 business-day window
of 512(g)(2)(C) and tolls the case's strikes; a lawsuit reported by the complainant before the
restore cancels it (litigation hold). The scheduler publishes due restores as removals, which
the edges acknowledge like a block.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from proxy.takedown import audit, notify, strikes
from proxy.takedown.accounts import Account
from proxy.takedown.calendar import BusinessCalendar, restore_window
from proxy.takedown.cases import Outcome
from proxy.takedown.config import Restore
from proxy.takedown.elements import COUNTER_ELEMENTS, Checked
from proxy.takedown.publications import create_publication
from proxy.takedown.states import Conflict, NotFound, S, State, actor_of, iso, transition

COUNTERABLE = (S.ACTIONED, S.PUBLISHED, S.ENFORCED)


def counter_notice(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account,
    raw: bytes,
    raw_sha256: str,
    checked: Checked,
    cal: BusinessCalendar,
    policy: Restore,
) -> Outcome:
    """Who may (the affected customer, or staff for it) is `authz.RULES`, checked before."""
    row = conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(case_id)
    if State(row["state"]) not in COUNTERABLE:
        raise Conflict(
            f"case {case_id} is {row['state']}; a counter-notice applies only to actioned material"
        )
    cnid = conn.execute(
        "INSERT INTO counter_notices (case_id, account_id, received_at, raw, raw_sha256)"
        " VALUES (?, ?, ?, ?, ?)",
        (case_id, account.id, now, raw, raw_sha256),
    ).lastrowid
    audit.append(
        conn,
        now,
        "counter_notice",
        case_id=case_id,
        actor=actor_of(account),
        data={
            "counter_notice": cnid,
            "sha256": raw_sha256,
            "complete": checked.complete,
            "missing": checked.missing,
        },
    )
    if not checked.complete:
        return Outcome(
            {
                "id": cnid,
                "case": case_id,
                "state": row["state"],
                "complete": False,
                "missing": checked.missing,
                "missing_detail": checked.missing_detail(COUNTER_ELEMENTS),
            }
        )
    window = _schedule_restore(conn, case_id, cnid, now, account, checked, cal, policy)
    return Outcome(
        {
            "id": cnid,
            "case": case_id,
            "state": S.RESTORE_SCHEDULED.value,
            "complete": True,
            "missing": [],
            "restore": window,
        }
    )


def _schedule_restore(
    conn: sqlite3.Connection,
    case_id: int,
    cnid: int | None,
    now: float,
    account: Account,
    checked: Checked,
    cal: BusinessCalendar,
    policy: Restore,
) -> dict[str, Any]:
    """A complete counter-notice: the put-back window (10-14 business days, §512(g)(2)(C)),
    the notice forwarded to the complainant (§512(g)(2)(B)), the strike tolled."""
    w = restore_window(cal, now, policy.not_before_business_days, policy.not_after_business_days)
    conn.execute(
        "UPDATE cases SET counter_notice_at = ?, restore_not_before = ?, restore_not_after = ?,"
        " restore_at = ?, restore_state = 'scheduled' WHERE id = ?",
        (now, w.not_before.isoformat(), w.not_after.isoformat(), w.restore_at, case_id),
    )
    window = {
        "not_before": w.not_before.isoformat(),
        "not_after": w.not_after.isoformat(),
        "restore_at": w.restore_at,
        "restore_at_iso": iso(w.restore_at),
        # True when the window reaches past the holiday data the calendar has (calendar.py):
        # a public holiday may then be missing from the count; shown on the case's timeline.
        "beyond_known_holidays": w.beyond_known_data,
        "holidays_known_until": w.known_until.isoformat() if w.known_until else None,
    }
    transition(conn, case_id, S.RESTORE_SCHEDULED, now, actor_of(account), window)
    audit.append(
        conn,
        now,
        "counter_notice_forwarded",
        case_id=case_id,
        data={"counter_notice": cnid, "to": "complainant"},
    )  # 512(g)(2)(B)
    notify.enqueue(
        conn,
        now,
        notify.Kind.COUNTER_NOTICE,
        case_id,
        {
            "counter_notice": checked.doc,
            "restore": window,
            "lawsuit": f"/cases/{case_id}/lawsuit",
        },
    )
    strikes.toll(conn, case_id, now, tolled=True)
    return window


def lawsuit(
    conn: sqlite3.Connection, case_id: int, now: float, account: Account, detail: dict[str, Any]
) -> Outcome:
    """Who may (the complainant, or staff) is `authz.RULES`, checked before this runs."""
    row = conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(case_id)
    if State(row["state"]) is not S.RESTORE_SCHEDULED:
        raise Conflict(f"case {case_id} is {row['state']}; no restore to hold")
    conn.execute(
        "UPDATE cases SET lawsuit_at = ?, restore_state = 'cancelled' WHERE id = ?", (now, case_id)
    )
    transition(
        conn,
        case_id,
        S.LITIGATION_HOLD,
        now,
        actor_of(account),
        {"lawsuit": detail, "restore": "cancelled"},
    )
    strikes.toll(conn, case_id, now, tolled=False)
    return Outcome({"case": case_id, "state": S.LITIGATION_HOLD.value})


def due_restores(conn: sqlite3.Connection, now: float, edges: Sequence[str]) -> list[int]:
    """Publish every restore whose time has come; returns the new publications."""
    pubs = []
    for r in conn.execute(
        "SELECT id FROM cases WHERE state = ? AND restore_state = 'scheduled' AND restore_at <= ?",
        (S.RESTORE_SCHEDULED.value, now),
    ).fetchall():
        cid = r["id"]
        removed: list[dict[str, str]] = []
        for (entries,) in conn.execute(
            "SELECT entries FROM publications WHERE case_id = ? AND kind = 'block'", (cid,)
        ):
            removed += json.loads(entries)
        conn.execute("UPDATE cases SET restore_state = 'publishing' WHERE id = ?", (cid,))
        audit.append(
            conn, now, "restore_due", case_id=cid, data={"entries": [e["id"] for e in removed]}
        )
        pubs.append(create_publication(conn, "restore", now, edges, entries=removed, case_id=cid))
    return pubs


def report_decision_overdue(conn: sqlite3.Connection, now: float, deadline_s: float) -> int:
    rows = conn.execute(
        "SELECT id, received_at FROM cases WHERE state IN (?, ?) AND overdue_reported = 0"
        " AND received_at + ? < ?",
        (S.VALIDATED.value, S.UNDER_REVIEW.value, deadline_s, now),
    ).fetchall()
    for r in rows:
        conn.execute("UPDATE cases SET overdue_reported = 1 WHERE id = ?", (r["id"],))
        audit.append(
            conn,
            now,
            "decision_overdue",
            case_id=r["id"],
            data={"deadline_s": deadline_s, "received_at": r["received_at"]},
        )
    return len(rows)
