"""The compiled blocklist file: built once per version by the supervisor, memory-mapped
read-only by every worker, never copied into Python objects.

Why a file of our own rather than LMDB: every lookup here is an exact-key probe into data that
never changes once written, and a worker's swap must be "open the new file, drop the old one".
A static hash table does that with two array reads and one compare per probe, no locks, no
reader slots, no transactions, and a checksum can vouch for the whole file before a worker
trusts it. LMDB would bring a B+tree (log n page reads per probe, ~1-2 µs from Python), a
reader table shared across processes (a worker killed mid-read leaves a stale slot) and a
writer lock we do not need, in exchange for in-place updates we do not want: a version is
immutable, and deltas live in memory (`proxy.blocklist.mapped`). The node cache
(`proxy/cache/node.py`) has the opposite needs (many small writes, eviction), which is LMDB's
strength; the two could share one engine by keeping this table as an LMDB value stream (one
named database per version, read through `mdb_get` of a bucket's fingerprint run), but nothing
here would get faster, so the blocklist stays a plain file and can move later without changing
`MappedSnapshot`.

Layout (little-endian, every section 8-byte aligned):

    header     magic, node version, build time, counts, section offsets, body checksum,
               header checksum (`_HEADER`)
    directory  2^bits + 1 u32: where each hash bucket starts in the two arrays below
    hashes     one u64 per distinct (kind, key), sorted: the bucket is the top `bits` bits
    records    one u64 per distinct key: the offset of its record
    records    kind u8, key length u32, entry count u32, key bytes, entry indices u32
    offsets    one u64 per entry (+1): where its metadata row starts
    rows       msgpack [entry, query pairs], read only when a probe hits or a delta names it
    expiring   (expires_at f64, entry index u64) sorted by time

A probe hashes (kind, key) with XXH3-64 (seeded by kind), reads the bucket's bounds and scans
its run of hashes (one on average); a matching hash is confirmed against the full key bytes in
the record, so a collision can never block the wrong URL. Lookup cost depends on the request,
not on the list's size.
"""

from __future__ import annotations

import mmap
import os
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from proxy.blocklist.keys import QueryPairs
from proxy.blocklist.model import CompiledById, Entry, EntryType, InvalidEntry, compile_entry
from proxy.blocklist.querytrie import path_keys

MAGIC = b"EPBLMAP2"  # 2: url entries with a query as a trie (URLQ_NODE), issue 19


class Kind(IntEnum):
    """What a key is, mixed into its hash (the seed) and stored in its record."""

    HOST = 0
    PREFIX = 1
    URL = 2
    URLQ = 3  # url entries that name a query, keyed by their query trie node (querytrie)
    SHA256 = 4
    ID = 5  # entry ids, for deltas that remove or replace a base entry
    URLQ_NODE = 6  # a query trie node with entries below it (one index, any of them)


KIND_OF = {
    EntryType.HOST: Kind.HOST,
    EntryType.PREFIX: Kind.PREFIX,
    EntryType.URL: Kind.URL,
    EntryType.SHA256: Kind.SHA256,
}
TYPE_ORDER = (EntryType.URL, EntryType.PREFIX, EntryType.HOST, EntryType.SHA256)

# magic, version, created_at, entries, counts x4, keys, expiring, prefix_depth, bits,
# offsets of: directory, hashes, records index, records, row offsets, rows, expiring; file size,
# body checksum
_HEADER = struct.Struct("<8sqdQ4QQQII7QQQ")
_HEADER_CHECK = struct.Struct("<Q")
HEADER_SIZE = 256
_RECORD = struct.Struct("<BxxxII")
_EXPIRING = struct.Struct("<dQ")
_ZEROS = b"\0\0\0\0\0\0\0\0"


class TableError(Exception):
    """A compiled file that must not be used (truncated, corrupt, wrong format)."""


class Row(msgspec.Struct, array_like=True, frozen=True):
    entry: Entry
    query: QueryPairs | None


_row_decoder = msgspec.msgpack.Decoder(Row)


def key_bytes(key: str | bytes) -> bytes:
    """Keys as stored: text keys in UTF-8, lone surrogates (undecodable request bytes that the
    match keys keep as `surrogateescape` characters) passed through so no two keys meet."""
    return key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")


# A key's hash: XXH3-64 seeded by its kind. One name for writer and reader (and tests).
hash_key: Callable[[bytes, int], int] = xxhash.xxh3_64_intdigest


def _align(n: int, to: int = 8) -> int:
    return (n + to - 1) // to * to


# -- building (the supervisor) -----------------------------------------------------------------


class TableInfo(msgspec.Struct, frozen=True):
    entries: int
    keys: int
    bytes: int


Progress = Callable[[int], None]


@dataclass
class _Collected:
    """What one pass over the entries gathers: their rows, one record per key and the keys'
    hashes, per-type counts, expiries, the deepest prefix."""

    rows: bytearray = field(default_factory=bytearray)
    row_offsets: array[int] = field(default_factory=lambda: array("Q"))
    records: bytearray = field(default_factory=bytearray)  # one per key, in list order
    hashes: array[int] = field(default_factory=lambda: array("Q"))
    record_at: array[int] = field(default_factory=lambda: array("Q"))
    counts: dict[EntryType, int] = field(default_factory=lambda: dict.fromkeys(TYPE_ORDER, 0))
    expiring: list[tuple[float, int]] = field(default_factory=list)
    prefix_depth: int = 0

    def note(self, kind: Kind, kb: bytes, index: int) -> None:
        self.hashes.append(hash_key(kb, kind))
        self.record_at.append(len(self.records))
        self.records.extend(_RECORD.pack(kind, len(kb), 1))
        self.records.extend(kb)
        self.records.extend(_ZEROS[: _align(len(kb), 4) - len(kb)])
        self.records.extend(_ONE.pack(index))


_ONE = struct.Struct("<I")


def write_table(
    path: Path,
    entries: Iterable[Entry],
    version: int,
    now: float,
    *,
    progress: Progress | None = None,
    compiled: CompiledById | None = None,
) -> TableInfo:
    """Compile `entries` (raises `InvalidEntry` on a bad entry or a repeated id; entries
    expired at `now` are left out) into `path`, atomically: a temporary file in the same
    directory, fsynced, then renamed. `progress(n)` is called every 65536 entries. An entry
    found (the same object) in `compiled` is not compiled again."""
    got = _collect(entries, now, progress, compiled or {})
    fps_arr, recs_arr = _sort_and_merge(got)
    return _lay_out_and_write(path, got, fps_arr, recs_arr, version, now)


def _collect(
    entries: Iterable[Entry], now: float, progress: Progress | None, compiled: CompiledById
) -> _Collected:
    got = _Collected()
    encoder = msgspec.msgpack.Encoder()
    for entry in entries:
        known = compiled.get(entry.id)
        if known is not None and known[0] is entry:
            etype, key, query = known[1]
        else:
            etype, key, query = compile_entry(entry)
        if entry.expires_at is not None and entry.expires_at <= now:
            continue
        index = len(got.row_offsets)
        got.row_offsets.append(len(got.rows))
        got.rows.extend(encoder.encode(Row(entry, query)))
        got.counts[etype] += 1
        if entry.expires_at is not None:
            got.expiring.append((entry.expires_at, index))
        if etype is EntryType.PREFIX and isinstance(key, str) and not key.endswith("/"):
            got.prefix_depth = max(got.prefix_depth, key.count("/"))
        if query is not None:
            assert isinstance(key, str)
            *above, last = path_keys(key, query)
            for node in above:
                got.note(Kind.URLQ_NODE, node, index)
            got.note(Kind.URLQ, last, index)
        else:
            got.note(KIND_OF[etype], key_bytes(key), index)
        got.note(Kind.ID, key_bytes(entry.id), index)
        if progress is not None and index % 65536 == 65535:
            progress(index + 1)
    got.row_offsets.append(len(got.rows))
    return got


def _sort_and_merge(got: _Collected) -> tuple[Any, Any]:
    """Sort the keys by hash (numpy: seconds for tens of millions). Runs of one hash are
    either one key listed by several entries (merged into one record, entries in list
    order) or, rarely, distinct keys that collide (kept apart, both under that hash)."""
    import numpy as np  # the supervisor's only: workers never import numpy

    records = got.records
    hs = np.frombuffer(got.hashes, dtype=np.uint64)
    order = np.argsort(hs, kind="stable")
    fps_arr = hs[order]
    recs_arr = np.frombuffer(got.record_at, dtype=np.uint64)[order]
    keep = np.ones(len(fps_arr), dtype=bool)
    same = np.flatnonzero(fps_arr[1:] == fps_arr[:-1])
    run_end = -1
    for k in same.tolist():
        if k < run_end:
            continue
        run_end = k + 1
        while run_end < len(fps_arr) and fps_arr[run_end] == fps_arr[k]:
            run_end += 1
        groups: dict[tuple[int, bytes], list[int]] = {}
        first: dict[tuple[int, bytes], int] = {}
        for pos in range(k, run_end):
            kind_, kb, listed = _read_record(records, int(recs_arr[pos]))
            groups.setdefault((kind_, kb), []).extend(listed)
            if (kind_, kb) in first:
                keep[pos] = False
            else:
                first[(kind_, kb)] = pos
        for (kind_, kb), owned in groups.items():
            if len(owned) == 1 or kind_ == Kind.URLQ_NODE:
                continue  # a node's record says only "entries below": its first index
            if kind_ == Kind.ID:
                raise InvalidEntry(kb.decode("utf-8", "surrogatepass"), "duplicate id")
            recs_arr[first[(kind_, kb)]] = len(records)
            records.extend(_RECORD.pack(kind_, len(kb), len(owned)))
            records.extend(kb)
            records.extend(_ZEROS[: _align(len(kb), 4) - len(kb)])
            records.extend(struct.pack(f"<{len(owned)}I", *owned))
    return fps_arr[keep], recs_arr[keep]


def _lay_out_and_write(
    path: Path, got: _Collected, fps_arr: Any, recs_arr: Any, version: int, now: float
) -> TableInfo:
    """Section offsets follow from the lengths, so every blob is built once, already final."""
    import numpy as np

    records, rows, expiring = got.records, got.rows, sorted(got.expiring)
    n_entries = len(got.row_offsets) - 1
    n_keys = len(fps_arr)
    bits = max(0, (n_keys - 1).bit_length())
    buckets = fps_arr >> np.uint64(64 - bits) if bits else np.zeros(n_keys, dtype=np.uint64)
    directory = np.searchsorted(buckets, np.arange((1 << bits) + 1, dtype=np.uint64)).astype("<u4")
    dir_bytes = directory.tobytes()
    o_dir = HEADER_SIZE
    o_fps = o_dir + _align(len(dir_bytes))
    o_recs = o_fps + 8 * n_keys
    o_records = o_recs + 8 * n_keys
    o_row_offs = o_records + _align(len(records))
    o_rows = o_row_offs + 8 * (n_entries + 1)
    o_exp = o_rows + _align(len(rows))
    size = o_exp + _EXPIRING.size * len(expiring)
    offs = [o_dir, o_fps, o_recs, o_records, o_row_offs, o_rows, o_exp]
    recs_arr = recs_arr + np.uint64(o_records)
    row_arr = np.frombuffer(got.row_offsets, dtype=np.uint64) + np.uint64(o_rows)
    sections: list[bytes | bytearray] = [
        dir_bytes,
        _pad(dir_bytes),
        fps_arr.astype("<u8").tobytes(),
        recs_arr.astype("<u8").tobytes(),
        records,
        _pad(records),
        row_arr.astype("<u8").tobytes(),
        rows,
        _pad(rows),
        b"".join(_EXPIRING.pack(t, ix) for t, ix in expiring),
    ]
    body = xxhash.xxh3_64()
    for part in sections:
        body.update(part)
    header = _HEADER.pack(
        MAGIC,
        version,
        now,
        n_entries,
        *(got.counts[t] for t in TYPE_ORDER),
        n_keys,
        len(expiring),
        got.prefix_depth,
        bits,
        *offs,
        size,
        body.intdigest(),
    )
    header += _HEADER_CHECK.pack(xxhash.xxh3_64_intdigest(header))
    header += b"\0" * (HEADER_SIZE - len(header))
    _write_atomic(path, [header, *sections])
    return TableInfo(entries=n_entries, keys=n_keys, bytes=size)


def _read_record(records: bytearray, off: int) -> tuple[int, bytes, tuple[int, ...]]:
    kind, klen, count = _RECORD.unpack_from(records, off)
    start = off + _RECORD.size
    kb = bytes(records[start : start + klen])
    return kind, kb, struct.unpack_from(f"<{count}I", records, start + _align(klen, 4))


def _pad(data: bytes | bytearray) -> bytes:
    """The zero bytes that bring `data` to the next 8-byte boundary."""
    return b"\0" * (_align(len(data)) - len(data))


def _write_atomic(path: Path, parts: list[bytes | bytearray]) -> None:
    """Write to a dot-prefixed temporary beside `path`, fsync, rename: a reader sees the old
    file or the whole new one. On any failure (a full disk) the temporary is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- reading (every worker) ---------------------------------------------------------------------


class MappedTable:
    """One compiled file, mapped read-only. Pages are shared with every other process that
    maps the same file (the page cache), so a worker's private memory does not grow with
    the list. Unmapped when the last reference drops."""

    __slots__ = (
        "path",
        "version",
        "created_at",
        "entries",
        "counts",
        "keys",
        "prefix_depth",
        "size",
        "_mm",
        "_dir",
        "_fps",
        "_recs",
        "_row_offs",
        "_shift",
        "_exp_at",
        "_n_exp",
        "_checksum",
        "_body",
    )

    def __init__(self, path: Path) -> None:
        """Open and check the header and section bounds (cheap); `verify` checks the body."""
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER_SIZE:
                    raise TableError(f"{path}: truncated ({size} bytes, no header)")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise TableError(f"{path}: {e}") from e
        head = mm[: _HEADER.size]
        (check,) = _HEADER_CHECK.unpack_from(mm, _HEADER.size)
        fields = _HEADER.unpack(head)
        if fields[0] != MAGIC:
            raise TableError(f"{path}: not a compiled blocklist (magic {fields[0]!r})")
        if xxhash.xxh3_64_intdigest(head) != check:
            raise TableError(f"{path}: header checksum mismatch (corrupt)")
        (
            _magic,
            self.version,
            self.created_at,
            self.entries,
            *counts,
        ) = fields[:8]
        self.counts = dict(zip(TYPE_ORDER, counts, strict=True))
        self.keys, self._n_exp, self.prefix_depth, bits = fields[8:12]
        o_dir, o_fps, o_recs, o_records, o_row_offs, o_rows, o_exp = fields[12:19]
        self.size, self._checksum = fields[19:21]
        if size != self.size:
            raise TableError(f"{path}: truncated or padded ({size} bytes, header says {self.size})")
        if not (
            HEADER_SIZE <= o_dir <= o_fps <= o_recs <= o_records <= o_row_offs <= o_rows <= o_exp
            and o_exp + self._n_exp * _EXPIRING.size <= size
            and o_fps - o_dir >= 4 * ((1 << bits) + 1)
            and o_recs - o_fps >= 8 * self.keys
            and o_records - o_recs >= 8 * self.keys
            and o_rows - o_row_offs >= 8 * (self.entries + 1)
        ):
            raise TableError(f"{path}: section bounds inconsistent (corrupt)")
        view = memoryview(mm)
        self._mm = mm
        self._dir = view[o_dir : o_dir + 4 * ((1 << bits) + 1)].cast("I")
        self._fps = view[o_fps : o_fps + 8 * self.keys].cast("Q")
        self._recs = view[o_recs : o_recs + 8 * self.keys].cast("Q")
        self._row_offs = view[o_row_offs : o_row_offs + 8 * (self.entries + 1)].cast("Q")
        self._exp_at = o_exp
        self._shift = 64 - bits
        self._body = (HEADER_SIZE, size)

    def verify(self) -> None:
        """Check the body checksum: reads the whole file once (and so warms the page cache).
        Releases the GIL, so a worker runs it in a thread while it keeps serving."""
        start, end = self._body
        if xxhash.xxh3_64_intdigest(memoryview(self._mm)[start:end]) != self._checksum:
            raise TableError(f"{self.path}: checksum mismatch (corrupt)")
        # Reading every page mapped all of them into this process: drop them from its page
        # tables (they stay in the page cache, shared), so its RSS counts only the pages its
        # lookups touch rather than the whole list.
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    # -- probes ---------------------------------------------------------------------------

    def find(self, kind: int, kb: bytes) -> tuple[int, ...]:
        """Entry indices listed under (kind, key), in list order; () when none."""
        h = hash_key(kb, kind)
        b = h >> self._shift
        d = self._dir
        i, end = d[b], d[b + 1]
        fps = self._fps
        while i < end:
            if fps[i] == h:
                found = self._confirm(self._recs[i], kind, kb)
                if found:
                    return found
            i += 1
        return ()

    def _confirm(self, off: int, kind: int, kb: bytes) -> tuple[int, ...]:
        mm = self._mm
        rkind, klen, count = _RECORD.unpack_from(mm, off)
        start = off + _RECORD.size
        if rkind != kind or klen != len(kb) or mm[start : start + klen] != kb:
            return ()
        return struct.unpack_from(f"<{count}I", mm, start + _align(klen, 4))

    def row(self, index: int) -> Row:
        offs = self._row_offs
        return _row_decoder.decode(self._mm[offs[index] : offs[index + 1]])

    def entry(self, index: int) -> Entry:
        return self.row(index).entry

    def index_of(self, entry_id: str) -> int:
        """The index of the entry with this id, or -1."""
        found = self.find(Kind.ID, key_bytes(entry_id))
        return int(found[0]) if found else -1

    def expiring(self, start: int = 0) -> Iterator[tuple[float, int]]:
        """(expires_at, entry index) from position `start`, earliest first."""
        for i in range(start, self._n_exp):
            yield _EXPIRING.unpack_from(self._mm, self._exp_at + i * _EXPIRING.size)

    def expiring_at(self, i: int) -> tuple[float, int]:
        """The `i`th (expires_at, entry index), earliest first."""
        when, index = _EXPIRING.unpack_from(self._mm, self._exp_at + i * _EXPIRING.size)
        return when, index

    @property
    def expiring_count(self) -> int:
        return int(self._n_exp)

    def __iter__(self) -> Iterator[Entry]:
        for i in range(self.entries):
            yield self.entry(i)
