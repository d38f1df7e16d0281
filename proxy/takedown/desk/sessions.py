"""Server-side sessions for the console, and the CSRF tokens that go with them.

A session id is 256 random bits; the cookie carries it, the database only its sha256, so a
copy of the database signs no one in. Each session has its own CSRF token, compared in constant
time on every POST. A session ends after `session_idle_s` without use or `session_max_s` after
sign-in, at sign-out, and when the account's password changes or the account is disabled.

Sign-in itself is a POST from a signed-out browser, so its form carries a token bound to a
random pre-session cookie by an HMAC under a per-process key (double submit, nothing stored):
a cross-site page can neither read the cookie nor forge the token. A successful sign-in issues
a fresh session id and never reuses any id the browser presented (session fixation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass

from proxy.takedown.accounts import Account, Role
from proxy.takedown.config import Desk


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    account: Account
    csrf: str


def create(conn: sqlite3.Connection, account: Account, now: float, remote: str | None) -> str:
    """A new session for `account`; returns its id (for the cookie only)."""
    sid = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO desk_sessions (id_hash, account_id, csrf, created_at, last_seen_at, remote)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (_hash(sid), account.id, secrets.token_urlsafe(32), now, now, remote),
    )
    return sid


def lookup(conn: sqlite3.Connection, session_id: str, now: float, cfg: Desk) -> Session | None:
    """The live session with this id (its last use moved to now), or None; expired ones go."""
    conn.execute(
        "DELETE FROM desk_sessions WHERE last_seen_at < ? OR created_at < ?",
        (now - cfg.session_idle_s, now - cfg.session_max_s),
    )
    row = conn.execute(
        "SELECT s.id_hash, s.csrf, a.id, a.name, a.role, a.customer_id FROM desk_sessions s"
        " JOIN accounts a ON a.id = s.account_id"
        " WHERE s.id_hash = ? AND a.disabled_at IS NULL",
        (_hash(session_id),),
    ).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE desk_sessions SET last_seen_at = ? WHERE id_hash = ?", (now, row[0]))
    acct = Account(row["id"], row["name"], Role(row["role"]), row["customer_id"])
    return Session(row["id_hash"], acct, row["csrf"])


def end(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("DELETE FROM desk_sessions WHERE id_hash = ?", (_hash(session_id),))


class SigninTokens:
    """CSRF tokens for the sign-in form: HMAC(process key, pre-session cookie)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    @staticmethod
    def new_pre_session() -> str:
        return secrets.token_urlsafe(32)

    def token(self, pre_session: str) -> str:
        return hmac.new(self._key, pre_session.encode(), hashlib.sha256).hexdigest()

    def valid(self, pre_session: str, token: str) -> bool:
        return bool(pre_session) and hmac.compare_digest(self.token(pre_session), token)
