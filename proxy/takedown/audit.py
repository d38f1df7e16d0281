"""The append-only, hash-chained event log: the evidence of what happened and when.

Each record stores `hash = sha256(prev_hash || canonical bytes of the record)`, where the
canonical bytes are a JSON array of (seq, at, event, case, actor, data). The record's own
sequence number is inside the hash, so a record moved to another position no longer verifies;
a removed record breaks the next one's `prev_hash`; `audit_head` (updated in the same
transaction) catches a removed tail. Triggers refuse UPDATE and DELETE on the table. Case
timelines and reports are read from this same log.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_bytes(
    seq: int, at: float, event: str, case_id: int | None, actor: str, data: str
) -> bytes:
    return canonical_json([seq, at, event, case_id, actor, data]).encode()


def chain_hash(prev_hash: str, record: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + record).hexdigest()


def append(
    conn: sqlite3.Connection,
    at: float,
    event: str,
    *,
    case_id: int | None = None,
    actor: str = "system",
    data: dict[str, Any] | None = None,
) -> int:
    """Append one record; call inside the transaction that makes the change it records."""
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    seq, prev = (head["seq"] + 1, head["hash"]) if head else (1, GENESIS)
    text = canonical_json(data or {})
    digest = chain_hash(prev, record_bytes(seq, at, event, case_id, actor, text))
    conn.execute(
        "INSERT INTO audit_log (seq, at, event, case_id, actor, data, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, event, case_id, actor, text, prev, digest),
    )
    conn.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (seq, digest),
    )
    return seq


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"record {self.seq}" if self.seq is not None else "log"
        return f"{where}: {self.reason}"


def _unvouched(v: Vouched, seq: int) -> str:
    if v.after is None:
        return (
            f"differs from the hash signed for it outside the database ({v.source}): "
            "rewritten and the chain recomputed"
        )
    return (
        f"hash differs from the signed head ({v.source}): a record from {v.after + 1} to "
        f"{seq} was rewritten and the chain recomputed"
    )


@dataclass(frozen=True, slots=True)
class Vouched:
    """A record hash vouched for by a signed head kept outside the database (`anchor.py`).
    `after` is None when this very record's hash is known (a heads-file line lists each
    record); for a bare head (one kept by an edge) the records after `after` up to this one
    are its span."""

    hash: str
    source: str
    after: int | None = None


def verify(
    conn: sqlite3.Connection, vouched: Mapping[int, Vouched] | None = None
) -> tuple[int, Problem | None]:
    """Walk the chain in order; return (records checked, first problem or None).

    With `vouched`, each record's stored hash must also equal the one a signed head vouches
    for: a record edited with the whole chain recomputed after it passes the chain checks but
    not this one. Also checks each notice's stored raw body against the digest its `received`
    record holds, so a notice edited after the fact is caught as well.
    """
    vouched = vouched or {}
    prev = GENESIS
    expected_seq = 1
    checked = 0
    notice_digests: dict[int, str] = {}
    try:
        rows = conn.execute(
            "SELECT seq, at, event, case_id, actor, data, prev_hash, hash FROM audit_log"
            " ORDER BY rowid"
        )
        for row in rows:
            seq = row["seq"]
            if seq != expected_seq:
                return checked, Problem(
                    expected_seq, f"missing or out of order (found record {seq} in its place)"
                )
            if row["prev_hash"] != prev:
                return checked, Problem(seq, "previous-hash link broken (record removed or moved)")
            rec = record_bytes(
                seq, row["at"], row["event"], row["case_id"], row["actor"], row["data"]
            )
            if chain_hash(prev, rec) != row["hash"]:
                return checked, Problem(seq, "content does not match its hash (record edited)")
            if (v := vouched.get(seq)) is not None and v.hash != row["hash"]:
                return checked, Problem(seq, _unvouched(v, seq))
            if row["event"] == "notice_received":
                data = json.loads(row["data"])
                notice_digests[int(data["notice"])] = data["sha256"]
            prev = row["hash"]
            expected_seq += 1
            checked += 1
        last = expected_seq - 1
        beyond = [s for s in vouched if s > last]
        if beyond:
            far = max(beyond)
            return checked, Problem(
                last + 1,
                f"missing: the log ends at record {last} but a signed head "
                f"({vouched[far].source}) vouches for records up to {far}",
            )
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if head is None and last:
            return checked, Problem(None, "head record missing")
        if head is not None and (head["seq"] != last or head["hash"] != prev):
            return checked, Problem(
                last + 1 if head["seq"] > last else head["seq"],
                f"log ends at record {last} but its head says {head['seq']} (records removed)",
            )
        for nid, raw in conn.execute("SELECT id, raw FROM notices ORDER BY id"):
            want = notice_digests.get(nid)
            if want is None:
                return checked, Problem(None, f"notice {nid} has no notice_received record")
            if hashlib.sha256(raw).hexdigest() != want:
                return checked, Problem(None, f"notice {nid} raw body differs from its receipt")
    except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as exc:
        return checked, Problem(expected_seq, f"unreadable: {exc}")
    return checked, None
