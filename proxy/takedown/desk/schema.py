"""The desk's tables and columns, added to a takedown database on first use.

Kept here rather than in `store.SCHEMA` so the desk is one package; `ensure` is idempotent and
runs when the desk app starts and before the CLI sets a password.
"""

from __future__ import annotations

import sqlite3

TABLES = """
CREATE TABLE IF NOT EXISTS desk_sessions (
  id_hash TEXT PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
  csrf TEXT NOT NULL, created_at REAL NOT NULL, last_seen_at REAL NOT NULL,
  remote TEXT);
CREATE INDEX IF NOT EXISTS desk_sessions_account ON desk_sessions(account_id);
"""


def ensure(conn: sqlite3.Connection) -> None:
    for stmt in TABLES.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(accounts)")}
    if "password_hash" not in cols:
        conn.execute("ALTER TABLE accounts ADD COLUMN password_hash TEXT")
    if "login" not in cols:
        conn.execute("ALTER TABLE accounts ADD COLUMN login TEXT")
    conn.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS accounts_login ON accounts(login)"
        " WHERE login IS NOT NULL"
    )
