"""Accounts, API keys, customers and sites.

An API key is `tdk_<account id>_<secret>`. Only sha256(key) is stored; a presented key is looked
up by its account id and compared with `hmac.compare_digest`, so neither the database nor the
timing of a failed check gives the key away.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from proxy.takedown import audit
from proxy.takedown.elements import site_key


class Role(StrEnum):
    SUBMITTER = "submitter"
    TRUSTED = "trusted"  # e.g. a verified rights-holder association: actioned automatically
    OPERATOR = "operator"  # decides cases
    ADMIN = "admin"
    # A hosting customer's account: may answer (counter-notice) cases against its own sites.
    CUSTOMER = "customer"


class Verification(StrEnum):
    NONE = "none"
    EMAIL = "email"
    PAYMENT = "payment"
    VERIFIED_ENTITY = "verified_entity"


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    role: Role
    customer_id: int | None = None  # set for CUSTOMER accounts: whose sites it answers for


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_account(
    conn: sqlite3.Connection, name: str, role: Role, now: float, customer: str | None = None
) -> str:
    """Insert an account and return its API key (shown once, never stored). A CUSTOMER
    account names the customer it speaks for; no other role may."""
    if (role is Role.CUSTOMER) != (customer is not None):
        raise ValueError("a customer account, and only one, names its customer")
    customer_id = None
    if customer is not None:
        row = conn.execute("SELECT id FROM customers WHERE name = ?", (customer,)).fetchone()
        if row is None:
            raise ValueError(f"no customer {customer!r} (add one of its sites first)")
        customer_id = int(row["id"])
    cur = conn.execute(
        "INSERT INTO accounts (name, role, key_hash, created_at, customer_id)"
        " VALUES (?, ?, '', ?, ?)",
        (name, role.value, now, customer_id),
    )
    aid = cur.lastrowid
    assert aid is not None
    key = f"tdk_{aid}_{secrets.token_urlsafe(32)}"
    conn.execute("UPDATE accounts SET key_hash = ? WHERE id = ?", (key_hash(key), aid))
    audit.append(
        conn,
        now,
        "account_created",
        actor="admin-cli",
        data={"account": aid, "name": name, "role": role.value, "customer": customer},
    )
    return key


def parse_key(key: str) -> int | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "tdk" or not parts[1].isdigit():
        return None
    return int(parts[1])


def authenticate(conn: sqlite3.Connection, key: str) -> Account | None:
    aid = parse_key(key)
    if aid is None:
        return None
    row = conn.execute(
        "SELECT id, name, role, key_hash, customer_id FROM accounts"
        " WHERE id = ? AND disabled_at IS NULL",
        (aid,),
    ).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], key_hash(key)):
        return None
    return Account(row["id"], row["name"], Role(row["role"]), row["customer_id"])


def add_site(
    conn: sqlite3.Connection,
    host: str,
    customer: str,
    now: float,
    verification: Verification | None = None,
    method: str | None = None,
) -> int:
    """Create the customer if new (or update its verification) and attach the site to it.

    `host` may carry a port (`127.0.0.1:8080`); a target URL matches `host:port` first, then
    `host` alone.
    """
    host = site_key(host)
    row = conn.execute("SELECT id FROM customers WHERE name = ?", (customer,)).fetchone()
    if row is None:
        v = verification or Verification.NONE
        cid = conn.execute(
            "INSERT INTO customers (name, verification, verified_at, verification_method,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (customer, v.value, None if v is Verification.NONE else now, method, now),
        ).lastrowid
        assert cid is not None
        audit.append(
            conn,
            now,
            "customer_created",
            actor="admin-cli",
            data={"customer": customer, "verification": v.value, "method": method},
        )
    else:
        cid = row["id"]
        if verification is not None:
            set_verification(conn, customer, verification, method, now)
    conn.execute(
        "INSERT INTO sites (host, customer_id, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT(host) DO UPDATE SET customer_id = excluded.customer_id",
        (host.lower(), cid, now),
    )
    audit.append(
        conn,
        now,
        "site_added",
        actor="admin-cli",
        data={"host": host.lower(), "customer": customer},
    )
    return int(cid)


def set_verification(
    conn: sqlite3.Connection, customer: str, v: Verification, method: str | None, now: float
) -> None:
    conn.execute(
        "UPDATE customers SET verification = ?, verified_at = ?, verification_method = ?"
        " WHERE name = ?",
        (v.value, None if v is Verification.NONE else now, method, customer),
    )
    audit.append(
        conn,
        now,
        "customer_verification",
        actor="admin-cli",
        data={"customer": customer, "verification": v.value, "method": method},
    )
