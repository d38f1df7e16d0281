"""A version compiled once, loaded many times.

The supervisor verifies a version and computes every entry's match key (`compile_entry`: the
expensive part, several µs an entry); workers then only insert the precomputed keys into a
`SnapshotBuilder`, a chunk at a time, yielding to their event loop between chunks. A
million-entry version so loads without a stall longer than one chunk on the serving path.
"""

from __future__ import annotations

import asyncio
import gc
import struct
from collections.abc import Iterable
from pathlib import Path

import msgspec

from proxy.blocklist.format import write_atomic
from proxy.blocklist.keys import QueryPairs
from proxy.blocklist.model import Entry, EntryType, compile_entry
from proxy.blocklist.snapshot import Snapshot, SnapshotBuilder

CHUNK_ENTRIES = 250  # ~1.5 ms of work per step on this machine


class CompiledEntry(msgspec.Struct, array_like=True, frozen=True):
    entry: Entry
    type: EntryType
    key: str  # empty for digests
    digest: bytes | None  # the key of a sha256 entry
    query: QueryPairs | None


_decoder = msgspec.msgpack.Decoder(list[CompiledEntry])


def compile_chunks(entries: Iterable[Entry], chunk_entries: int = CHUNK_ENTRIES) -> list[bytes]:
    """Compile every entry (raises `InvalidEntry` on a bad one) into msgpack chunks."""
    encoder = msgspec.msgpack.Encoder()
    chunks: list[bytes] = []
    rows: list[CompiledEntry] = []
    for entry in entries:
        etype, key, query = compile_entry(entry)
        if isinstance(key, bytes):
            rows.append(CompiledEntry(entry, etype, "", key, query))
        else:
            rows.append(CompiledEntry(entry, etype, key, None, query))
        if len(rows) >= chunk_entries:
            chunks.append(encoder.encode(rows))
            rows = []
    if rows:
        chunks.append(encoder.encode(rows))
    return chunks


_LEN = struct.Struct("!I")


def write_compiled(path: Path, entries: Iterable[Entry]) -> None:
    """Length-prefixed chunks, so a reader decodes one chunk at a time from a memoryview
    (one msgpack list of them would be decoded, and copied, all at once)."""
    parts: list[bytes] = []
    for chunk in compile_chunks(entries):
        parts.append(_LEN.pack(len(chunk)))
        parts.append(chunk)
    write_atomic(path, b"".join(parts))


async def load_compiled(path: Path, version: int, now: float, *, pause_s: float = 0.0) -> Snapshot:
    """Build a snapshot from `write_compiled`'s file, yielding between chunks (and sleeping
    `pause_s` after each, to leave most of the CPU to serving while a big list loads)."""
    data = memoryview(await asyncio.to_thread(path.read_bytes))
    builder = SnapshotBuilder()
    # A million entries are millions of new objects: an automatic full collection over them
    # would stall serving for a long moment, so collection waits until the snapshot is built
    # and frozen out of the collector's reach (nothing here makes reference cycles).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        offset = 0
        while offset < len(data):
            (size,) = _LEN.unpack_from(data, offset)
            offset += _LEN.size
            for row in _decoder.decode(data[offset : offset + size]):
                key = row.digest if row.digest is not None else row.key
                builder.add_compiled(row.entry, row.type, key, row.query, now)
            offset += size
            await asyncio.sleep(pause_s)
        snapshot = builder.freeze(version)
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
    return snapshot
