"""Repeat-infringer policy, 17 U.S.C. 512(i)(1)(A): strikes, warnings, site suspension.

Every actioned case is one strike against each served site it names (and so against the site's
customer). Strikes inside the policy window that were not tolled by a counter-notice count;
customers whose identity is not verified meet lower thresholds. Crossing the warning threshold
logs a warning; crossing the suspension threshold suspends the whole site by publishing a
`host` entry. Each step is an audit record on the case that caused it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from proxy.takedown import audit, notify
from proxy.takedown.config import Strikes
from proxy.takedown.elements import bare_host
from proxy.takedown.publications import create_publication


class Step(StrEnum):
    NONE = "none"
    WARN = "warning"
    SUSPEND = "suspended"


@dataclass(frozen=True, slots=True)
class Thresholds:
    warn_at: int
    suspend_at: int


def thresholds(policy: Strikes, verification: str) -> Thresholds:
    if verification in policy.verified_statuses:
        return Thresholds(policy.warn_at, policy.suspend_at)
    return Thresholds(policy.unverified_warn_at, policy.unverified_suspend_at)


def step_for(count: int, t: Thresholds) -> Step:
    """Pure: which escalation step `count` live strikes reach."""
    if count >= t.suspend_at:
        return Step.SUSPEND
    if count >= t.warn_at:
        return Step.WARN
    return Step.NONE


def live_count(conn: sqlite3.Connection, host: str, now: float, policy: Strikes) -> int:
    since = now - policy.window_days * 86400.0
    row = conn.execute(
        "SELECT COUNT(*) FROM strikes WHERE host = ? AND at > ? AND tolled_at IS NULL",
        (host, since),
    ).fetchone()
    return int(row[0])


def record(
    conn: sqlite3.Connection, case_id: int, now: float, policy: Strikes, edges: Sequence[str]
) -> list[int]:
    """Strike every served site the case names; return publications for new suspensions."""
    pubs: list[int] = []
    rows = conn.execute(
        "SELECT DISTINCT s.host, s.customer_id, s.suspended_at, c.name, c.verification"
        " FROM targets t JOIN sites s ON s.host = t.host JOIN customers c ON c.id = s.customer_id"
        " WHERE t.case_id = ? AND t.accepted = 1 ORDER BY s.host",
        (case_id,),
    ).fetchall()
    for r in rows:
        host = r["host"]
        conn.execute(
            "INSERT INTO strikes (case_id, host, customer_id, at) VALUES (?, ?, ?, ?)",
            (case_id, host, r["customer_id"], now),
        )
        count = live_count(conn, host, now, policy)
        t = thresholds(policy, r["verification"])
        info = {
            "host": host,
            "customer": r["name"],
            "verification": r["verification"],
            "strikes_in_window": count,
            "window_days": policy.window_days,
            "warn_at": t.warn_at,
            "suspend_at": t.suspend_at,
        }
        audit.append(conn, now, "strike", case_id=case_id, data=info)
        step = step_for(count, t)
        if step is Step.WARN:
            conn.execute("UPDATE sites SET warned_at = ? WHERE host = ?", (now, host))
            audit.append(conn, now, Step.WARN.value, case_id=case_id, data=info)
            notify.enqueue(
                conn, now, notify.Kind.WARNING, case_id, info, customer_id=r["customer_id"]
            )
        elif step is Step.SUSPEND and r["suspended_at"] is None:
            conn.execute("UPDATE sites SET suspended_at = ? WHERE host = ?", (now, host))
            audit.append(conn, now, Step.SUSPEND.value, case_id=case_id, data=info)
            notify.enqueue(
                conn, now, notify.Kind.SUSPENSION, case_id, info, customer_id=r["customer_id"]
            )
            entry = {
                "id": f"suspend-{host}",
                "type": "host",
                "value": bare_host(host),
                "notice": f"case {case_id}",
                "reason": f"site suspended under the repeat-infringer policy ({count} strikes)",
            }
            pubs.append(
                create_publication(
                    conn, "suspend", now, edges, entries=[entry], case_id=case_id, host=host
                )
            )
    return pubs


def toll(conn: sqlite3.Connection, case_id: int, now: float, tolled: bool) -> None:
    """A counter-notice tolls the case's strikes; a reported lawsuit reinstates them."""
    conn.execute(
        "UPDATE strikes SET tolled_at = ? WHERE case_id = ?", (now if tolled else None, case_id)
    )
    audit.append(conn, now, "strike_tolled" if tolled else "strike_reinstated", case_id=case_id)
