"""Rejected submissions: junk kept byte for byte, never a case.

A body refused by `schema.py` (not JSON, not an object, a field of the wrong type) is evidence
of what was sent, by whom and when, but it is not a notice: recording it as a case would let
every junk request open one. It goes to its own table with the error it got, an audit record
(`submission_rejected`, on the case only when it was aimed at one, e.g. a counter-notice) and
the `edgeproxy_takedown_rejected_submissions{route}` count in `/metrics`.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from proxy.takedown import audit
from proxy.takedown.accounts import Account
from proxy.takedown.schema import SchemaError
from proxy.takedown.states import actor_of, iso

ROUTES = ("notice", "counter_notice")  # the `route` label's values


def record(
    conn: sqlite3.Connection,
    now: float,
    account: Account,
    route: str,
    raw: bytes,
    raw_sha256: str,
    remote: str | None,
    error: SchemaError,
    case_id: int | None = None,
) -> dict[str, Any]:
    """Keep the submission; returns the 400 answer's body."""
    rid = conn.execute(
        "INSERT INTO rejected_submissions (received_at, account_id, remote, route, case_id, raw,"
        " raw_sha256, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (now, account.id, remote, route, case_id, raw, raw_sha256, json.dumps([error.as_dict()])),
    ).lastrowid
    audit.append(
        conn,
        now,
        "submission_rejected",
        case_id=case_id,
        actor=actor_of(account),
        data={
            "rejected_submission": rid,
            "route": route,
            "sha256": raw_sha256,
            "bytes": len(raw),
            "error": str(error),
        },
    )
    return {
        "error": f"not a valid {route.replace('_', '-')}: {error}",
        "errors": [error.as_dict()],
        "rejected_submission": rid,
        "received_at": now,
        "received_at_iso": iso(now),
        "sha256": raw_sha256,
        "bytes": len(raw),
    }


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        r[0]: int(r[1])
        for r in conn.execute("SELECT route, COUNT(*) FROM rejected_submissions GROUP BY route")
    }


def listing(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    """The newest rejected submissions first, without their bytes (`raw` reads one)."""
    return [
        {
            "id": r["id"],
            "received_at": r["received_at"],
            "received_at_iso": iso(r["received_at"]),
            "account": r["account_id"],
            "remote": r["remote"],
            "route": r["route"],
            "case": r["case_id"],
            "bytes": r["n"],
            "sha256": r["raw_sha256"],
            "errors": json.loads(r["errors"]),
        }
        for r in conn.execute(
            "SELECT id, received_at, account_id, remote, route, case_id, length(raw) AS n,"
            " raw_sha256, errors FROM rejected_submissions ORDER BY id DESC LIMIT ?",
            (limit,),
        )
    ]


def raw(conn: sqlite3.Connection, rid: int) -> bytes | None:
    row = conn.execute("SELECT raw FROM rejected_submissions WHERE id = ?", (rid,)).fetchone()
    return None if row is None else bytes(row[0])
