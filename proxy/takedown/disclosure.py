"""Disclosure requests: a court order or a 17 U.S.C. 512(h) subpoena naming a site.

A disclosure is a case of its own (legal basis `disclosure-order` or `disclosure-512h`,
states disclosure_pending -> disclosed | rejected), so it appears in the desk's case list and
keeps its timeline in the audit chain like any other case:

    record    the order as received: issuer (the court or clerk), its reference, its date, the
              SHA-256 of the document, who asks, and the site it names (the customer is
              resolved from the site now, so a later transfer does not change who was named)
    disclose  the identity record of the site's customer is returned to the operator or admin
              who discloses it (to hand to the requester) and stored with the disclosure; the
              audit record says what was disclosed to whom (field names and the record's
              SHA-256), not the personal data itself
    reject    a defective order (wrong site, no signature, expired): the reason is recorded

512(h)(5) asks the provider to disclose "expeditiously"; the case's received_at and the
disclosed record's time are the evidence of how fast.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
from typing import Any

from proxy.takedown import audit, customers
from proxy.takedown.accounts import Account
from proxy.takedown.elements import site_key
from proxy.takedown.states import Conflict, NotFound, S, actor_of, transition

KINDS = {"court-order": "disclosure-order", "512h-subpoena": "disclosure-512h"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _text(body: dict[str, Any], name: str, limit: int = 500) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v.strip() or len(v) > limit or "\x00" in v:
        raise customers.Invalid(f"{name} is required (text, at most {limit} characters)")
    return v.strip()


def record(
    conn: sqlite3.Connection, body: dict[str, Any], now: float, account: Account
) -> dict[str, Any]:
    kind = body.get("kind")
    if kind not in KINDS:
        raise customers.Invalid(f"kind must be one of {', '.join(KINDS)}")
    issuer, reference, requester = (_text(body, n) for n in ("issuer", "reference", "requester"))
    try:
        date = dt.date.fromisoformat(_text(body, "date", 10)).isoformat()
    except ValueError:
        raise customers.Invalid("date must be YYYY-MM-DD") from None
    digest = body.get("document_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise customers.Invalid("document_sha256 must be 64 lowercase hex digits")
    try:
        host = site_key(_text(body, "site", 300))
    except ValueError as exc:
        raise customers.Invalid(f"site: {exc}") from None
    row = conn.execute("SELECT customer_id FROM sites WHERE host = ?", (host,)).fetchone()
    if row is None:
        raise customers.Invalid(f"site {host} is not served here")
    actor = actor_of(account)
    case_id = conn.execute(
        "INSERT INTO cases (state, legal_basis, received_at, validated_at) VALUES (?, ?, ?, ?)",
        (S.DISCLOSURE_PENDING.value, KINDS[kind], now, now),
    ).lastrowid
    assert case_id is not None
    did = conn.execute(
        "INSERT INTO disclosures (case_id, host, customer_id, kind, issuer, reference, order_date,"
        " document_sha256, requester, recorded_at, recorded_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (case_id, host, row[0], kind, issuer, reference, date, digest, requester, now, actor),
    ).lastrowid
    audit.append(
        conn,
        now,
        "disclosure_requested",
        case_id=case_id,
        actor=actor,
        data={
            "disclosure": did,
            "kind": kind,
            "issuer": issuer,
            "reference": reference,
            "date": date,
            "document_sha256": digest,
            "requester": requester,
            "site": host,
            "customer": row[0],
        },
    )
    return view(conn, case_id) or {}


def _row(conn: sqlite3.Connection, case_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM disclosures WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(case_id)
    found: sqlite3.Row = row
    return found


def disclose(
    conn: sqlite3.Connection, case_id: int, now: float, account: Account
) -> dict[str, Any]:
    d = _row(conn, case_id)
    ident = customers.identity(conn, d["customer_id"]) if d["customer_id"] else None
    if ident is None:
        raise Conflict(f"customer of {d['host']} has no identity record to disclose")
    record_ = {
        k: ident[k] for k in customers.REQUIRED + customers.OPTIONAL if ident.get(k) is not None
    }
    name = conn.execute("SELECT name FROM customers WHERE id = ?", (d["customer_id"],)).fetchone()
    record_["customer"] = name[0]
    actor = actor_of(account)
    transition(conn, case_id, S.DISCLOSED, now, actor, {"disclosure": d["id"]})
    text = audit.canonical_json(record_)
    conn.execute(
        "UPDATE disclosures SET disclosed_at = ?, disclosed_by = ?, disclosed = ? WHERE id = ?",
        (now, actor, text, d["id"]),
    )
    conn.execute(
        "UPDATE cases SET decided_at = ?, decision = 'disclose' WHERE id = ?", (now, case_id)
    )
    audit.append(
        conn,
        now,
        "identity_disclosed",
        case_id=case_id,
        actor=actor,
        data={
            "disclosure": d["id"],
            "to": d["requester"],
            "fields": sorted(record_),
            "record_sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
    )
    return {**(view(conn, case_id) or {}), "identity": record_}


def reject(
    conn: sqlite3.Connection, case_id: int, reason: str, now: float, account: Account
) -> dict[str, Any]:
    d = _row(conn, case_id)
    if not reason.strip():
        raise customers.Invalid("a reason is required")
    transition(
        conn, case_id, S.REJECTED, now, actor_of(account), {"disclosure": d["id"], "reason": reason}
    )
    conn.execute(
        "UPDATE cases SET decided_at = ?, decision = 'reject', decision_reason = ? WHERE id = ?",
        (now, reason, case_id),
    )
    return view(conn, case_id) or {}


def view(conn: sqlite3.Connection, case_id: int) -> dict[str, Any] | None:
    d = conn.execute("SELECT * FROM disclosures WHERE case_id = ?", (case_id,)).fetchone()
    if d is None:
        return None
    state = conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()[0]
    out = {k: d[k] for k in d.keys() if k != "disclosed"}
    out["case"] = case_id
    out["state"] = state
    out["disclosed_fields"] = sorted(json.loads(d["disclosed"])) if d["disclosed"] else []
    return out
