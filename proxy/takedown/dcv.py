"""Domain-control validation of a customer's site, as ACME does it (RFC 8555 §8.3, §8.4).

Starting a validation issues a random token and its key authorization
`<token>.<thumbprint>`, where the thumbprint binds the token to the customer and the host (ACME
binds it to the account key; here the desk issues the token to the customer). The customer
proves control of the host by either

    http-01  serving the key authorization at http://HOST/.well-known/edgeproxy-challenge/TOKEN
             (the service fetches it through the edge: `dcv_http_via`; a held site's challenge
             path still reaches its origin, see proxy/gate.py), no redirects followed
    dns-01   publishing TXT `_edgeproxy-challenge.HOST` = base64url(sha256(key authorization))

A token must be checked before `dcv_token_ttl_s`; a passed validation lasts `dcv_valid_s`, after
which `customers.reverify` marks it expired and the site's level drops. Every start, failed and
passed check is an audit record. The network part (`check_http`, `check_dns`) runs outside the
database transaction; `record_result` writes what it found.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import aiohttp

from proxy.takedown import audit, customers
from proxy.takedown.config import Verification
from proxy.takedown.elements import bare_host

WELL_KNOWN = "/.well-known/edgeproxy-challenge/"
DNS_LABEL = "_edgeproxy-challenge"

TxtResolver = Callable[[str, float], Awaitable[list[str]]]


class Method(StrEnum):
    HTTP = "http-01"
    DNS = "dns-01"


class ChallengeFailed(Exception):
    """What the check found instead of the key authorization (recorded on the validation)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_authorization(token: str, customer_id: int, host: str) -> str:
    thumb = _b64(hashlib.sha256(f"edgeproxy:{customer_id}:{host}".encode()).digest())
    return f"{token}.{thumb}"


def txt_value(key_auth: str) -> str:
    """RFC 8555 §8.4: base64url(SHA-256(key authorization)), unpadded."""
    return _b64(hashlib.sha256(key_auth.encode()).digest())


def instructions(host: str, method: str, token: str, key_auth: str) -> dict[str, Any]:
    if method == Method.HTTP:
        return {
            "url": f"http://{host}{WELL_KNOWN}{token}",
            "body": key_auth,
            "content_type": "text/plain",
        }
    return {"name": f"{DNS_LABEL}.{bare_host(host)}", "type": "TXT", "value": txt_value(key_auth)}


def start(
    conn: sqlite3.Connection, host: str, method: str, now: float, actor: str, policy: Verification
) -> dict[str, Any]:
    """Issue a new challenge for `host` (earlier pending ones are superseded)."""
    if method not in tuple(Method):
        raise customers.Invalid(f"method must be one of {', '.join(Method)}")
    row = conn.execute("SELECT customer_id FROM sites WHERE host = ?", (host,)).fetchone()
    if row is None:
        raise LookupError(f"no site {host}")
    conn.execute(
        "UPDATE domain_validations SET state = 'superseded' WHERE host = ? AND state = 'pending'",
        (host,),
    )
    token = secrets.token_urlsafe(32)
    key_auth = key_authorization(token, int(row[0]), host)
    vid = conn.execute(
        "INSERT INTO domain_validations (host, method, token, key_authorization, created_at,"
        " token_expires_at, state, requested_by) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
        (host, method, token, key_auth, now, now + policy.dcv_token_ttl_s, actor),
    ).lastrowid
    audit.append(
        conn,
        now,
        "domain_validation_started",
        actor=actor,
        data={"host": host, "validation": vid, "method": method},
    )
    return {
        "id": vid,
        "host": host,
        "method": method,
        "token": token,
        "token_expires_at": now + policy.dcv_token_ttl_s,
        "challenge": instructions(host, method, token, key_auth),
    }


def pending(conn: sqlite3.Connection, host: str, vid: int, now: float) -> sqlite3.Row:
    row = conn.execute(
        "SELECT * FROM domain_validations WHERE id = ? AND host = ?", (vid, host)
    ).fetchone()
    if row is None:
        raise LookupError(f"no validation {vid} for {host}")
    found: sqlite3.Row = row
    return found


def record_result(
    conn: sqlite3.Connection,
    vid: int,
    error: str | None,
    now: float,
    actor: str,
    policy: Verification,
) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM domain_validations WHERE id = ?", (vid,)).fetchone()
    host = row["host"]
    data: dict[str, Any] = {"host": host, "validation": vid, "method": row["method"]}
    if error is None:
        conn.execute(
            "UPDATE domain_validations SET state = 'valid', checked_at = ?, attempts = attempts"
            " + 1, last_error = NULL, validated_at = ?, expires_at = ? WHERE id = ?",
            (now, now, now + policy.dcv_valid_s, vid),
        )
        audit.append(conn, now, "domain_validated", actor=actor, data=data)
    else:
        expired = now >= row["token_expires_at"]
        conn.execute(
            "UPDATE domain_validations SET state = ?, checked_at = ?, attempts = attempts + 1,"
            " last_error = ? WHERE id = ?",
            ("invalid" if expired else "pending", now, error[:500], vid),
        )
        audit.append(
            conn, now, "domain_validation_failed", actor=actor, data={**data, "error": error[:500]}
        )
    cid = conn.execute("SELECT customer_id FROM sites WHERE host = ?", (host,)).fetchone()[0]
    customers.settle(conn, cid, now, policy, actor)
    out = dict(conn.execute("SELECT * FROM domain_validations WHERE id = ?", (vid,)).fetchone())
    out.pop("key_authorization", None)
    return out


def checkable(row: sqlite3.Row, now: float) -> str | None:
    """Why this validation cannot be checked now (None: it can)."""
    if row["state"] != "pending":
        return f"validation {row['id']} is {row['state']}; start a new one"
    if now >= row["token_expires_at"]:
        return f"the token of validation {row['id']} expired; start a new one"
    return None


async def check_http(
    session: aiohttp.ClientSession, host: str, token: str, key_auth: str, policy: Verification
) -> None:
    """Fetch the challenge (through `dcv_http_via` when set); raise ChallengeFailed."""
    path = f"{WELL_KNOWN}{token}"
    url = f"http://{policy.dcv_http_via or host}{path}"
    try:
        async with session.get(
            url,
            headers={"Host": host},
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=policy.dcv_timeout_s),
        ) as resp:
            body = await resp.content.read(policy.dcv_max_body_bytes + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise ChallengeFailed(f"fetching {path} from {host}: {type(exc).__name__}: {exc}") from None
    if status != 200:
        raise ChallengeFailed(f"GET http://{host}{path} answered {status}")
    if len(body) > policy.dcv_max_body_bytes:
        raise ChallengeFailed(f"answer longer than {policy.dcv_max_body_bytes} bytes")
    if body.strip() != key_auth.encode():
        raise ChallengeFailed(f"GET http://{host}{path} did not return the key authorization")


async def system_txt(
    name: str, timeout_s: float, nameservers: list[str] | None = None
) -> list[str]:
    """TXT strings of `name` via dnspython (its async resolver)."""
    import dns.asyncresolver
    import dns.exception

    resolver = dns.asyncresolver.Resolver()
    if nameservers:
        resolver.nameservers = list(nameservers)
    try:
        answer = await resolver.resolve(name, "TXT", lifetime=timeout_s)
    except dns.exception.DNSException as exc:
        raise ChallengeFailed(f"TXT {name}: {type(exc).__name__}: {exc}") from None
    return [b"".join(r.strings).decode("ascii", "replace") for r in answer]


async def check_dns(resolve: TxtResolver, host: str, key_auth: str, policy: Verification) -> None:
    name = f"{DNS_LABEL}.{bare_host(host)}"
    found = await resolve(name, policy.dcv_timeout_s)
    if txt_value(key_auth) not in found:
        raise ChallengeFailed(f"TXT {name} does not hold the expected value ({len(found)} found)")
