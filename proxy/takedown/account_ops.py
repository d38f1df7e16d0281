"""Account administration the desk needs besides creating accounts: list, disable, rotate key.

A disabled account's key stops working at once (the service drops its authentication cache);
a rotated key replaces the old one, which stops working at once, and is returned once. Both are
audited. An account cannot disable itself, so the last admin is never locked out by accident.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from proxy.takedown import audit
from proxy.takedown.accounts import key_hash


def list_accounts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT id, name, role, created_at, disabled_at, customer_id FROM accounts ORDER BY id"
        )
    ]


def disable(
    conn: sqlite3.Connection, account_id: int, now: float, actor: str, by: int | None = None
) -> dict[str, Any]:
    if by == account_id:
        raise PermissionError("an account cannot disable itself")
    n = conn.execute(
        "UPDATE accounts SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL",
        (now, account_id),
    ).rowcount
    if not n:
        raise LookupError(f"no enabled account {account_id}")
    audit.append(conn, now, "account_disabled", actor=actor, data={"account": account_id})
    return {"account": account_id, "disabled_at": now}


def rotate_key(conn: sqlite3.Connection, account_id: int, now: float, actor: str) -> str:
    row = conn.execute(
        "SELECT id FROM accounts WHERE id = ? AND disabled_at IS NULL", (account_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no enabled account {account_id}")
    key = f"tdk_{account_id}_{secrets.token_urlsafe(32)}"
    conn.execute("UPDATE accounts SET key_hash = ? WHERE id = ?", (key_hash(key), account_id))
    audit.append(conn, now, "account_key_rotated", actor=actor, data={"account": account_id})
    return key
