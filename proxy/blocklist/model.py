"""Blocklist entries: the four kinds of thing an edge can be told to refuse.

An entry is data that arrives from outside (a signed file, the admin API, the takedown service),
so it is validated in one place, `validate_entry`, before anything compiles it. Validation runs
the entry's value through the same canonicalisation requests go through (`proxy.blocklist.keys`),
so an entry that could never match anything is refused when it is loaded, not silently ignored.
"""

from __future__ import annotations

import math
from enum import StrEnum

import msgspec

from proxy.blocklist import keys
from proxy.rfc.target import MAX_TARGET_BYTES

MAX_ID_CHARS = 200
# Room for any URL an edge may serve: the longest target it admits (`limits.
# max_request_line_bytes` is at most MAX_TARGET_BYTES) after a scheme, a host name of up to 253
# characters and a port. It was 8192, so a notice naming a longer URL (one of 8,100 bytes on a
# long host name, under the default limit) could not be listed by its exact URL.
MAX_VALUE_CHARS = MAX_TARGET_BYTES + 512
MAX_TEXT_CHARS = 2000


class EntryType(StrEnum):
    URL = "url"  # one resource: host + path (+ the query pairs it names)
    PREFIX = "prefix"  # a path subtree on one host, on segment boundaries
    HOST = "host"  # a host and all its subdomains
    SHA256 = "sha256"  # a body (content coding removed), by digest


class Entry(msgspec.Struct, frozen=True):
    id: str
    type: EntryType
    value: str
    notice: str = ""  # the notice or case the entry came from (shown in the 451 body)
    reason: str = ""
    expires_at: float | None = None  # epoch seconds; None = until removed


_TYPES: dict[object, EntryType] = {t.value: t for t in EntryType}


class InvalidEntry(ValueError):
    """An entry that must not be compiled; the message says which entry and why."""

    def __init__(self, entry_id: str, reason: str) -> None:
        super().__init__(f"entry {entry_id!r}: {reason}")
        self.entry_id = entry_id
        self.reason = reason


def validate_entry(entry: Entry) -> Entry:
    """Return `entry` unchanged if it is usable, else raise `InvalidEntry` naming the problem."""
    compile_entry(entry)
    return entry


Compiled = tuple[EntryType, str | bytes, keys.QueryPairs | None]
# Entries already compiled while they were read (id -> the entry, its compiled form): a writer
# that meets the very same entry object again takes the form instead of compiling it twice.
CompiledById = dict[str, tuple["Entry", Compiled]]


def compile_entry(entry: Entry) -> Compiled:
    """Validate `entry` and return (type, lookup key, query pairs) in one pass.

    The key is the canonical host (host entries), `keys.url_key(host, path)` (url and prefix
    entries) or 32 digest bytes (sha256). The query pairs are set for url entries that name a
    query. Structs built in Python (not decoded by msgspec) skip msgspec's type checks, so the
    field types are checked here too.
    """
    eid = entry.id
    if type(eid) is not str or not eid.strip():
        raise InvalidEntry(str(eid), "empty id")
    if len(eid) > MAX_ID_CHARS:
        raise InvalidEntry(eid[:40], f"id longer than {MAX_ID_CHARS} characters")
    if not eid.isprintable():
        raise InvalidEntry(eid, "id contains control characters")
    etype: EntryType | None = entry.type
    if type(etype) is not EntryType:  # a decoded entry's is; one built in Python may hold text
        etype = _TYPES.get(etype) if isinstance(etype, str) else None
    if etype is None:
        raise InvalidEntry(
            eid, f"unknown type {entry.type!r} (expected one of url, prefix, host, sha256)"
        )
    notice, reason = entry.notice, entry.reason
    if (
        type(notice) is not str
        or type(reason) is not str
        or len(notice) > MAX_TEXT_CHARS
        or len(reason) > MAX_TEXT_CHARS
    ):
        _check_texts(eid, notice, reason)
    exp = entry.expires_at
    if exp is not None and (
        isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp)
    ):
        raise InvalidEntry(eid, f"expires_at must be a finite number of epoch seconds, not {exp!r}")
    value = entry.value
    if not isinstance(value, str) or not value.strip():
        raise InvalidEntry(eid, "empty value")
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidEntry(eid, f"value longer than {MAX_VALUE_CHARS} characters")
    try:
        key, query = _value_key(etype, value)
    except ValueError as exc:
        raise InvalidEntry(eid, f"{etype.value} value {value[:200]!r}: {exc}") from None
    return etype, key, query


def _check_texts(eid: str, notice: object, reason: object) -> None:
    for name, text in (("notice", notice), ("reason", reason)):
        if type(text) is not str:
            raise InvalidEntry(eid, f"{name} must be a string")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidEntry(eid, f"{name} longer than {MAX_TEXT_CHARS} characters")


def _value_key(etype: EntryType, value: str) -> tuple[str | bytes, keys.QueryPairs | None]:
    if etype is EntryType.SHA256:
        return keys.parse_sha256(value), None
    if etype is EntryType.HOST:
        return keys.parse_host_value(value), None
    host, path, query = keys.parse_url_value(value, prefix=etype is EntryType.PREFIX)
    if etype is EntryType.PREFIX:
        if query is not None:
            raise ValueError("a prefix cannot carry a query; use a url entry")
        return keys.url_key(host, path), None
    return keys.url_key(host, path), query
