"""Case states, the transitions allowed between them, and the one function that moves a case.

A transition writes the new state and its audit record in the caller's transaction.

Undo is a transition too: any state that restricts access (`RESTRICTING`) may become
`reversed` (an operator reverses the decision) or `withdrawn` (the complainant withdraws), and
either one publishes the removal of the case's entries to every edge (`redress.py`); a
`rejected` case may become `actioned` when a complaint against the rejection is upheld.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from enum import StrEnum
from typing import Any

from proxy.takedown import audit
from proxy.takedown.accounts import Account


class State(StrEnum):
    RECEIVED = "received"
    INCOMPLETE = "incomplete"
    VALIDATED = "validated"
    UNDER_REVIEW = "under_review"
    ACTIONED = "actioned"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    PUBLISHED = "published"
    ENFORCED = "enforced"
    RESTORE_SCHEDULED = "restore_scheduled"
    LITIGATION_HOLD = "litigation_hold"
    RESTORED = "restored"
    # An operator reversed the action (DSA Art. 20 internal complaint, or a mistake found):
    # the block is removed from every edge; the case is closed.
    REVERSED = "reversed"
    # Disclosure requests (disclosure.py): a court order or 512(h) subpoena naming a site.
    DISCLOSURE_PENDING = "disclosure_pending"
    DISCLOSED = "disclosed"


S = State
END = frozenset({S.REVERSED, S.WITHDRAWN})  # undo: lifts whatever the case restricts
TRANSITIONS: dict[State, frozenset[State]] = {
    S.RECEIVED: frozenset({S.INCOMPLETE, S.VALIDATED, S.REJECTED}),
    S.INCOMPLETE: frozenset({S.VALIDATED, S.REJECTED, S.WITHDRAWN}),
    S.VALIDATED: frozenset({S.UNDER_REVIEW, S.ACTIONED, S.REJECTED, S.WITHDRAWN}),
    S.UNDER_REVIEW: frozenset({S.ACTIONED, S.REJECTED, S.WITHDRAWN}),
    S.ACTIONED: frozenset({S.PUBLISHED, S.RESTORE_SCHEDULED}) | END,
    S.PUBLISHED: frozenset({S.ENFORCED, S.RESTORE_SCHEDULED}) | END,
    S.ENFORCED: frozenset({S.RESTORE_SCHEDULED}) | END,
    S.RESTORE_SCHEDULED: frozenset({S.LITIGATION_HOLD, S.RESTORED}) | END,
    S.LITIGATION_HOLD: END,
    S.REJECTED: frozenset({S.ACTIONED}),  # a rejection reversed on complaint (DSA Art. 20)
    S.WITHDRAWN: frozenset(),
    S.RESTORED: frozenset(),
    S.REVERSED: frozenset(),
    S.DISCLOSURE_PENDING: frozenset({S.DISCLOSED, S.REJECTED}),
    S.DISCLOSED: frozenset(),
}
# A restriction is in force (or being put in force): reversal and withdrawal must lift it.
RESTRICTING = (S.ACTIONED, S.PUBLISHED, S.ENFORCED, S.RESTORE_SCHEDULED, S.LITIGATION_HOLD)
# Cases a new notice for the same targets joins instead of opening a new one.
OPEN = (
    S.INCOMPLETE,
    S.VALIDATED,
    S.UNDER_REVIEW,
    S.ACTIONED,
    S.PUBLISHED,
    S.ENFORCED,
    S.RESTORE_SCHEDULED,
    S.LITIGATION_HOLD,
)
DECIDABLE = (S.VALIDATED, S.UNDER_REVIEW)


class Conflict(Exception):
    """The request does not fit the case's current state; the message says why."""


class NotFound(LookupError):
    """No such case (or not one this account may see)."""


def transition(
    conn: sqlite3.Connection,
    case_id: int,
    to: State,
    at: float,
    actor: str,
    data: dict[str, Any] | None = None,
) -> None:
    row = conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(case_id)
    current = State(row["state"])
    if to not in TRANSITIONS[current]:
        raise Conflict(f"case {case_id} is {current.value}; it cannot become {to.value}")
    conn.execute("UPDATE cases SET state = ? WHERE id = ?", (to.value, case_id))
    audit.append(
        conn,
        at,
        to.value,
        case_id=case_id,
        actor=actor,
        data={"from": current.value, **(data or {})},
    )


def actor_of(account: Account | None) -> str:
    return "system" if account is None else f"{account.role.value}:{account.id}:{account.name}"


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
