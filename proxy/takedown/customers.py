"""Know-your-customer: identity records, verification evidence and the level derived from them.

A customer's level is never stored as a fact someone typed; it is derived, every time, from
what is on record:

    none               no identity record
    self-declared      an identity record (legal name, address, country, contact)
    documents-checked  plus unexpired, unrevoked evidence of a document method, recorded by a
                       reviewer (operator or admin account)
    domain-validated   per site: documents-checked plus a passed, unexpired domain-control
                       validation of that site (`dcv.py`)

A site goes live on the edges when its level reaches `[verification] go_live_level`
(`roster.py` publishes the hosts that do). The derived level also replaces the customer's
one-enum `verification`, so the strike policy's stricter thresholds apply below
`[strikes] verified_statuses` (documents-checked and up by default). `reverify` runs periodically: evidence past its
expiry is marked lapsed, and a customer whose derived level dropped gets an audit record and a
notification through the outbox, so the lowered level (and the held sites) never happen
silently. The audit log records that an identity changed and the SHA-256 of the record, not
the personal data itself: the chain is append-only, personal data must stay erasable.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from enum import StrEnum
from typing import Any

from proxy.takedown import audit, notify
from proxy.takedown.config import Verification


class Level(StrEnum):
    NONE = "none"
    SELF_DECLARED = "self-declared"
    DOCUMENTS_CHECKED = "documents-checked"
    DOMAIN_VALIDATED = "domain-validated"

    @property
    def rank(self) -> int:
        return ORDER.index(self)


ORDER = [Level.NONE, Level.SELF_DECLARED, Level.DOCUMENTS_CHECKED, Level.DOMAIN_VALIDATED]

IDENTITY_FIELDS = ("legal_name", "address", "country", "registration_number", "contact_email")
REQUIRED = ("legal_name", "address", "country", "contact_email")
OPTIONAL = ("registration_number", "contact_phone")
MAX_FIELD_CHARS = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Invalid(ValueError):
    """Input the desk must correct; the message names the field."""


# -- pure policy ----------------------------------------------------------------------------


def customer_level(
    has_identity: bool,
    evidence: list[tuple[str, float, float | None]],
    now: float,
    policy: Verification,
) -> Level:
    """`evidence` rows are (method, expires_at, revoked_at)."""
    if not has_identity:
        return Level.NONE
    for method, expires_at, revoked_at in evidence:
        if method in policy.document_methods and revoked_at is None and expires_at > now:
            return Level.DOCUMENTS_CHECKED
    return Level.SELF_DECLARED


def site_level(customer: Level, domain_validated: bool) -> Level:
    if customer.rank >= Level.DOCUMENTS_CHECKED.rank and domain_validated:
        return Level.DOMAIN_VALIDATED
    return customer


def goes_live(level: Level, policy: Verification) -> bool:
    return level.rank >= Level(policy.go_live_level).rank


# -- lookups --------------------------------------------------------------------------------


def customer_id(conn: sqlite3.Connection, ref: str | int) -> int | None:
    """A customer by id or by name."""
    if isinstance(ref, int) or str(ref).isdigit():
        row = conn.execute("SELECT id FROM customers WHERE id = ?", (int(ref),)).fetchone()
    else:
        row = conn.execute("SELECT id FROM customers WHERE name = ?", (ref,)).fetchone()
    return None if row is None else int(row[0])


def derive(conn: sqlite3.Connection, cid: int, now: float, policy: Verification) -> Level:
    has = conn.execute("SELECT 1 FROM identities WHERE customer_id = ?", (cid,)).fetchone()
    rows = conn.execute(
        "SELECT method, expires_at, revoked_at FROM evidence WHERE customer_id = ?", (cid,)
    ).fetchall()
    return customer_level(has is not None, [tuple(r) for r in rows], now, policy)


def domain_validated(conn: sqlite3.Connection, host: str, now: float) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM domain_validations WHERE host = ? AND state = 'valid'"
            " AND expires_at > ?",
            (host, now),
        ).fetchone()
        is not None
    )


def live_hosts(conn: sqlite3.Connection, now: float, policy: Verification) -> list[str]:
    """Every site whose level reaches the go-live level, as the roster names it."""
    out = []
    levels: dict[int, Level] = {}
    for host, cid in conn.execute("SELECT host, customer_id FROM sites ORDER BY host").fetchall():
        if cid not in levels:
            levels[cid] = derive(conn, cid, now, policy)
        if goes_live(site_level(levels[cid], domain_validated(conn, host, now)), policy):
            out.append(host)
    return out


# -- writes ---------------------------------------------------------------------------------


def _clean(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        if name not in fields:
            continue
        v = fields[name]
        if v is None or v == "":
            out[name] = None
            continue
        if not isinstance(v, str) or len(v) > MAX_FIELD_CHARS or "\x00" in v:
            raise Invalid(f"{name} must be text of at most {MAX_FIELD_CHARS} characters")
        out[name] = v.strip()
    return out


def record_identity(
    conn: sqlite3.Connection,
    cid: int,
    fields: dict[str, Any],
    now: float,
    actor: str,
    policy: Verification,
) -> dict[str, Any]:
    """Create or correct the identity record (fields not given keep their value)."""
    unknown = set(fields) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise Invalid(f"unknown identity fields: {', '.join(sorted(unknown))}")
    given = _clean(fields, REQUIRED + OPTIONAL)
    old = conn.execute("SELECT * FROM identities WHERE customer_id = ?", (cid,)).fetchone()
    merged = {k: (old[k] if old is not None else None) for k in REQUIRED + OPTIONAL}
    merged.update(given)
    missing = [k for k in REQUIRED if not merged.get(k)]
    if missing:
        raise Invalid(f"identity record lacks {', '.join(missing)}")
    country = str(merged["country"])
    if not re.fullmatch(r"[A-Za-z]{2}", country):
        raise Invalid("country must be an ISO 3166-1 alpha-2 code (e.g. DE)")
    merged["country"] = country.upper()
    if "@" not in str(merged["contact_email"]):
        raise Invalid("contact_email must be an email address")
    conn.execute(
        "INSERT INTO identities (customer_id, legal_name, address, country, registration_number,"
        " contact_email, contact_phone, declared_at, updated_at, updated_by)"
        " VALUES (:cid, :legal_name, :address, :country, :registration_number, :contact_email,"
        " :contact_phone, :now, :now, :actor) ON CONFLICT(customer_id) DO UPDATE SET"
        " legal_name = excluded.legal_name, address = excluded.address,"
        " country = excluded.country, registration_number = excluded.registration_number,"
        " contact_email = excluded.contact_email, contact_phone = excluded.contact_phone,"
        " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        {"cid": cid, "now": now, "actor": actor, **merged},
    )
    digest = hashlib.sha256(audit.canonical_json(merged).encode()).hexdigest()
    audit.append(
        conn,
        now,
        "identity_recorded" if old is None else "identity_updated",
        actor=actor,
        data={"customer": cid, "fields": sorted(given), "record_sha256": digest},
    )
    settle(conn, cid, now, policy, actor)
    return identity(conn, cid) or {}


def add_evidence(
    conn: sqlite3.Connection,
    cid: int,
    body: dict[str, Any],
    now: float,
    reviewer: int,
    actor: str,
    policy: Verification,
) -> dict[str, Any]:
    method = body.get("method")
    if not isinstance(method, str) or not method or len(method) > 100:
        raise Invalid("method is required (e.g. passport, company-register)")
    ref = body.get("document_ref")
    digest = body.get("document_sha256")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_FIELD_CHARS):
        raise Invalid("document_ref must be text")
    if digest is not None and (not isinstance(digest, str) or not _SHA256.fullmatch(digest)):
        raise Invalid("document_sha256 must be 64 lowercase hex digits")
    if not ref and not digest:
        raise Invalid("give document_ref or document_sha256 (what was checked)")
    expires = body.get("expires_at", now + policy.evidence_valid_s)
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires <= now:
        raise Invalid("expires_at must be a Unix time in the future")
    eid = conn.execute(
        "INSERT INTO evidence (customer_id, method, document_ref, document_sha256, reviewer_id,"
        " verified_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (cid, method, ref, digest, reviewer, now, float(expires)),
    ).lastrowid
    audit.append(
        conn,
        now,
        "evidence_recorded",
        actor=actor,
        data={
            "customer": cid,
            "evidence": eid,
            "method": method,
            "document_sha256": digest,
            "has_document_ref": bool(ref),
            "expires_at": float(expires),
        },
    )
    settle(conn, cid, now, policy, actor)
    return {"id": eid, "customer": cid, "method": method, "expires_at": float(expires)}


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def checked_site(host: str) -> str:
    """A site key the edges can match (a DNS name or an IP literal, optional port), or
    `Invalid` naming what is wrong with it."""
    import ipaddress

    from proxy.takedown.elements import bare_host, site_key

    try:
        key = site_key(host)
    except ValueError as exc:
        raise Invalid(f"host: {exc}") from None
    bare = bare_host(key)
    try:
        ipaddress.ip_address(bare)
        return key
    except ValueError:
        pass
    if len(bare) > 253 or not all(_LABEL.fullmatch(label) for label in bare.split(".")):
        raise Invalid(f"host {host!r} is not a DNS name or an IP address")
    return key


def assign_site(conn: sqlite3.Connection, host: str, customer: str, now: float, actor: str) -> str:
    """Add a site, or move it to another customer (created on first use). A move voids the
    site's domain validations: they proved control for the customer they were issued to."""
    from proxy.takedown.accounts import add_site

    key = checked_site(host)
    before = conn.execute("SELECT customer_id FROM sites WHERE host = ?", (key,)).fetchone()
    cid = add_site(conn, host, customer, now)
    if before is not None and before[0] != cid:
        conn.execute(
            "UPDATE domain_validations SET state = 'superseded'"
            " WHERE host = ? AND state IN ('pending', 'valid')",
            (key,),
        )
        audit.append(
            conn,
            now,
            "site_transferred",
            actor=actor,
            data={"host": key, "from": before[0], "to": cid},
        )
    return key


def revoke_evidence(
    conn: sqlite3.Connection, cid: int, eid: int, now: float, actor: str, policy: Verification
) -> dict[str, Any]:
    n = conn.execute(
        "UPDATE evidence SET revoked_at = ? WHERE id = ? AND customer_id = ? AND revoked_at IS NULL",
        (now, eid, cid),
    ).rowcount
    if not n:
        raise LookupError(f"no live evidence {eid} for customer {cid}")
    audit.append(
        conn, now, "evidence_revoked", actor=actor, data={"customer": cid, "evidence": eid}
    )
    return {"customer": cid, "evidence": eid, "level": settle(conn, cid, now, policy, actor)}


def settle(
    conn: sqlite3.Connection, cid: int, now: float, policy: Verification, actor: str = "system"
) -> Level:
    """Derive the level; when it changed, record it (audited), and notify a drop."""
    level = derive(conn, cid, now, policy)
    row = conn.execute("SELECT level FROM customer_levels WHERE customer_id = ?", (cid,)).fetchone()
    before = Level(row[0]) if row is not None else Level.NONE
    if row is not None and before is level:
        return level
    conn.execute(
        "INSERT INTO customer_levels (customer_id, level, since) VALUES (?, ?, ?)"
        " ON CONFLICT(customer_id) DO UPDATE SET level = excluded.level, since = excluded.since",
        (cid, level.value, now),
    )
    if level is not Level.NONE:
        # The strike policy reads `customers.verification` (strikes.thresholds): once a
        # customer has an identity record, that is its derived level.
        conn.execute(
            "UPDATE customers SET verification = ?, verified_at = ?, verification_method = 'kyc'"
            " WHERE id = ?",
            (level.value, now, cid),
        )
    if before is not level:
        audit.append(
            conn,
            now,
            "verification_level",
            actor=actor,
            data={"customer": cid, "from": before.value, "to": level.value},
        )
    if level.rank < before.rank:
        name = conn.execute("SELECT name FROM customers WHERE id = ?", (cid,)).fetchone()[0]
        notify.enqueue(
            conn,
            now,
            notify.Kind.VERIFICATION_LAPSED,
            None,  # type: ignore[arg-type]  # a customer matter, not a case
            {"customer": name, "from": before.value, "to": level.value},
            customer_id=cid,
        )
    return level


def remind(conn: sqlite3.Connection, now: float, policy: Verification) -> list[int]:
    """Tell each customer, once per item, `remind_before_s` before evidence or a domain
    validation expires when its level (or a site's) would drop with it; audited."""
    horizon = now + policy.remind_before_s
    told = []
    for eid, cid, expires in conn.execute(
        "SELECT id, customer_id, expires_at FROM evidence WHERE expires_at > ? AND expires_at"
        " <= ? AND reminded_at IS NULL AND revoked_at IS NULL",
        (now, horizon),
    ).fetchall():
        conn.execute("UPDATE evidence SET reminded_at = ? WHERE id = ?", (now, eid))
        drops = derive(conn, cid, expires, policy).rank < derive(conn, cid, now, policy).rank
        if drops:
            told.append(_remind(conn, now, cid, {"evidence": eid, "expires_at": expires}))
    for vid, host, cid, expires in conn.execute(
        "SELECT v.id, v.host, s.customer_id, v.expires_at FROM domain_validations v JOIN sites s"
        " ON s.host = v.host WHERE v.state = 'valid' AND v.expires_at > ? AND v.expires_at <= ?"
        " AND v.reminded_at IS NULL",
        (now, horizon),
    ).fetchall():
        conn.execute("UPDATE domain_validations SET reminded_at = ? WHERE id = ?", (now, vid))
        if not domain_validated(conn, host, expires):  # no later validation covers it
            told.append(
                _remind(conn, now, cid, {"site": host, "validation": vid, "expires_at": expires})
            )
    return told


def _remind(conn: sqlite3.Connection, now: float, cid: int, what: dict[str, Any]) -> int:
    name = conn.execute("SELECT name FROM customers WHERE id = ?", (cid,)).fetchone()[0]
    audit.append(conn, now, "verification_expiring", data={"customer": cid, **what})
    notify.enqueue(
        conn,
        now,
        notify.Kind.VERIFICATION_EXPIRING,
        None,  # type: ignore[arg-type]  # a customer matter, not a case
        {"customer": name, **what},
        customer_id=cid,
    )
    return cid


def reverify(conn: sqlite3.Connection, now: float, policy: Verification) -> list[int]:
    """The periodic pass: remind ahead of expiry, mark expired evidence lapsed (audited) and
    settle every customer whose evidence or domain validation expired; returns the customers
    whose level changed."""
    remind(conn, now, policy)
    touched: set[int] = set()
    for eid, cid in conn.execute(
        "SELECT id, customer_id FROM evidence WHERE expires_at <= ? AND lapsed_at IS NULL"
        " AND revoked_at IS NULL",
        (now,),
    ).fetchall():
        conn.execute("UPDATE evidence SET lapsed_at = ? WHERE id = ?", (now, eid))
        audit.append(conn, now, "evidence_expired", data={"customer": cid, "evidence": eid})
        touched.add(cid)
    for vid, host, cid in conn.execute(
        "SELECT v.id, v.host, s.customer_id FROM domain_validations v JOIN sites s"
        " ON s.host = v.host WHERE v.state = 'valid' AND v.expires_at <= ?",
        (now,),
    ).fetchall():
        conn.execute(
            "UPDATE domain_validations SET state = 'expired', lapsed_at = ? WHERE id = ?",
            (now, vid),
        )
        audit.append(conn, now, "domain_validation_expired", data={"host": host, "validation": vid})
        touched.add(cid)
    changed = []
    for cid in sorted(touched):
        before = conn.execute(
            "SELECT level FROM customer_levels WHERE customer_id = ?", (cid,)
        ).fetchone()
        if settle(conn, cid, now, policy).value != (before[0] if before else None):
            changed.append(cid)
    return changed


# -- views ----------------------------------------------------------------------------------


def identity(conn: sqlite3.Connection, cid: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM identities WHERE customer_id = ?", (cid,)).fetchone()
    return None if row is None else {k: row[k] for k in row.keys() if k != "customer_id"}


def _evidence(conn: sqlite3.Connection, cid: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT id, method, document_ref, document_sha256, reviewer_id, verified_at,"
            " expires_at, revoked_at, lapsed_at FROM evidence WHERE customer_id = ? ORDER BY id",
            (cid,),
        )
    ]


def site_view(
    conn: sqlite3.Connection, host: str, now: float, policy: Verification
) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT s.*, c.name AS customer FROM sites s JOIN customers c ON c.id = s.customer_id"
        " WHERE s.host = ?",
        (host,),
    ).fetchone()
    if row is None:
        return None
    level = site_level(
        derive(conn, row["customer_id"], now, policy), domain_validated(conn, host, now)
    )
    validations = [
        dict(r)
        for r in conn.execute(
            "SELECT id, method, state, created_at, token_expires_at, checked_at, attempts,"
            " last_error, validated_at, expires_at FROM domain_validations WHERE host = ?"
            " ORDER BY id",
            (host,),
        )
    ]
    return {
        "host": host,
        "customer": row["customer"],
        "customer_id": row["customer_id"],
        "created_at": row["created_at"],
        "warned_at": row["warned_at"],
        "suspended_at": row["suspended_at"],
        "level": level.value,
        "live": goes_live(level, policy),
        "validations": validations,
    }


def customer_view(
    conn: sqlite3.Connection, cid: int, now: float, policy: Verification
) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM customers WHERE id = ?", (cid,)).fetchone()
    if row is None:
        return None
    hosts = [r[0] for r in conn.execute("SELECT host FROM sites WHERE customer_id = ?", (cid,))]
    accounts = [
        dict(r)
        for r in conn.execute(
            "SELECT id, name, role, created_at, disabled_at FROM accounts WHERE customer_id = ?",
            (cid,),
        )
    ]
    return {
        "id": cid,
        "name": row["name"],
        "created_at": row["created_at"],
        "legacy_verification": row["verification"],
        "level": derive(conn, cid, now, policy).value,
        "identity": identity(conn, cid),
        "evidence": _evidence(conn, cid),
        "sites": [site_view(conn, h, now, policy) for h in sorted(hosts)],
        "accounts": accounts,
    }


def list_customers(
    conn: sqlite3.Connection, now: float, policy: Verification
) -> list[dict[str, Any]]:
    out = []
    for cid, name in conn.execute("SELECT id, name FROM customers ORDER BY id").fetchall():
        sites = conn.execute("SELECT COUNT(*) FROM sites WHERE customer_id = ?", (cid,)).fetchone()
        out.append(
            {
                "id": cid,
                "name": name,
                "level": derive(conn, cid, now, policy).value,
                "sites": sites[0],
            }
        )
    return out


def list_sites(conn: sqlite3.Connection, now: float, policy: Verification) -> list[dict[str, Any]]:
    hosts = [r[0] for r in conn.execute("SELECT host FROM sites ORDER BY host")]
    views = [site_view(conn, h, now, policy) for h in hosts]
    return [
        {k: v[k] for k in ("host", "customer", "level", "live", "suspended_at")}
        for v in views
        if v is not None
    ]
