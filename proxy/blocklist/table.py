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

Since format 3 (`EPBLMAP3`, issue 12) a SUMMARY record per host group (`host_group`: the last
two labels) says what the group lists: prefix depths, url and query entries, the label counts
of its host entries. A request probes its group's summary first and then only what it names,
so a host without entries costs one probe (format 2 files map still; every probe runs).

The writer (`TableWriter`) takes entries one at a time and spills rows and records to files
beside the output as they come: what it holds is ~16 bytes a key (hash, record offset) plus 8
an entry, so the compile child streams a version of any size through it.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from proxy.blocklist.keys import QueryPairs
from proxy.blocklist.model import (
    Compiled,
    CompiledById,
    Entry,
    EntryType,
    InvalidEntry,
    compile_entry,
)
from proxy.blocklist.querytrie import path_keys

MAGIC = b"EPBLMAP3"  # 3: a summary record per host group (SUMMARY), issue 12
MAGIC_V2 = b"EPBLMAP2"  # url entries with a query as a trie (URLQ_NODE), issue 19; no summaries


class Kind(IntEnum):
    """What a key is, mixed into its hash (the seed) and stored in its record."""

    HOST = 0
    PREFIX = 1
    URL = 2
    URLQ = 3  # url entries that name a query, keyed by their query trie node (querytrie)
    SHA256 = 4
    ID = 5  # entry ids, for deltas that remove or replace a base entry
    URLQ_NODE = 6  # a query trie node with entries below it (one index, any of them)
    # what the entries of a host group (`host_group`) are: prefix depths, url and query
    # entries, the label counts of its host entries; so a request probes only what exists
    SUMMARY = 7


# A summary: (prefix depth mask, flags, host entry label counts). Bit d of the depth mask: a
# prefix entry `MatchKeys.prefix_ends[d]` deep (d past 63 at bit 63); bit n of the label
# counts: a host entry of n labels (past 31 at bit 31).
Summary = tuple[int, int, int]
HAS_URL = 1  # url entries without a query
HAS_URLQ = 2  # url entries with a query
HAS_SHORT_HOST = 4  # (the table's summary, group "") host entries of one label: "example"
DEPTH_BITS = 64
LABEL_BITS = 32
EVERYTHING: Summary = ((1 << DEPTH_BITS) - 1, HAS_URL | HAS_URLQ, (1 << LABEL_BITS) - 1)
NOTHING: Summary = (0, 0, 0)
SUMMARY_CACHE = 1 << 16  # host groups a writer gathers before it writes their summaries out


def host_group(host: str) -> str:
    """The key a host's summary is filed under: its last two labels ("a.b.example" ->
    "b.example"), or the host itself when it has fewer. A host entry that blocks a request
    host is one of its suffixes (`keys.host_suffixes`), so the two share a group unless the
    entry has one label (the table's `HAS_SHORT_HOST`); an IP literal is matched only as
    itself, so it shares its own group whatever that is. Related hosts share one summary:
    it may say a little more than one host lists (a probe more), never less."""
    last = host.rfind(".")
    if last <= 0:
        return host
    return host[host.rfind(".", 0, last) + 1 :]


def prefix_depth(key: str) -> int:
    """The depth of a prefix entry's key, as `MatchKeys.prefix_ends` counts it."""
    return 0 if key[-1] == "/" else key.count("/")


def summary_of(form: Compiled) -> tuple[str, Summary]:
    """The host group whose summary names an entry of text key (its `compile_entry` form),
    and what that summary says of it, as `TableWriter.add` notes it: the prefix depth, url or
    query entry, or host entry label count. What a reader merges in for entries added since
    a table was written (`mapped.MappedSnapshot`), and what `holds` checks."""
    etype, key, query = form
    assert isinstance(key, str)
    if etype is EntryType.HOST:
        labels = key.count(".") + 1
        return host_group(key), (0, 0, 1 << min(labels, LABEL_BITS - 1))
    group = host_group(key[: key.index("/")])
    if query is not None:
        return group, (0, HAS_URLQ, 0)
    if etype is EntryType.PREFIX:
        return group, (1 << min(prefix_depth(key), DEPTH_BITS - 1), 0, 0)
    return group, (0, HAS_URL, 0)


def one_label_host(form: Compiled) -> bool:
    """A host entry of one label ("example", not an IPv6 literal): it blocks hosts of every
    group, so the table's own summary says it has one (`HAS_SHORT_HOST`)."""
    etype, key, _ = form
    return etype is EntryType.HOST and isinstance(key, str) and "." not in key and key[0] != "["


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


class Seal(msgspec.Struct, array_like=True, frozen=True):
    """A table file as `fstat` and its header showed it when it was opened: device, inode,
    size, modification time and the body checksum the header states.

    The supervisor sends a worker the seal of a table whose every byte was checked (by the job
    that wrote or adopted it, or by the supervisor at start) with the load. A worker that opens
    a file with the same seal maps what was checked: a write changes its size or modification
    time, a replacement its inode, and it skips its own pass over every byte
    (`mapped.load_mapped`). That pass proved nothing more: a file rewritten after it would go
    unseen just the same, and it cost each worker 2.9 GB of reading at 10M entries, 29 GB
    (from the disk) at 100M."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    checksum: int


class Row(msgspec.Struct, array_like=True, frozen=True):
    entry: Entry
    query: QueryPairs | None


class _EntryRow(msgspec.Struct, array_like=True, frozen=True):
    entry: Entry
    query: msgspec.Raw


_row_decoder = msgspec.msgpack.Decoder(Row)
_entry_decoder = msgspec.msgpack.Decoder(_EntryRow)


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
SPILL_BYTES = 4 << 20  # rows and records are written out in pieces of about this size
_COPY_BYTES = 8 << 20
_VERIFY_BYTES = 64 << 20  # a worker checks a file this many bytes at a time
# ... hashed this many at a time, the GIL handed over between pieces: xxhash 4's update
# itself lets it go (a thread ticking every 0.2 ms beside 1 GiB hashed in 4 MiB pieces was
# never held up 0.3 ms), but the Python between pieces and each piece's `madvise` hold it,
# and a check run in a thread beside a worker's serving loop must not keep it across pieces.
_VERIFY_STEP_BYTES = 4 << 20


def _record_struct(klen: int) -> struct.Struct:
    """A one-entry record for a key of `klen` bytes: kind, length, count 1, the key (zero
    padded to 4 bytes), the entry index. One `pack` per key."""
    st = struct.Struct(f"<BxxxII{_align(klen, 4)}sI")
    if len(_RECORD_PACK) < 4096:
        _RECORD_PACK[klen] = st.pack
    return st


_RECORD_PACK: dict[int, Callable[..., bytes]] = {}
_WRITERS = itertools.count()
# kinds as plain ints where the writer uses them per entry (an enum member costs lookups)
_ID, _URLQ, _URLQ_NODE = int(Kind.ID), int(Kind.URLQ), int(Kind.URLQ_NODE)
_KIND_OF = {t: int(k) for t, k in KIND_OF.items()}


class TableWriter:
    """One compiled file, built from entries given one at a time (`add`) without holding them:
    each entry's row and key records go to two spill files beside `path` as they come, and
    memory keeps only compact per-key arrays (a hash and a record offset: 16 bytes a key,
    about 2.2 keys an entry, plus 8 bytes an entry for its row's offset). `finish` sorts the
    keys and writes the file atomically (a temporary, fsynced, renamed); `abort`, or any
    failure, removes every file the writer made. The spill files are dot-prefixed temporaries
    named after `path`, so `loader.cleanup` finds them too if the process dies."""

    def __init__(
        self, path: Path, now: float, *, progress: Progress | None = None, summaries: bool = True
    ) -> None:
        """`summaries=False` writes the format before host summaries (`MAGIC_V2`): what an
        older worker maps, and the benchmark's "before"."""
        self.path = path
        self.summaries = summaries
        self.now = now
        self.progress = progress
        # one writer's own: a process may stream several candidate versions to one output
        stem = f".{path.name}.{os.getpid()}.{next(_WRITERS)}"
        self._rows_path = path.with_name(stem + ".rows")
        self._recs_path = path.with_name(stem + ".records")
        self._rows_file = open(self._rows_path, "w+b")  # noqa: SIM115 - closed by abort
        self._recs_file = open(self._recs_path, "w+b")  # noqa: SIM115
        self._rows = bytearray()  # not yet written out; `_rows_out` bytes were
        self._rows_out = 0
        self._records = bytearray()
        self._records_out = 0
        self.row_offsets: array[int] = array("Q")
        self.hashes: array[int] = array("Q")
        self.record_at: array[int] = array("Q")
        self.counts: dict[EntryType, int] = dict.fromkeys(TYPE_ORDER, 0)
        self._exp_at: array[float] = array("d")
        self._exp_index: array[int] = array("Q")
        self._append_hash = self.hashes.append
        self._append_at = self.record_at.append
        self.prefix_depth = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._summaries: dict[str, list[int]] = {}  # host group -> a `Summary`, gathering
        self._last_host: str | None = None  # the host last noted, and its group's summary
        self._last_summary: list[int] = []

    @property
    def entries(self) -> int:
        return len(self.row_offsets)

    def add(self, entry: Entry, form: Compiled | None = None) -> None:
        """Add an entry (its `compile_entry` form when the caller has it; raises
        `InvalidEntry` otherwise for a bad entry). An entry expired at `now` is left out; a
        repeated id is found by `finish`."""
        etype, key, query = compile_entry(entry) if form is None else form
        expires_at = entry.expires_at
        if expires_at is not None:
            if expires_at <= self.now:
                return
            self._exp_at.append(expires_at)
            self._exp_index.append(len(self.row_offsets))
        index = len(self.row_offsets)
        rows = self._rows
        self.row_offsets.append(self._rows_out + len(rows))
        self._encoder.encode_into((entry, query), rows, -1)  # the bytes of a `Row`
        self.counts[etype] += 1
        if query is not None:
            assert isinstance(key, str)
            *above, last = path_keys(key, query)
            for node in above:
                self._note(_URLQ_NODE, node, index)
            self._note(_URLQ, last, index)
            self._summarise(key[: key.index("/")], 0, HAS_URLQ, 0)
        elif type(key) is str:
            # what `summary_of` and `one_label_host` say of it, inlined: called per entry,
            # they cost the writer 0.4-0.5 µs an entry (about an eighth of `add`)
            if etype is EntryType.PREFIX:
                depth = 0 if key[-1] == "/" else key.count("/")  # as `MatchKeys.prefix_ends`
                self.prefix_depth = max(self.prefix_depth, depth)
                self._summarise(key[: key.index("/")], 1 << min(depth, DEPTH_BITS - 1), 0, 0)
            elif etype is EntryType.URL:
                self._summarise(key[: key.index("/")], 0, HAS_URL, 0)
            elif etype is EntryType.HOST:
                labels = key.count(".") + 1
                if labels == 1 and key[0] != "[":  # an IPv6 literal matches only itself
                    self._summarise("", 0, HAS_SHORT_HOST, 0)
                self._summarise(key, 0, 0, 1 << min(labels, LABEL_BITS - 1))
            self._note(_KIND_OF[etype], key.encode("utf-8", "surrogatepass"), index)
        else:
            assert isinstance(key, bytes)
            self._note(_KIND_OF[etype], key, index)
        kb = entry.id.encode("utf-8", "surrogatepass")  # the id's record: `_note`, inlined
        n = len(kb)
        records = self._records
        self._append_hash(hash_key(kb, _ID))
        self._append_at(self._records_out + len(records))
        records += (_RECORD_PACK.get(n) or _record_struct(n).pack)(_ID, n, 1, kb, index)
        if len(rows) >= SPILL_BYTES:
            self._rows_file.write(rows)
            self._rows_out += len(rows)
            rows.clear()
        if len(records) >= SPILL_BYTES:
            self._recs_file.write(records)
            self._records_out += len(records)
            records.clear()
        if self.progress is not None and index % 65536 == 65535:
            self.progress(index + 1)

    def _summarise(self, host: str, depths: int, flags: int, labels: int) -> None:
        """Note an entry in its host group's summary (the host of a url or prefix key is the
        key up to its first "/": a canonical host holds none)."""
        if not self.summaries:
            return
        if host == self._last_host:  # a list names one site's many URLs in a row
            last = self._last_summary
            last[0] |= depths
            last[1] |= flags
            last[2] |= labels
            return
        group = host_group(host)
        got = self._summaries.get(group)
        if got is None:
            if len(self._summaries) >= SUMMARY_CACHE:
                self._write_summaries()  # a group met again later gets a second record: merged
            got = self._summaries[group] = [depths, flags, labels]
        else:
            got[0] |= depths
            got[1] |= flags
            got[2] |= labels
        self._last_host, self._last_summary = host, got

    def _write_summaries(self) -> None:
        for group, (depths, flags, labels) in self._summaries.items():
            kb = group.encode("utf-8", "surrogatepass")
            values = (depths & 0xFFFFFFFF, depths >> 32, flags, labels)
            self._note_values(Kind.SUMMARY, kb, values)
        self._summaries.clear()
        self._last_host = None  # its summary was written: the next entry starts a new one

    def _note_values(self, kind: Kind, kb: bytes, values: tuple[int, ...]) -> None:
        records = self._records
        self.hashes.append(hash_key(kb, kind))
        self.record_at.append(self._records_out + len(records))
        records.extend(_RECORD.pack(kind, len(kb), len(values)))
        records.extend(kb)
        records.extend(_ZEROS[: _align(len(kb), 4) - len(kb)])
        records.extend(struct.pack(f"<{len(values)}I", *values))

    def _note(self, kind: int, kb: bytes, index: int) -> None:
        """A one-entry record for (kind, key): the per-entry cost of the writer, kept small."""
        n = len(kb)
        pack = _RECORD_PACK.get(n) or _record_struct(n).pack
        records = self._records
        self._append_hash(hash_key(kb, kind))
        self._append_at(self._records_out + len(records))
        records += pack(kind, n, 1, kb, index)

    def finish(self, version: int) -> TableInfo:
        """Sort, merge and write the file; the spill files are removed either way."""
        try:
            self._write_summaries()
            for f, buf in ((self._rows_file, self._rows), (self._recs_file, self._records)):
                f.write(buf)
                f.flush()
            self._rows_out += len(self._rows)
            self._records_out += len(self._records)
            self._rows.clear()
            self._records.clear()
            self.row_offsets.append(self._rows_out)
            fps_arr, recs_arr = self._sort_and_merge()
            return self._lay_out_and_write(fps_arr, recs_arr, version)
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and remove the spill files (and nothing else: `finish` renamed its output)."""
        for f, spill in ((self._rows_file, self._rows_path), (self._recs_file, self._recs_path)):
            f.close()
            spill.unlink(missing_ok=True)

    def _sort_and_merge(self) -> tuple[Any, Any]:
        """Sort the keys by hash (numpy: seconds for tens of millions). Runs of one hash are
        either one key listed by several entries (merged into one record, entries in list
        order, appended after the spilled records) or, rarely, distinct keys that collide
        (kept apart, both under that hash)."""
        import numpy as np  # the compile child's only: workers never import numpy

        hs = np.frombuffer(self.hashes, dtype=np.uint64)
        order = np.argsort(hs, kind="stable")
        fps_arr = hs[order]
        del hs
        # each unsorted array goes once its sorted copy is made (and the appends bound to it)
        self.hashes = array("Q")
        self._append_hash = self._append_at = self.hashes.append
        recs_arr = np.frombuffer(self.record_at, dtype=np.uint64)[order]
        del order
        self.record_at = array("Q")
        same = np.flatnonzero(fps_arr[1:] == fps_arr[:-1])
        if not len(same):
            return fps_arr, recs_arr
        keep = np.ones(len(fps_arr), dtype=bool)
        with mmap.mmap(self._recs_file.fileno(), 0, access=mmap.ACCESS_READ) as spilled:
            run_end = -1
            for k in same.tolist():
                if k < run_end:
                    continue
                run_end = k + 1
                while run_end < len(fps_arr) and fps_arr[run_end] == fps_arr[k]:
                    run_end += 1
                self._merge_run(spilled, fps_arr, recs_arr, keep, k, run_end)
        return fps_arr[keep], recs_arr[keep]

    def _merge_run(
        self, spilled: mmap.mmap, fps_arr: Any, recs_arr: Any, keep: Any, k: int, run_end: int
    ) -> None:
        groups: dict[tuple[int, bytes], list[int]] = {}
        first: dict[tuple[int, bytes], int] = {}
        for pos in range(k, run_end):
            kind_, kb, listed = _read_record(spilled, int(recs_arr[pos]))
            groups.setdefault((kind_, kb), []).extend(listed)
            if (kind_, kb) in first:
                keep[pos] = False
            else:
                first[(kind_, kb)] = pos
        for (kind_, kb), owned in groups.items():
            if kind_ == Kind.SUMMARY:
                if len(owned) == 4:
                    continue
                owned = [0, 0, 0, 0]  # one group's summaries, written out apart: their union
                for i, value in enumerate(groups[(kind_, kb)]):
                    owned[i % 4] |= value
            elif len(owned) == 1 or kind_ == Kind.URLQ_NODE:
                continue  # a node's record says only "entries below": its first index
            if kind_ == Kind.ID:
                raise InvalidEntry(kb.decode("utf-8", "surrogatepass"), "duplicate id")
            records = self._records
            recs_arr[first[(kind_, kb)]] = self._records_out + len(records)
            records.extend(_RECORD.pack(kind_, len(kb), len(owned)))
            records.extend(kb)
            records.extend(_ZEROS[: _align(len(kb), 4) - len(kb)])
            records.extend(struct.pack(f"<{len(owned)}I", *owned))

    def _lay_out_and_write(self, fps_arr: Any, recs_arr: Any, version: int) -> TableInfo:
        """Section offsets follow from the lengths; the spilled rows and records are copied
        into place (and checksummed) in pieces."""
        import numpy as np

        n_records = self._records_out + len(self._records)
        n_rows = self._rows_out
        n_entries = len(self.row_offsets) - 1
        n_keys = len(fps_arr)
        exp_at = np.frombuffer(self._exp_at, dtype=np.float64)
        exp_index = np.frombuffer(self._exp_index, dtype=np.uint64)
        exp_order = np.lexsort((exp_index, exp_at))
        expiring = np.empty(len(exp_order), dtype=[("at", "<f8"), ("index", "<u8")])
        expiring["at"] = exp_at[exp_order]
        expiring["index"] = exp_index[exp_order]
        bits = max(0, (n_keys - 1).bit_length())
        directory = np.full((1 << bits) + 1, n_keys, dtype="<u4")
        if bits:  # bucket b starts at the first hash whose top `bits` bits are >= b
            starts = np.arange(1 << bits, dtype=np.uint64) << np.uint64(64 - bits)
            directory[:-1] = np.searchsorted(fps_arr, starts)
            del starts
        else:
            directory[0] = 0
        dir_bytes = directory.tobytes()
        del directory
        o_dir = HEADER_SIZE
        o_fps = o_dir + _align(len(dir_bytes))
        o_recs = o_fps + 8 * n_keys
        o_records = o_recs + 8 * n_keys
        o_row_offs = o_records + _align(n_records)
        o_rows = o_row_offs + 8 * (n_entries + 1)
        o_exp = o_rows + _align(n_rows)
        size = o_exp + _EXPIRING.size * len(expiring)
        offs = [o_dir, o_fps, o_recs, o_records, o_row_offs, o_rows, o_exp]
        recs_arr += np.uint64(o_records)
        row_arr = np.frombuffer(self.row_offsets, dtype=np.uint64) + np.uint64(o_rows)
        body = xxhash.xxh3_64()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:

                def put(part: bytes | bytearray | memoryview) -> None:
                    body.update(part)
                    out.write(part)

                out.write(b"\0" * HEADER_SIZE)  # the header, once the checksum is known
                put(dir_bytes)
                put(_pad(len(dir_bytes)))
                put(np.ascontiguousarray(fps_arr, dtype="<u8").data)  # no copy on little-endian
                put(np.ascontiguousarray(recs_arr, dtype="<u8").data)
                _copy(self._recs_file, self._records_out, put)
                put(self._records)
                put(_pad(n_records))
                put(np.ascontiguousarray(row_arr, dtype="<u8").data)
                _copy(self._rows_file, n_rows, put)
                put(_pad(n_rows))
                put(expiring.tobytes())
                header = _HEADER.pack(
                    MAGIC if self.summaries else MAGIC_V2,
                    version,
                    self.now,
                    n_entries,
                    *(self.counts[t] for t in TYPE_ORDER),
                    n_keys,
                    len(expiring),
                    self.prefix_depth,
                    bits,
                    *offs,
                    size,
                    body.intdigest(),
                )
                header += _HEADER_CHECK.pack(xxhash.xxh3_64_intdigest(header))
                out.seek(0)
                out.write(header)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return TableInfo(entries=n_entries, keys=n_keys, bytes=size)


def _copy(src: Any, length: int, put: Callable[[bytes], None]) -> None:
    src.seek(0)
    left = length
    while left > 0:
        chunk = src.read(min(_COPY_BYTES, left))
        if not chunk:
            raise TableError(f"{src.name}: spill file shorter than written")
        put(chunk)
        left -= len(chunk)


def write_table(
    path: Path,
    entries: Iterable[Entry],
    version: int,
    now: float,
    *,
    progress: Progress | None = None,
    compiled: CompiledById | None = None,
    summaries: bool = True,
) -> TableInfo:
    """Compile `entries` (raises `InvalidEntry` on a bad entry or a repeated id; entries
    expired at `now` are left out) into `path`, atomically (`TableWriter`). `progress(n)` is
    called every 65536 entries. An entry found (the same object) in `compiled` is not
    compiled again."""
    writer = TableWriter(path, now, progress=progress, summaries=summaries)
    try:
        known = compiled or {}
        for entry in entries:
            seen = known.get(entry.id)
            writer.add(entry, seen[1] if seen is not None and seen[0] is entry else None)
    except BaseException:
        writer.abort()
        raise
    return writer.finish(version)


def restamp(path: Path, version: int) -> None:
    """Give a checked table another node version: the header is rewritten in place with its
    checksum (the body and its checksum stay). For a file of the caller's own that no process
    maps yet: a signer's table copied into the node's state (`proxy.blocklist.shipped`)."""
    with open(path, "r+b") as f:
        fields = list(_HEADER.unpack(f.read(_HEADER.size)))
        fields[1] = version
        header = _HEADER.pack(*fields)
        f.seek(0)
        f.write(header + _HEADER_CHECK.pack(xxhash.xxh3_64_intdigest(header)))
        f.flush()
        os.fsync(f.fileno())


def stamp_of(path: Path) -> int:
    """The node version in a table's header (unchecked: what a worker must then find)."""
    with open(path, "rb") as f:
        return int(_HEADER.unpack(f.read(_HEADER.size))[1])


def _read_record(records: Any, off: int) -> tuple[int, bytes, tuple[int, ...]]:
    kind, klen, count = _RECORD.unpack_from(records, off)
    start = off + _RECORD.size
    kb = bytes(records[start : start + klen])
    return kind, kb, struct.unpack_from(f"<{count}I", records, start + _align(klen, 4))


_READ_ONE: dict[int, struct.Struct] = {}  # by key length: records of one entry index
_READ_SUMMARY: dict[int, struct.Struct] = {}  # by key length: summaries (four values)
_INDICES: dict[int, struct.Struct] = {}  # by count: a record's entry indices
_SUMMARY = int(Kind.SUMMARY)


def _read_struct(kind: int, klen: int) -> struct.Struct:
    """A record of (kind, a key of `klen` bytes), read whole as `find` expects it: kind,
    length, count, the key (its padding to 4 bytes skipped), then its values (four for a
    summary, else the first entry index). One per kind of shape and key length, kept."""
    values = 4 if kind == _SUMMARY else 1
    st = struct.Struct(f"<BxxxII{klen}s{_align(klen, 4) - klen}x{values}I")
    cache = _READ_SUMMARY if values == 4 else _READ_ONE
    if len(cache) < 4096:
        cache[klen] = st
    return st


def _indices(count: int) -> struct.Struct:
    """`count` entry indices (u32)."""
    st = _INDICES.get(count)
    if st is None:
        st = struct.Struct(f"<{count}I")
        if len(_INDICES) < 1024:
            _INDICES[count] = st
    return st


def _pad(length: int) -> bytes:
    """The zero bytes that bring `length` bytes to the next 8-byte boundary."""
    return b"\0" * (_align(length) - length)


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
        "probe_span",
        "seal",
        "summaries",
    )

    def __init__(self, path: Path) -> None:
        """Open and check the header and section bounds (cheap); `verify` checks the body."""
        self.path = path
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                size = st.st_size
                if size < HEADER_SIZE:
                    raise TableError(f"{path}: truncated ({size} bytes, no header)")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise TableError(f"{path}: {e}") from e
        head = mm[: _HEADER.size]
        (check,) = _HEADER_CHECK.unpack_from(mm, _HEADER.size)
        fields = _HEADER.unpack(head)
        if fields[0] not in (MAGIC, MAGIC_V2):
            raise TableError(f"{path}: not a compiled blocklist (magic {fields[0]!r})")
        self.summaries = fields[0] == MAGIC
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
        # the sections every probe reads: directory, hashes, record offsets
        self.probe_span = (o_dir, o_recs + 8 * self.keys)
        # the file mapped (its inode, whatever its path is later), as it was when opened
        self.seal = Seal(st.st_dev, st.st_ino, size, st.st_mtime_ns, self._checksum)

    def is_sealed(self, seal: Seal | None) -> bool:
        """This is the file `seal` names, unchanged since it was checked whole (`Seal`)."""
        return seal is not None and self.seal == seal

    @property
    def checksum(self) -> int:
        """The body's checksum, as the header states it (`verify` holds the body to it)."""
        return int(self._checksum)

    def verify(self, whole: Any = None, progress: Callable[[int, int], None] | None = None) -> None:
        """Check the body checksum: reads the whole file once (and so warms the page cache).
        Gives up the GIL after every few MiB, so a worker runs it in a thread while it keeps
        serving. `whole`: a hashlib object also fed every byte of the file in order, so a
        shipped table's sha256 costs no second pass (`shipped.adopt`: 29 GB at 100M entries,
        larger than the page cache here); `progress(bytes read, file bytes)` after each
        piece."""
        start, end = self._body
        body = xxhash.xxh3_64()
        if whole is not None:
            with memoryview(self._mm) as view, view[:start] as header:
                whole.update(header)
        hashes = (body,) if whole is None else (body, whole)
        self._read_through(start, end, hashes, progress)
        if body.intdigest() != self._checksum:
            raise TableError(f"{self.path}: checksum mismatch (corrupt)")

    def check_for_workers(self) -> None:
        """A worker's check before it enforces the table: `verify`, then
        `keep_probe_sections` (after the stream of the whole file, not before it)."""
        self.verify()
        self.keep_probe_sections()

    def keep_probe_sections(self) -> None:
        """Read the sections every probe reads (directory, hashes, record offsets: ~20 bytes a
        key) once more, after the check has streamed the whole file: a page read twice is
        one the kernel keeps (its active list) over the rows and records the check read once.
        A table larger than the page cache (100M entries: 29 GB here) otherwise loses its
        directory to the rest of the stream, and a probe of a new key waits for the disk: a
        push's `index_of` took 3-10 ms a major fault at 100M (issue 12)."""
        self._read_through(*self.probe_span, (xxhash.xxh3_64(),), None)

    def _read_through(
        self,
        start: int,
        end: int,
        hashes: tuple[Any, ...],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """Feed bytes [start, end) of the file to `hashes`, a piece at a time, each piece's
        pages dropped from this process's page tables once read (they stay in the page cache,
        shared): its RSS never counts the whole list, during the check or after it, only the
        pages its lookups touch."""
        drop = getattr(mmap, "MADV_DONTNEED", None)
        with memoryview(self._mm) as view:
            for at in range(start, end, _VERIFY_BYTES):
                stop = min(at + _VERIFY_BYTES, end)
                for step in range(at, stop, _VERIFY_STEP_BYTES):
                    with view[step : min(step + _VERIFY_STEP_BYTES, stop)] as piece:
                        for h in hashes:
                            h.update(piece)
                    time.sleep(0)  # a serving loop waiting for the GIL runs now
                if drop is not None:
                    page = at - at % mmap.PAGESIZE
                    self._mm.madvise(drop, page, stop - page)
                if progress is not None:
                    progress(stop, end)

    # -- probes ---------------------------------------------------------------------------

    def find(self, kind: int, kb: bytes) -> tuple[int, ...]:
        """Entry indices listed under (kind, key), in list order; () when none (a summary's
        four values for `Kind.SUMMARY`). A miss is a hash, two directory reads and a scan of
        the bucket's (about one) hashes. A hash that matches is confirmed against the
        record's kind and full key with one `unpack` that reads its header, key and values
        (`_read_struct`: the one index nearly every record has, a summary's four); reading
        them piece by piece cost five times as much (issue 12)."""
        h = hash_key(kb, kind)
        d = self._dir
        b = h >> self._shift
        i = d[b]
        end = d[b + 1]
        while i < end:
            if self._fps[i] == h:
                klen = len(kb)
                read = (_READ_SUMMARY if kind == _SUMMARY else _READ_ONE).get(klen)
                if read is None:
                    read = _read_struct(kind, klen)
                off = self._recs[i]
                try:
                    record = read.unpack_from(self._mm, off)
                except struct.error:  # a short record at the file's end: read it in pieces
                    found = self._confirm_slowly(off, kind, kb)
                    if found:
                        return found
                else:
                    if record[0] == kind and record[1] == klen and record[3] == kb:
                        count = record[2]
                        if count == len(record) - 4:
                            return record[4:]
                        return (_INDICES.get(count) or _indices(count)).unpack_from(
                            self._mm, off + _RECORD.size + _align(klen, 4)
                        )
            i += 1
        return ()

    def _confirm_slowly(self, off: int, kind: int, kb: bytes) -> tuple[int, ...]:
        mm = self._mm
        rkind, klen, count = _RECORD.unpack_from(mm, off)
        start = off + _RECORD.size
        if rkind != kind or klen != len(kb) or mm[start : start + klen] != kb:
            return ()
        return _indices(count).unpack_from(mm, start + _align(klen, 4))

    def summary(self, group: str) -> Summary:
        """The `Summary` of a host group's entries (`host_group`; "" for the table's own):
        `NOTHING` when it lists none, `EVERYTHING` for a file written before summaries (every
        probe runs, as it did)."""
        if not self.summaries:
            return EVERYTHING
        found = self.find(Kind.SUMMARY, group.encode("utf-8", "surrogatepass"))
        if not found:
            return NOTHING
        low, high, flags, labels = found
        return low | high << 32, flags, labels

    def row(self, index: int) -> Row:
        offs = self._row_offs
        return _row_decoder.decode(self._mm[offs[index] : offs[index + 1]])

    def entry(self, index: int) -> Entry:
        """The entry of a row, its query pairs left undecoded (`_EntryRow`): what a blocked
        request reads."""
        offs = self._row_offs
        return _entry_decoder.decode(self._mm[offs[index] : offs[index + 1]]).entry

    def index_of(self, entry_id: str) -> int:
        """The index of the entry with this id, or -1."""
        found = self.find(Kind.ID, key_bytes(entry_id))
        return int(found[0]) if found else -1

    def holds(self, entry: Entry, form: Compiled) -> str:
        """ "" when the table lists `entry` (its `compile_entry` form) as `TableWriter.add`
        writes it: its id's record names a row holding this very entry and query, that index
        is under each of its keys, and its host group's summary names it; else what is
        missing. An entry expired when the table was made is rightly absent."""
        index = self.index_of(entry.id)
        if index < 0:
            if entry.expires_at is not None and entry.expires_at <= self.created_at:
                return ""
            return "its id is not in the table"
        row = self.row(index)
        etype, key, query = form
        if row.entry != entry or row.query != query:
            return "the table's row for its id holds another entry"
        if isinstance(key, bytes):
            return "" if index in self.find(Kind.SHA256, key) else "not under its digest"
        if query is not None:
            *above, last = path_keys(key, query)
            if not all(self.find(Kind.URLQ_NODE, node) for node in above):
                return "a node of its query trie is missing"
            if index not in self.find(Kind.URLQ, last):
                return "not under its query key"
            return self._summarised(form)
        if index not in self.find(KIND_OF[etype], key_bytes(key)):
            return "not under its key"
        if etype is EntryType.PREFIX and prefix_depth(key) > self.prefix_depth:
            return "deeper than the table's prefix depth"
        if one_label_host(form) and not self.summary("")[1] & HAS_SHORT_HOST:
            return "the table's summary lacks its one-label host"
        return self._summarised(form)

    def _summarised(self, form: Compiled) -> str:
        group, (depths, flags, labels) = summary_of(form)
        have = self.summary(group)
        if have[0] & depths != depths or have[1] & flags != flags or have[2] & labels != labels:
            return "its host group's summary does not name it"
        return ""

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
