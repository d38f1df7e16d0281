"""The audit chain's anchor: signed heads of the hash chain, kept outside the database.

The chain in `audit.py` proves a record was not changed only to someone who trusts the
stored hashes. Whoever holds the database can drop the triggers, edit a record and recompute
every hash after it; the chain is then intact again. So the head of the chain is signed
(Ed25519) at every publication and every `anchor.interval_s`, and each signed head leaves the
database three ways: appended to a heads file next to it, shipped with the blocklist version
(or push) the edges keep, and printed in reports. A rewrite must then match heads the insider
can no longer reach.

A line of the heads file is one signed head plus the hashes of the records it newly covers
(`records`, from `since` + 1 to `seq`), so `verify-log` can name the exact record that differs,
not only the span. The signature covers the digest of that list as well as the head, so the
list cannot be edited to point elsewhere. Signing reads the last *committed* head
(`Store.committed_head`), so a signed head never vouches for a record that was rolled back.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proxy.takedown.audit import Vouched, canonical_json
from proxy.takedown.config import Anchor as AnchorConfig

log = logging.getLogger("edgeproxy.takedown.anchor")

HEAD_FORMAT = "edgeproxy-audit-head/1"


class SignedHead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What edges keep and reports print: flat scalars only (a blocklist header field)."""

    format: str
    seq: int  # the last record covered
    hash: str  # that record's chain hash
    at: float  # when it was signed
    since: int  # the previously signed seq (0: the first head); records since+1..seq are new
    records_sha256: str  # sha256 over the new records' hashes, one per line
    key_id: str
    signature: str  # base64 Ed25519 over `message()`

    def message(self) -> bytes:
        return canonical_json(
            [self.format, self.seq, self.hash, self.at, self.since, self.records_sha256]
        ).encode()

    def public(self) -> dict[str, str | int | float]:
        out: dict[str, str | int | float] = msgspec.to_builtins(self)
        return out


class HeadLine(SignedHead, frozen=True, forbid_unknown_fields=True):
    """One line of the heads file: the signed head and the hashes it newly covers."""

    records: list[str] = msgspec.field(default_factory=list)

    def head(self) -> SignedHead:
        d = msgspec.structs.asdict(self)
        del d["records"]
        return SignedHead(**d)


def records_digest(hashes: list[str]) -> str:
    return hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_of(pem: bytes) -> Ed25519PublicKey:
    """The public key from a PEM holding either half of an Ed25519 pair."""
    if b"PRIVATE KEY" in pem:
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return private.public_key()
    public = serialization.load_pem_public_key(pem)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public


def load_or_create_key(path: Path) -> bytes:
    """The PEM at `path`; created (0600, with a `.pub` beside it) when absent."""
    if path.exists():
        return path.read_bytes()
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    path.with_name(path.name + ".pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    log.warning("created the audit anchor key %s; keep a copy of %s.pub elsewhere", path, path)
    return pem


def verify_head(head: SignedHead, public: Ed25519PublicKey) -> str | None:
    """Why `head` is not a valid head under `public`, or None."""
    if head.format != HEAD_FORMAT:
        return f"unknown format {head.format!r}"
    if head.key_id != key_id(public):
        return f"signed by key {head.key_id}, expected {key_id(public)}"
    try:
        public.verify(base64.b64decode(head.signature, validate=True), head.message())
    except (InvalidSignature, ValueError):
        return "bad signature"
    return None


def heads_path_for(db: str | Path) -> Path:
    return Path(f"{db}.heads.jsonl")


def append_line(path: Path, data: bytes) -> None:
    """Append one line and fsync: the file only ever grows (`chattr +a` it to make that so)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class HeadsFile:
    """The heads file as read back: valid lines in order, and what is wrong with the rest."""

    lines: list[HeadLine] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def latest(self) -> HeadLine | None:
        return self.lines[-1] if self.lines else None


def read_heads(path: Path, public: Ed25519PublicKey | None) -> HeadsFile:
    """Every line checked: format, signature (when the key is known), the records list against
    its signed digest, and continuity (`since` is the previous line's `seq`: a line removed
    from the middle shows)."""
    out = HeadsFile()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return out
    decoder = msgspec.json.Decoder(HeadLine)
    prev_seq = 0
    for n, text in enumerate(raw.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = decoder.decode(text)
        except msgspec.DecodeError as exc:
            out.problems.append(f"{path}:{n}: unreadable: {exc}")
            continue
        why = verify_head(line.head(), public) if public is not None else None
        if why is None and line.records_sha256 != records_digest(line.records):
            why = "records do not match their signed digest"
        if why is None and (
            len(line.records) != line.seq - line.since or line.records[-1:] != [line.hash]
        ):
            why = "records do not end at the signed head"
        if why is None and line.since != prev_seq:
            why = f"follows the head at record {line.since}, but the previous line is {prev_seq}"
        if why is not None:
            out.problems.append(f"{path}:{n}: {why}")
            continue
        out.lines.append(line)
        prev_seq = line.seq
    return out


class Anchor:
    """Signs the committed chain head and appends it to the heads file (on the db thread)."""

    def __init__(
        self, private_key_pem: bytes, heads_file: Path, clock: Callable[[], float]
    ) -> None:
        private = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError("the audit anchor key is not an Ed25519 private key")
        self._private = private
        self.key_id = key_id(private.public_key())
        self.heads_file = heads_file
        self.clock = clock
        found = read_heads(heads_file, private.public_key())
        for p in found.problems:
            log.error("audit heads file: %s", p)
        self.last: SignedHead | None = found.latest.head() if found.latest else None
        self._warned: tuple[int, str] | None = None

    def sign(
        self, conn: sqlite3.Connection, committed: tuple[int, str] | None
    ) -> SignedHead | None:
        """Sign `committed` (the last committed seq and hash) unless already signed; returns the
        latest signed head. Runs inside a store job: it only reads committed records."""
        if committed is None:
            return self.last
        seq, digest = committed
        since = self.last.seq if self.last else 0
        if seq <= since:
            if self.last is not None and seq == since and digest != self.last.hash:
                self._warn(committed, "differs from its signed head")
            elif seq < since:
                self._warn(committed, f"is behind the last signed head (record {since})")
            return self.last
        hashes = [
            r[0]
            for r in conn.execute(
                "SELECT hash FROM audit_log WHERE seq > ? AND seq <= ? ORDER BY seq", (since, seq)
            )
        ]
        if len(hashes) != seq - since or hashes[-1] != digest:
            self._warn(committed, "does not match the records below it")
            return self.last
        unsigned: dict[str, Any] = {
            "format": HEAD_FORMAT,
            "seq": seq,
            "hash": digest,
            "at": self.clock(),
            "since": since,
            "records_sha256": records_digest(hashes),
            "key_id": self.key_id,
            "signature": "",
        }
        draft = SignedHead(**unsigned)
        signature = base64.b64encode(self._private.sign(draft.message())).decode("ascii")
        head = msgspec.structs.replace(draft, signature=signature)
        line = HeadLine(**msgspec.structs.asdict(head), records=hashes)
        append_line(self.heads_file, msgspec.json.encode(line) + b"\n")
        self.last = head
        return head

    def _warn(self, committed: tuple[int, str], what: str) -> None:
        if self._warned != committed:
            self._warned = committed
            log.error(
                "audit log head (record %d) %s: not signing; run verify-log", committed[0], what
            )


def anchor_key_path(db: str | Path, configured: str) -> Path:
    return Path(configured) if configured else Path(f"{db}.anchor.key")


def for_db(
    db: str | Path,
    cfg: AnchorConfig,
    clock: Callable[[], float],
    *,
    fallback_key_pem: bytes | None = None,
) -> Anchor:
    """The service's anchor: the configured key, else the file drop's, else its own."""
    if cfg.signing_key:
        pem = Path(cfg.signing_key).read_bytes()
    elif fallback_key_pem is not None:
        pem = fallback_key_pem
    else:
        pem = load_or_create_key(anchor_key_path(db, ""))
    heads = Path(cfg.heads_file) if cfg.heads_file else heads_path_for(db)
    return Anchor(pem, heads, clock)


def vouched(
    found: HeadsFile, extra: list[SignedHead], source: str
) -> tuple[dict[int, Vouched], list[str]]:
    """Every record hash the signed heads vouch for, and any two heads that disagree (the key
    signed two different histories: a rewrite re-signed with the stolen key)."""
    out: dict[int, Vouched] = {}
    for n, line in enumerate(found.lines, start=1):
        for i, digest in enumerate(line.records):
            out[line.since + 1 + i] = Vouched(digest, f"{source}, head {n}")
    conflicts = []
    for head in sorted(extra, key=lambda h: h.seq):
        have = out.get(head.seq)
        if have is not None:
            if have.hash != head.hash:
                conflicts.append(
                    f"a head signed at {head.at} vouches for record {head.seq} with hash "
                    f"{head.hash}, {have.source} with {have.hash}"
                )
            continue
        after = max((s for s in out if s < head.seq), default=0)
        out[head.seq] = Vouched(head.hash, f"head signed at {head.at}", after=after)
    return out, conflicts
