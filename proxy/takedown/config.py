"""Takedown service settings: deadlines, publishing retries, restore calendar, strike policy.

Every duration carries its unit in its name. The file is TOML; unknown keys are refused so a
typo cannot silently leave a legal deadline at its default.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Literal

import msgspec


class Deadlines(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    receipt_s: float = 300.0  # DSA 16(4): confirmation "without undue delay"
    fix_request_s: float = 48 * 3600.0  # 512(c)(3)(B)(ii): how long a fix is awaited
    decision_s: float = 24 * 3600.0  # receipt -> decision
    enforcement_s: float = 60.0  # decision -> every edge acknowledged
    # Reversal, withdrawal or unsuspension -> every edge acknowledged the removal.
    lift_s: float = 60.0
    complaint_s: float = 7 * 86400.0  # DSA 20(4): an internal complaint is decided "timely"
    complaint_window_s: float = 183 * 86400.0  # DSA 20(1): open at least 6 months after it


class Publish(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    retry_factor: float = 2.0
    request_timeout_s: float = 10.0
    # File drop: versions are deltas on the directory's newest one; once that rests on this
    # many versions (itself included) the next is a full one (the loader follows at most
    # `MAX_DELTA_CHAIN`, 1000, and each reload re-reads the whole chain).
    file_drop_max_delta_chain: int = 64
    file_drop_max_bytes: int = 1 << 30  # a version file larger than this is not read
    # Publications waiting together (a burst of decisions) go out in one version, this many at
    # most: one signed file, fsync and feed entry instead of one each.
    file_drop_max_publications_per_version: int = 256


class Restore(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    not_before_business_days: int = 10  # 17 U.S.C. 512(g)(2)(C)
    not_after_business_days: int = 14
    timezone: str = "UTC"
    weekend_days: list[int] = msgspec.field(default_factory=lambda: [5, 6])  # Mon=0
    # Public holidays from the `holidays` package: ISO codes ("US", "JP", "DE", "US-NY"), all
    # of whose holidays are non-business days. The list and file below override them.
    holiday_countries: list[str] = msgspec.field(default_factory=list)
    holidays: list[dt.date] = msgspec.field(default_factory=list)
    business_days: list[dt.date] = msgspec.field(default_factory=list)  # worked regardless
    # TOML with `holidays = [dates]` and `business_days = [dates]`, merged with the lists above
    holidays_file: str = ""


class Strikes(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Repeat-infringer policy (17 U.S.C. 512(i)(1)(A)), counted per site within a window."""

    window_days: float = 180.0
    warn_at: int = 2
    suspend_at: int = 3
    unverified_warn_at: int = 1  # customers whose status is not in `verified_statuses`
    unverified_suspend_at: int = 2
    verified_statuses: list[str] = msgspec.field(
        default_factory=lambda: [
            "payment",
            "verified_entity",
            "documents-checked",  # derived levels (customers.py)
            "domain-validated",
        ]
    )


class Anchor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Signed heads of the audit chain, kept outside the database (`anchor.py`)."""

    interval_s: float = 300.0  # also signed at every publication and at shutdown
    # Ed25519 private key (PEM). "": the file drop's --signing-key, else `<db>.anchor.key`,
    # created on first start (keep a copy of its .pub away from the database's host).
    signing_key: str = ""
    heads_file: str = ""  # "": `<db>.heads.jsonl`, next to the database


class Notify(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Sending the outbox (`notify.py`, `sender.py`): SMTP and signed webhooks."""

    smtp_host: str = ""  # "": email is not sent (each message fails, visibly, on its case)
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password_file: str = ""
    from_address: str = "takedown@localhost"
    retry_initial_s: float = 5.0
    retry_max_s: float = 900.0
    retry_factor: float = 2.0
    max_attempts: int = 12  # then the message is abandoned (recorded on the case)
    request_timeout_s: float = 15.0
    max_in_flight: int = 8


Level = Literal["none", "self-declared", "documents-checked", "domain-validated"]


class Verification(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Customer verification and the go-live gate (`customers.py`, `dcv.py`, `roster.py`)."""

    # A site goes live on the edges once its level reaches this (levels in order: none,
    # self-declared, documents-checked, domain-validated = documents plus the site's DCV).
    go_live_level: Level = "domain-validated"
    # Evidence methods that count as documents checked by a reviewer.
    document_methods: list[str] = msgspec.field(
        default_factory=lambda: ["passport", "national-id", "company-register", "video-call"]
    )
    evidence_valid_s: float = 365 * 86400.0  # evidence recorded without an expiry lasts this
    check_interval_s: float = 60.0  # how often expired evidence and validations are looked for
    remind_before_s: float = 14 * 86400.0  # tell the customer this long before its level drops
    dcv_token_ttl_s: float = 7 * 86400.0  # a challenge token must be checked within this
    dcv_valid_s: float = 90 * 86400.0  # a passed validation lasts this, then is redone
    dcv_timeout_s: float = 10.0  # one HTTP fetch or DNS query of a challenge
    dcv_max_body_bytes: int = 4096  # a longer challenge answer fails
    # HOST:PORT every HTTP challenge connects to (an edge), with Host: the site; "": DNS.
    dcv_http_via: str = ""
    dcv_dns_nameservers: list[str] = msgspec.field(default_factory=list)  # []: the system's
    # The site roster (edges' [gate]): signed with this Ed25519 key (PEM); "": the file
    # drop's --signing-key. Without a key no roster is published (and gated edges hold all).
    roster_signing_key: str = ""
    roster_dir: str = ""  # also write each roster here (an edge's gate.roster_dir); "": no
    roster_retry_max_s: float = 30.0  # backoff cap when an edge does not take a roster


class Service(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scheduler_interval_s: float = 0.5
    max_notice_bytes: int = 1 << 20
    operator_name: str = "edgeproxy operator"
    redress: str = (
        "Reply with a counter-notice (17 U.S.C. 512(g)(3)) at POST /cases/{case}/counter-notice, "
        "use the internal complaint procedure, an out-of-court dispute settlement body "
        "(DSA Art. 21) or the courts."
    )


class Desk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The desk console and the public notice form (`proxy/takedown/desk/`), on their own
    listener: cookies, CSRF and HTML apart from the bearer-key JSON API."""

    listen: str = ""  # HOST:PORT; "": not served (`serve --desk-listen` overrides)
    tls_cert_file: str = ""  # with tls_key_file: the listener speaks TLS (cookies get Secure)
    tls_key_file: str = ""
    behind_tls_proxy: bool = False  # a TLS-terminating proxy in front: cookies get Secure too
    session_idle_s: float = 1800.0  # a signed-in session unused this long ends
    session_max_s: float = 12 * 3600.0  # and every session ends this long after sign-in
    signin_max_failures: int = 10  # failed sign-ins per client address per window, then 429
    signin_window_s: float = 900.0
    form_max_posts: int = 5  # public notice form posts per client address per window, then 429
    form_window_s: float = 600.0
    rate_limit_max_addresses: int = 100_000  # addresses tracked at once (oldest forgotten)


class TakedownConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    deadlines: Deadlines = msgspec.field(default_factory=Deadlines)
    publish: Publish = msgspec.field(default_factory=Publish)
    restore: Restore = msgspec.field(default_factory=Restore)
    strikes: Strikes = msgspec.field(default_factory=Strikes)
    service: Service = msgspec.field(default_factory=Service)
    anchor: Anchor = msgspec.field(default_factory=Anchor)
    notify: Notify = msgspec.field(default_factory=Notify)
    verification: Verification = msgspec.field(default_factory=Verification)
    desk: Desk = msgspec.field(default_factory=Desk)


class HolidayFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    holidays: list[dt.date] = msgspec.field(default_factory=list)
    business_days: list[dt.date] = msgspec.field(default_factory=list)


def load(path: str | Path | None) -> TakedownConfig:
    """Read a TOML config (None: all defaults); a `holidays_file` is resolved next to it."""
    if path is None:
        return TakedownConfig()
    p = Path(path)
    raw = tomllib.loads(p.read_text(encoding="utf-8"))
    cfg = msgspec.convert(raw, TakedownConfig)
    if cfg.restore.holidays_file:
        hp = Path(cfg.restore.holidays_file)
        if not hp.is_absolute():
            hp = p.parent / hp
        extra = msgspec.convert(tomllib.loads(hp.read_text(encoding="utf-8")), HolidayFile)
        merged = sorted(set(cfg.restore.holidays) | set(extra.holidays))
        worked = sorted(set(cfg.restore.business_days) | set(extra.business_days))
        cfg = msgspec.structs.replace(
            cfg,
            restore=msgspec.structs.replace(cfg.restore, holidays=merged, business_days=worked),
        )
    _check_countries(cfg.restore)
    return cfg


def _check_countries(restore: Restore) -> None:
    """An unknown country code fails the load, naming it (not the first restore it skews)."""
    from proxy.takedown.calendar import UnknownCountry, check_country

    for code in restore.holiday_countries:
        try:
            check_country(code)
        except UnknownCountry as e:
            raise msgspec.ValidationError(f"{e} - at `$.restore.holiday_countries`") from None
