"""Notifications that must really reach a party: a durable outbox and what goes into it.

The law asks for messages, not audit rows: a receipt to the notifier (DSA Art. 16(4)), the
takedown and a strike warning to the customer (17 U.S.C. 512(g)(2)(A), DSA Art. 17), the
counter-notice to the complainant (512(g)(2)(B)). Each is written to the `outbox` table in the
transaction that decides it, one row per recipient and channel (email, signed webhook), with a
`notification_queued` record on the case; `sender.py` delivers them. A party with no contact
on record gets a `notification_undeliverable` record instead, so the gap is visible on the
case rather than silent.

Who gets what:
    receipt         the notice's complainant (its email) and the submitting account (webhook)
    takedown        the customer of every site the case names (email, webhook)
    warning         the customer whose site crossed the strike warning threshold
    suspension      the customer whose site was suspended
    counter_notice  every complainant of the case, with the counter-notice and restore window
    reversal        both sides (complainants and customers): the decision was reversed
    withdrawal      the customers: the complainant withdrew, the block ends
    complaint_dismissed  both sides: an internal complaint (DSA Art. 20) was dismissed
    unsuspension    the customer whose site was suspended: the suspension is lifted
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from proxy.takedown import audit


class Kind(StrEnum):
    RECEIPT = "receipt"
    TAKEDOWN = "takedown"
    WARNING = "warning"
    SUSPENSION = "suspension"
    COUNTER_NOTICE = "counter_notice"
    REVERSAL = "reversal"
    WITHDRAWAL = "withdrawal"
    COMPLAINT_DISMISSED = "complaint_dismissed"
    UNSUSPENSION = "unsuspension"
    # Customer verification (customers.py): evidence or a domain validation expired and the
    # customer's level dropped; its sites may be held on the edges until it re-verifies.
    VERIFICATION_LAPSED = "verification_lapsed"
    VERIFICATION_EXPIRING = "verification_expiring"  # `remind_before_s` ahead of a drop


# Outcomes both sides of a case are told (DSA 20(4): the complainant of a complaint and the
# other party both learn the decision on it).
BOTH_SIDES = frozenset({Kind.REVERSAL, Kind.COMPLAINT_DISMISSED})


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


SUBJECTS = {
    Kind.RECEIPT: "Receipt of your notice (case {case})",
    Kind.TAKEDOWN: "Access to content on your site was disabled (case {case})",
    Kind.WARNING: "Repeat-infringer warning for your site (case {case})",
    Kind.SUSPENSION: "Your site was suspended (case {case})",
    Kind.COUNTER_NOTICE: "Counter-notice received; the material will be restored (case {case})",
    Kind.REVERSAL: "The decision on case {case} was reversed",
    Kind.WITHDRAWAL: "The notice was withdrawn; access is restored (case {case})",
    Kind.COMPLAINT_DISMISSED: "Your complaint was dismissed; the decision stands (case {case})",
    Kind.UNSUSPENSION: "The suspension of your site was lifted (case {case})",
    Kind.VERIFICATION_LAPSED: "Your verification expired: please verify again",
    Kind.VERIFICATION_EXPIRING: "Your verification expires soon: please renew it",
}


@dataclass(frozen=True, slots=True)
class Recipient:
    party: str  # "complainant" | "customer"
    channel: Channel
    to: str  # an address or a URL
    secret: str = ""  # the webhook's HMAC key


def set_contact(
    conn: sqlite3.Connection,
    party: str,
    party_id: int,
    now: float,
    *,
    email: str | None = None,
    webhook_url: str | None = None,
) -> str | None:
    """Record a customer's or an account's contact; returns a new webhook secret (shown once)
    when a webhook URL is set."""
    secret = secrets.token_urlsafe(32) if webhook_url else None
    conn.execute(
        "INSERT INTO contacts (party, party_id, email, webhook_url, webhook_secret)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(party, party_id) DO UPDATE SET"
        " email = COALESCE(excluded.email, email),"
        " webhook_url = COALESCE(excluded.webhook_url, webhook_url),"
        " webhook_secret = COALESCE(excluded.webhook_secret, webhook_secret)",
        (party, party_id, email, webhook_url, secret),
    )
    audit.append(
        conn,
        now,
        "contact_set",
        actor="admin-cli",
        data={"party": party, "id": party_id, "email": email, "webhook_url": webhook_url},
    )
    return secret


def _contact(conn: sqlite3.Connection, party: str, party_id: int | None) -> list[Recipient]:
    if party_id is None:
        return []
    row = conn.execute(
        "SELECT email, webhook_url, webhook_secret FROM contacts WHERE party = ? AND party_id = ?",
        (party, party_id),
    ).fetchone()
    if row is None:
        return []
    who = "customer" if party == "customer" else "complainant"
    out = []
    if row["email"]:
        out.append(Recipient(who, Channel.EMAIL, row["email"]))
    if row["webhook_url"]:
        out.append(Recipient(who, Channel.WEBHOOK, row["webhook_url"], row["webhook_secret"]))
    return out


def _complainant(conn: sqlite3.Connection, notice_id: int) -> list[Recipient]:
    """The email the notice gives (DSA 16(2)(c)) and the submitting account's own contact."""
    row = conn.execute(
        "SELECT account_id, parsed FROM notices WHERE id = ?", (notice_id,)
    ).fetchone()
    out: list[Recipient] = []
    doc = json.loads(row["parsed"]) if row["parsed"] else None
    complainant = doc.get("complainant") if isinstance(doc, dict) else None
    email = complainant.get("email") if isinstance(complainant, dict) else None
    if isinstance(email, str) and "@" in email and len(email) <= 254:
        out.append(Recipient("complainant", Channel.EMAIL, email))
    for r in _contact(conn, "account", row["account_id"]):
        if r not in out:
            out.append(r)
    return out


def recipients(
    conn: sqlite3.Connection,
    kind: Kind,
    case_id: int,
    *,
    notice_id: int | None = None,
    customer_id: int | None = None,
) -> list[Recipient]:
    if kind is Kind.RECEIPT:
        assert notice_id is not None
        return _complainant(conn, notice_id)
    if kind is Kind.COUNTER_NOTICE:
        return _complainants(conn, case_id)
    if customer_id is not None:
        return _contact(conn, "customer", customer_id)
    out = _complainants(conn, case_id) if kind in BOTH_SIDES else []
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT s.customer_id FROM targets t JOIN sites s ON s.host = t.host"
            " WHERE t.case_id = ? AND t.accepted = 1 ORDER BY s.customer_id",
            (case_id,),
        )
    ]
    return out + [r for cid in ids for r in _contact(conn, "customer", cid) if r not in out]


def _complainants(conn: sqlite3.Connection, case_id: int) -> list[Recipient]:
    out: list[Recipient] = []
    for (nid,) in conn.execute(
        "SELECT id FROM notices WHERE case_id = ? AND complete = 1 ORDER BY id", (case_id,)
    ).fetchall():
        out += [r for r in _complainant(conn, nid) if r not in out]
    return out


def enqueue(
    conn: sqlite3.Connection,
    now: float,
    kind: Kind,
    case_id: int,
    payload: dict[str, Any],
    *,
    notice_id: int | None = None,
    customer_id: int | None = None,
) -> list[int]:
    """Queue `kind` for everyone who should get it; in the caller's transaction."""
    found = recipients(conn, kind, case_id, notice_id=notice_id, customer_id=customer_id)
    if not found:
        audit.append(
            conn,
            now,
            "notification_undeliverable",
            case_id=case_id,
            data={"kind": kind.value, "reason": "no contact on record"},
        )
        return []
    body = audit.canonical_json({"event": kind.value, "case": case_id, **payload})
    subject = SUBJECTS[kind].format(case=case_id)
    ids = []
    for r in found:
        oid = conn.execute(
            "INSERT INTO outbox (case_id, kind, party, channel, recipient, secret, subject, body,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, kind.value, r.party, r.channel.value, r.to, r.secret, subject, body, now),
        ).lastrowid
        assert oid is not None
        ids.append(int(oid))
        audit.append(
            conn,
            now,
            "notification_queued",
            case_id=case_id,
            data={"outbox": oid, "kind": kind.value, "channel": r.channel.value, "to": r.to},
        )
    return ids


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    case_id: int
    kind: str
    channel: Channel
    recipient: str
    secret: str
    subject: str
    body: str
    attempts: int
    created_at: float

    def webhook_body(self) -> bytes:
        """What is POSTed and signed: the payload with its outbox id (receivers dedupe on it)."""
        doc = json.loads(self.body)
        return audit.canonical_json({"id": self.id, "created_at": self.created_at, **doc}).encode()

    def email_text(self, operator: str) -> str:
        doc = json.loads(self.body)
        lines = [f"{self.subject}.", ""]
        lines += [f"{k.replace('_', ' ')}: {_text(v)}" for k, v in doc.items()]
        lines += ["", f"-- {operator}", f"outbox {self.id}"]
        return "\n".join(lines) + "\n"


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def pending(conn: sqlite3.Connection, exclude: set[int]) -> list[Message]:
    """Undelivered, not abandoned messages, oldest first (except those already being sent)."""
    return [
        Message(
            r["id"],
            r["case_id"],
            r["kind"],
            Channel(r["channel"]),
            r["recipient"],
            r["secret"] or "",
            r["subject"],
            r["body"],
            r["attempts"],
            r["created_at"],
        )
        for r in conn.execute(
            "SELECT * FROM outbox WHERE delivered_at IS NULL AND abandoned_at IS NULL ORDER BY id"
        )
        if r["id"] not in exclude
    ]


def record_attempt(
    conn: sqlite3.Connection,
    msg: Message,
    now: float,
    error: str | None,
    retry_in_s: float | None,
) -> None:
    """One delivery attempt, on the case's timeline whatever its outcome."""
    attempts = conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?, last_error = ?,"
        " delivered_at = CASE WHEN ? IS NULL THEN ? END,"
        " abandoned_at = CASE WHEN ? IS NOT NULL AND ? IS NULL THEN ? END"
        " WHERE id = ? RETURNING attempts",
        (now, error, error, now, error, retry_in_s, now, msg.id),
    ).fetchone()[0]
    data: dict[str, Any] = {
        "outbox": msg.id,
        "kind": msg.kind,
        "channel": msg.channel.value,
        "to": msg.recipient,
        "attempt": attempts,
    }
    if error is None:
        event = "notification_sent"
    else:
        data["error"] = error[:500]
        if retry_in_s is not None:
            event, data["retry_in_s"] = "notification_failed", round(retry_in_s, 3)
        else:
            event = "notification_abandoned"
    audit.append(conn, now, event, case_id=msg.case_id, data=data)
