"""Staff passwords: scrypt (RFC 7914, `hashlib.scrypt`: OpenSSL's, no extra dependency).

A hash is stored as `scrypt$N$r$p$salt$digest` (base64), so the cost can be raised later and
old hashes still verify. Only operator and admin accounts get a password: the console is theirs;
every other role keeps its API key. A login that does not exist still costs one scrypt, so the
time a failed sign-in takes does not tell which logins exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass

from proxy.takedown import audit
from proxy.takedown.accounts import Account, Role
from proxy.takedown.desk import schema

STAFF = frozenset({Role.OPERATOR, Role.ADMIN})
# 32 MiB and ~0.1 s a check on this machine. OWASP suggests N=2^17 (128 MiB); the parameters
# travel with each hash, so raising N here re-hashes nothing and breaks no login.
N, R, P = 1 << 15, 8, 1
MIN_LENGTH = 12
_MAXMEM = 128 << 20


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY = hash_password(secrets.token_urlsafe(16))


def set_password(
    conn: sqlite3.Connection, account_id: int, login: str, password_hash: str, now: float
) -> None:
    """Give a staff account a console login and password; ends its open sessions."""
    schema.ensure(conn)
    row = conn.execute("SELECT role FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise ValueError(f"no account {account_id}")
    if Role(row[0]) not in STAFF:
        raise ValueError(f"account {account_id} is {row[0]}: only operator and admin sign in")
    clash = conn.execute(
        "SELECT id FROM accounts WHERE login = ? AND id != ?", (login, account_id)
    ).fetchone()
    if clash is not None:
        raise ValueError(f"login {login!r} is taken by account {clash[0]}")
    conn.execute(
        "UPDATE accounts SET login = ?, password_hash = ? WHERE id = ?",
        (login, password_hash, account_id),
    )
    conn.execute("DELETE FROM desk_sessions WHERE account_id = ?", (account_id,))
    audit.append(
        conn, now, "password_set", actor="admin-cli", data={"account": account_id, "login": login}
    )


@dataclass(frozen=True, slots=True)
class Candidate:
    account: Account
    password_hash: str


def candidate(conn: sqlite3.Connection, login: str) -> Candidate | None:
    """The enabled staff account with this login, and its hash (checked off the DB thread)."""
    row = conn.execute(
        "SELECT id, name, role, customer_id, password_hash FROM accounts"
        " WHERE login = ? AND disabled_at IS NULL AND password_hash IS NOT NULL",
        (login,),
    ).fetchone()
    if row is None:
        return None
    acct = Account(row["id"], row["name"], Role(row["role"]), row["customer_id"])
    return Candidate(acct, row["password_hash"])


def check(found: Candidate | None, password: str) -> Account | None:
    """The account if the password is right and the role may use the console; slow on purpose."""
    if found is None:
        verify_password(password, _DUMMY)
        return None
    if not verify_password(password, found.password_hash):
        return None
    return found.account if found.account.role in STAFF else None
