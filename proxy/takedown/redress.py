"""Undo: internal complaints (DSA Art. 20), reversal, withdrawal after enforcement, unsuspension.

A decision that restricts access can be ended three ways besides a counter-notice's put-back
(`restore.py`): an operator reverses it (on a complaint, or on finding a mistake), the
complainant withdraws the notice, or an operator lifts a site's suspension. Each one is a case
transition and a *removal* publication of the entries the service created for it, delivered to
every edge through the same publisher as the block (a DELETE on the admin API, a delta's
`removes` in the file drop) and acknowledged the same way: the case records when the last edge
stopped enforcing (`lifted_at`, `reversal_enforced` / `withdrawal_enforced` /
`unsuspension_enforced`), against its own deadline (`[deadlines] lift_s`).

A complaint (by a complainant or the affected customer, at most `complaint_window_s` after the
decision) waits for an operator for `complaint_s`; it is upheld by a reversal, which also
reverses a rejection into an action, or dismissed with a statement. Both sides are told.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from proxy.takedown import audit, notify, strikes
from proxy.takedown.accounts import Account
from proxy.takedown.cases import Outcome, action, block_entries
from proxy.takedown.config import TakedownConfig
from proxy.takedown.elements import site_key
from proxy.takedown.publications import create_publication
from proxy.takedown.states import (
    RESTRICTING,
    Conflict,
    NotFound,
    S,
    State,
    actor_of,
    iso,
    transition,
)


def _case(conn: sqlite3.Connection, case_id: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM cases WHERE id = ?", (case_id,)
    ).fetchone()
    if row is None:
        raise NotFound(case_id)
    return row


def _published_entries(conn: sqlite3.Connection, case_id: int) -> list[dict[str, str]]:
    """Every entry the case's block publications asked the edges to enforce."""
    out: dict[str, dict[str, str]] = {}
    for (entries,) in conn.execute(
        "SELECT entries FROM publications WHERE case_id = ? AND kind = 'block' ORDER BY id",
        (case_id,),
    ):
        out.update((e["id"], e) for e in json.loads(entries))
    return list(out.values())


def _end_restriction(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account,
    to: State,
    statement: str,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> tuple[int, dict[str, Any]]:
    """Move a restricting case to `to` (reversed or withdrawn) and publish the removal of its
    entries; a scheduled put-back is cancelled (this removal replaces it) and the case's
    strikes are tolled (a decision that no longer stands is no strike)."""
    kind = "reversal" if to is S.REVERSED else "withdrawal"
    entries = _published_entries(conn, case_id)
    conn.execute(
        "UPDATE cases SET ended_at = ?, ended_by = ?, end_statement = ?,"
        " restore_state = CASE WHEN restore_state = 'scheduled' THEN 'cancelled'"
        " ELSE restore_state END WHERE id = ?",
        (now, kind, statement, case_id),
    )
    lift_by = now + cfg.deadlines.lift_s
    transition(
        conn,
        case_id,
        to,
        now,
        actor_of(account),
        {"statement": statement, "entries": [e["id"] for e in entries], "lift_by": lift_by},
    )
    pid = create_publication(conn, kind, now, edges, entries=entries, case_id=case_id)
    strikes.toll(conn, case_id, now, tolled=True)
    suspended = [
        r[0]
        for r in conn.execute(
            "SELECT p.host FROM publications p JOIN sites s ON s.host = p.host"
            " WHERE p.case_id = ? AND p.kind = 'suspend' AND s.suspended_at IS NOT NULL",
            (case_id,),
        )
    ]
    return pid, {
        "lift_by": lift_by,
        "lift_by_iso": iso(lift_by),
        "entries": [e["id"] for e in entries],
        # A suspension this case caused is lifted on its own (POST /sites/{host}/unsuspend):
        # the site may have other strikes.
        "sites_still_suspended": suspended,
    }


def _settle_complaints(
    conn: sqlite3.Connection, case_id: int, now: float, outcome: str, statement: str
) -> list[int]:
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM complaints WHERE case_id = ? AND decided_at IS NULL", (case_id,)
        )
    ]
    conn.execute(
        "UPDATE complaints SET decided_at = ?, outcome = ?, decision_statement = ?"
        " WHERE case_id = ? AND decided_at IS NULL",
        (now, outcome, statement, case_id),
    )
    return ids


def reverse(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account,
    statement: str,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> Outcome:
    """Reverse the case's decision: an action is lifted on every edge; a rejection of a case
    with served targets becomes an action. Open complaints on the case are upheld."""
    row = _case(conn, case_id)
    state = State(row["state"])
    out = Outcome()
    if state in RESTRICTING:
        pid, lift = _end_restriction(conn, case_id, now, account, S.REVERSED, statement, cfg, edges)
        out.publications = [pid]
        result: dict[str, Any] = {"reversed": "action", **lift}
    elif state is S.REJECTED and block_entries(conn, case_id):
        out.publications = action(
            conn,
            case_id,
            now,
            account,
            f"rejection reversed: {statement}",
            automated=False,
            cfg=cfg,
            edges=edges,
        )
        result = {"reversed": "rejection"}
    else:
        raise Conflict(
            f"case {case_id} is {state.value}; only an action in force or a rejection of served"
            " targets can be reversed"
        )
    upheld = _settle_complaints(conn, case_id, now, "upheld", statement)
    audit.append(
        conn,
        now,
        "decision_reversed",
        case_id=case_id,
        actor=actor_of(account),
        data={"statement": statement, "was": state.value, "complaints_upheld": upheld},
    )
    notify.enqueue(
        conn,
        now,
        notify.Kind.REVERSAL,
        case_id,
        {
            "statement": statement,
            "reversed": result["reversed"],
            "targets": [e["value"] for e in block_entries(conn, case_id)],
            "complaints_upheld": upheld,
        },
    )
    cur = conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()[0]
    out.result = {"case": case_id, "state": cur, "complaints_upheld": upheld, **result}
    return out


def withdraw(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> Outcome:
    """The complainant withdraws. Before a decision the case just closes; after an action the
    block ends on every edge, as the statement of reasons promises."""
    state = State(_case(conn, case_id)["state"])
    if state not in RESTRICTING:
        transition(conn, case_id, S.WITHDRAWN, now, actor_of(account))
        return Outcome({"case": case_id, "state": S.WITHDRAWN.value})
    statement = "the complainant withdrew the notice"
    pid, lift = _end_restriction(conn, case_id, now, account, S.WITHDRAWN, statement, cfg, edges)
    notify.enqueue(conn, now, notify.Kind.WITHDRAWAL, case_id, {"entries": lift["entries"]})
    return Outcome({"case": case_id, "state": S.WITHDRAWN.value, **lift}, [pid])


def complain(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account,
    statement: str,
    cfg: TakedownConfig,
) -> Outcome:
    """An internal complaint against the case's decision (DSA Art. 20): who may (its
    complainant or the affected customer) is `authz.RULES`, checked before this runs."""
    row = _case(conn, case_id)
    if row["decided_at"] is None:
        raise Conflict(f"case {case_id} is {row['state']}; there is no decision to complain about")
    if State(row["state"]) in (S.REVERSED, S.WITHDRAWN, S.RESTORED):
        raise Conflict(f"case {case_id} is {row['state']}; its restriction already ended")
    window_end = row["decided_at"] + cfg.deadlines.complaint_window_s
    if now > window_end:
        raise Conflict(
            f"the complaint window for case {case_id} closed at {iso(window_end)}"
            f" ({cfg.deadlines.complaint_window_s / 86400:g} days after the decision)"
        )
    party = "customer" if account.customer_id is not None else "complainant"
    cid = conn.execute(
        "INSERT INTO complaints (case_id, account_id, party, received_at, statement)"
        " VALUES (?, ?, ?, ?, ?)",
        (case_id, account.id, party, now, statement),
    ).lastrowid
    decide_by = now + cfg.deadlines.complaint_s
    audit.append(
        conn,
        now,
        "complaint_received",
        case_id=case_id,
        actor=actor_of(account),
        data={"complaint": cid, "party": party, "statement": statement, "decide_by": decide_by},
    )
    return Outcome(
        {
            "complaint": cid,
            "case": case_id,
            "party": party,
            "decision": row["decision"],
            "decide_by": decide_by,
            "decide_by_iso": iso(decide_by),
        }
    )


def dismiss(
    conn: sqlite3.Connection, case_id: int, now: float, account: Account, statement: str
) -> Outcome:
    """The operator keeps the decision: every open complaint on the case is dismissed."""
    _case(conn, case_id)
    dismissed = _settle_complaints(conn, case_id, now, "dismissed", statement)
    if not dismissed:
        raise Conflict(f"case {case_id} has no open complaint")
    audit.append(
        conn,
        now,
        "complaint_dismissed",
        case_id=case_id,
        actor=actor_of(account),
        data={"complaints": dismissed, "statement": statement},
    )
    notify.enqueue(
        conn,
        now,
        notify.Kind.COMPLAINT_DISMISSED,
        case_id,
        {"complaints": dismissed, "statement": statement},
    )
    return Outcome({"case": case_id, "complaints_dismissed": dismissed})


def unsuspend(
    conn: sqlite3.Connection,
    host: str,
    now: float,
    account: Account,
    statement: str,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> Outcome:
    """Lift a site's suspension: its `host` entry is removed from every edge. Recorded on the
    case whose strike suspended it. The site's strikes stay: a further actioned case within the
    window suspends it again."""
    key = site_key(host)
    site = conn.execute(
        "SELECT host, customer_id, suspended_at FROM sites WHERE host = ?", (key,)
    ).fetchone()
    if site is None:
        raise NotFound(f"no site {key}")
    if site["suspended_at"] is None:
        raise Conflict(f"site {key} is not suspended")
    pub = conn.execute(
        "SELECT case_id, entries FROM publications WHERE kind = 'suspend' AND host = ?"
        " ORDER BY id DESC LIMIT 1",
        (key,),
    ).fetchone()
    case_id = pub["case_id"] if pub else None
    entries = json.loads(pub["entries"]) if pub else []
    conn.execute("UPDATE sites SET suspended_at = NULL WHERE host = ?", (key,))
    lift_by = now + cfg.deadlines.lift_s
    info = {
        "host": key,
        "statement": statement,
        "suspended_at": site["suspended_at"],
        "strikes_in_window": strikes.live_count(conn, key, now, cfg.strikes),
        "lift_by": lift_by,
    }
    audit.append(conn, now, "unsuspended", case_id=case_id, actor=actor_of(account), data=info)
    pid = create_publication(
        conn, "unsuspend", now, edges, entries=entries, case_id=case_id, host=key
    )
    if case_id is not None:
        notify.enqueue(
            conn,
            now,
            notify.Kind.UNSUSPENSION,
            case_id,
            {"host": key, "statement": statement},
            customer_id=site["customer_id"],
        )
    return Outcome(
        {"site": key, "case": case_id, "suspended": False, **info, "lift_by_iso": iso(lift_by)},
        [pid],
    )
