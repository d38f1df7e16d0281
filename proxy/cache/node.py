"""The node tier: one byte-bounded, persistent cache that every worker of a node reads and
writes, behind each worker's memory tier (issue 11). An object is fetched once per node, every
worker can serve it (stale ones too), and it survives restarts and SIGHUP rolls.

Engine: LMDB (`lmdb`), chosen by measurement. Two processes at once, values of 4-64 KiB, on
the shared 2-core machine (a throwaway script, /tmp/nodebench/bench.py, not committed):

    engine, commit mode          put, 1 per txn   put, 32 per txn   get (copy out)
    LMDB, no fsync per commit    25-58 us         43-49 us/item     4-11 us
    LMDB, fsync per commit       1340 us          100-106 us/item   8-11 us
    SQLite WAL, synchronous=OFF  175-430 us       100-220 us/item   54-71 us
    SQLite WAL, synchronous=NORMAL 365-520 us     300-320 us/item   44-54 us

A node-tier read happens on the request path, synchronously, inside `lookup` (a memory miss),
so its cost is what matters: LMDB reads memory-mapped pages shared by every process with no
lock, 5-10x cheaper than SQLite's query path, and its writers exclude each other with one
robust mutex (a writer killed with SIGKILL releases it; a killed writer's transaction never
becomes visible: LMDB commits by a copy-on-write B+tree and one meta page write). A shared
mmap file of our own would need its own allocator, index and crash recovery: that is LMDB.

What a node-tier hit costs a worker (the facade adopts an object into memory only when it is
read again soon, `proxy.cache.admission`; until then the memo answers repeats from this tier,
`get_at`): the facade's vary + get + proof + adoption, in a loop with touches batched, was 18 us for
a 4 KiB body and 94 us for 64 KiB while the proof re-hashed the body with sha256, against
0.5-1 us for a memory lookup (same throwaway script directory, hit.py; the 2 cores busy with
the test suite). Without the re-hash (below), `get` alone went from 11.5 to 9 us at 4 KiB and
from 54 to 15 us at 64 KiB (process time, the machine shared). `python -m benchmarks.run
--scenarios node-hit` measures a node-tier hit against an L1 hit through the whole server
(benchmarks/README.md, "A node-tier hit through the memo": `get_at` 7 us at 4 KiB, of it the
read transaction 2, opening the record 1.5, the `Entry` 1.3). So the memo's hits prove a record
once per worker and generation (`prove_at`) and then only check that the value under its key is
still the one proven, by length and seal, and copy its body (`get_hot`, `get_proven`, `Proven`:
the seal proves what was proven, and LMDB never rewrites a committed value in place):
`python -m benchmarks.node_tier` (benchmarks/README.md, "Proven once per record"). The hits
of one loop turn share one read transaction (`_turn_reader`), and the memo's reference holds
its proof weakly (`proxy.cache.tiered.NodeRef`): benchmarks/README.md, "Node-tier hits".

Commits are not fsynced (`sync=False`): a crashed *process* loses nothing (its writes are in
the page cache), a crashed *kernel* may lose or tear the last transactions. So the tier
records the boot it was opened under, and `prepare` (the supervisor, before any worker
starts) rebuilds a tier left open when the machine went down (a different boot id, no clean
close). It also moves aside a file LMDB refuses or one of another format version, and empties
the tier for `--cache-clear`. Nothing about the tier is ever fatal to the node.

Layout (format 4: three named databases; `ikey` = H(primary) + H(vary fields, values)):

    items   ikey -> MAGIC + xxh3-128 + msgpack `NodeRecord` (proxy.cache.shared's `Record`
                    and the head as rendered, so a hit renders nothing)
    index   one tree, each row's kind its first byte:
            "i" + ikey -> `Info` (access tick, size, host, path, query, digest, url key)
            "o" + tick + ikey -> ""      (oldest access first: what eviction takes)
            "p" -> bytes                 (the tier's, right after the order rows)
            "d" + sha256 + ikey -> ""    (purge by body digest, blocklist digests)
            "u" + url row + ikey -> ""   (every purge by URL, prefix or host: `_url_row`)
            "v" + H(primary) -> fields   (only for a resource stored with Vary)
            "m" + H(primary) -> 0, until (marked not storable; the lease itself is a lock,
                                          see "Coalescing")
    meta    format, boot, clean

Why so (format 4; benchmarks/README.md, "Fewer trees per store"): a commit writes every page
its puts dirtied, and a row under a random key dirties a leaf of its own and its branch.
Format 3 put a cold store's eleven rows in eleven trees (items, info, order, vary, host,
digest, urlkey, hostkey per parent domain, urlseq, meta): 128 KiB written per commit at 1 KiB
bodies, 81-88 us a store with its commit in one process. Now a store writes a record, its
`Info`, an order row and the byte count (the newest order rows' leaf, next to which the
count's key sorts), a digest row and a url row: 79 KiB, 52-53 us. Merging the eleven trees
into one without fewer rows saved almost nothing; the rows are what cost. `Info` beside its
record in `items` (ikey + "i", written in the same leaf) saved 16 KiB more a commit (47 us),
but it spread the records over three times the leaves, and every node-tier hit, which reads
only the record, paid for it (`get_proven` +0.2-0.4 us in one process): kept apart.

The url row is the blocklist url key with its host's labels reversed ("www.example.com/a"
is "com.example.www/a"; an IP literal or another host without parent domains as it is), so
one ordered range serves every kind of purge: a url entry (or a url key's purge) is the
exact row (ended by a NUL, so "host/a" is not "host/ab"), a prefix entry "host/a" that row
and the range under "host/a/", a host entry "example.com" the ranges "com.example/" (the
host) and "com.example." (its subdomains), and the admin API's purge by host or prefix the
range of that host's key; each item found is confirmed against its `Info`. Rows are cut at
`URLSEQ_KEY_BYTES` (LMDB keys end at 511 bytes): longer url keys share a range, confirmed
the same way. A pushed host or prefix entry thus costs what it purges (issue 19: both used to
walk every item's `Info`); only a full version walks them all (`purge_listed`).

A record proves itself before it is served: its envelope's magic and checksum (xxh3-128 of
the whole record: key, Vary values, headers, digest and body; 0.12 us at 4 KiB and 1.1 us at
64 KiB, where crc32 took 1.1 and 15.5 us), then the shared tier's check (`shared.entry_of`:
authority and path+query, Vary values) without re-hashing the body (`verify_body=False`): the
digest was computed from the body by the worker that stored it, and the checksum proves body
and digest are still the bytes it sealed, so a torn or flipped record fails there. A sha256
would add no proof against a writer of the file either (it could write a matching digest), and
it rejected every content-coded record, whose digest is that of the decoded body (the
blocklist's identity digest, proxy/blocklist/digest.py). The shared tier, across machines,
keeps re-hashing. A record that fails is deleted and counted (`node_rejected`), never served.

Coalescing across workers: a worker about to fetch a key that neither its memory nor the node
tier holds first takes the key's *lease*: an open-file-description lock (`F_OFD_SETLK`,
non-blocking) on one byte of `fetch.lock` in the tier's directory, the byte chosen by the key's
hash (62 bits of it: two keys share a byte about never, and then one waits for the other). One
system call, no write transaction: the lease used to be an LMDB record written in a
transaction of its own, a commit per cold miss (5% of a cold miss's samples, and its commit's
share of the 23% in `flush`; benchmarks/README.md, "The node tier"). The kernel drops the lock
when its holder's last descriptor closes, so a worker killed mid-fetch (SIGKILL, the OOM killer)
leaves no lease behind: nothing outlives a node, nothing needs expiring or dropping at start.
A worker that takes the lease reads the tier once more before it fetches (another worker may
have stored the key between this one's lookup and its lease), unless no transaction was
committed since the lookup's read found the key absent (`_still_absent`: the meta page's last
transaction id against that read's snapshot; the same read again could only say the same).
If another worker holds it, this one waits (`Fetcher`, proxy/phases/fetch.py): it re-reads the
tier with a backoff from 1 ms up to `cache.node_lease_poll_max_s` until the entry is there (a
node-tier hit), the lease is gone without one (the answer was not storable: it fetches), or
`cache.coalesce_wait_s` passes (it fetches, counted). Another process's commit raises no event
this process could wait on, hence the polling, as Traffic Server's read-while-writer retries
(a blocking `F_OFD_SETLKW` would block the worker's loop). The release is the unlock after the
commit of the leader's store (`flush`), so a waiter never sees the lease gone before the entry
is there. After an answer that cannot be stored the leader leaves a mark (an "m" row, pid 0,
until now + `cache.hit_for_miss_s`, written in that commit): a worker that finds the lock held
reads it, and with a live mark fetches at once, holding nothing, as hit-for-miss does inside
one worker. A live leader holds its lease for as long as its fetch (bounded by the origin's
timeouts); a waiter stops waiting after `coalesce_wait_s`. When a leader cannot store what it
fetched in the same loop turn (a body spooled to disk, larger than the tier's object bound), the
waiter fetches too: that is the one case of two origin requests. If the lock file cannot be
opened (a full disk, a read-only directory), every worker fetches, as without a node tier.

Writes through the map (on by default since h-store, `cache.node_tier_preallocate`): the
supervisor's `prepare` gives the data file disk blocks for its whole map (`posix_fallocate`,
`map_size`: twice the bound and 64 MiB, reserved at start), and every process that finds it
so opens the tier with LMDB's `writemap`: a commit then writes into the shared mapping instead
of copying every dirty page with pwrite(). A cold store with its commit: 46-49 us without,
24-25 with (`python -m benchmarks.node_tier --cold 3000 --objects 30000`, 1 KiB bodies); in
a full tier, evicting as it stores, 66 against 34; at 64 KiB 75 against 43 once the file's
pages were written once (the first write of each page of a fresh file faults it in: 76 us a
store then; benchmarks/README.md, "Cheaper node-tier stores"). `reserve` preallocates only on a
filesystem that overwrites in place (`IN_PLACE_FILESYSTEMS`: on a copy-on-write one, btrfs or
zfs, an overwrite allocates, so reserved blocks prove nothing) and when the disk keeps
`cache.node_tier_preallocate_keep_free_bytes` free after it. Without the blocks (refused, or
turned off) the tier is written with pwrite(): into a hole of a sparse file a full disk would
raise SIGBUS in the worker instead of an error the tier handles. A larger bound at SIGHUP is
reserved before the new workers start; an old worker whose map another process grew past its
blocks stops writing (`_remap`: its replacement writes). A SIGKILL mid-commit still tears
nothing: LMDB writes only pages no committed tree refers to, through the map as through
pwrite().

Eviction keeps popular objects: an approximate LRU over access ticks. Every
`TOUCH_ONE_IN`th read from this tier (a memory miss: 8 in a worker) and every 8th hot hit in
memory (the memo's touch) queues a touch, at most one per key and worker every
`cache.node_touch_interval_s` (10 s), and one is written only when the key's stored tick is
older than that (`_due`: whichever worker ticked or stored it last), so W workers write a key's
tick about once per interval, not W times, and a batch of recent touches commits nothing.
Sampled as the memo samples L1's hits: with a working set larger than L1 nearly every node-tier
hit was a key's first in its interval, and its touch (four LMDB operations and the pages a
commit writes) was a fifth of the hit's CPU (node-hit, 2026-12-06); an object read eight times
is touched about as surely as before, one read once may be evicted a little sooner. Stores (and
uncacheable marks) are written in one transaction at the end of the loop turn (`call_soon`), with
every touch queued by then; touches alone wait up to `cache.node_touch_delay_s` (0.1 s) for a
batch: a write transaction costs tens of microseconds, more than the rest of a node-tier hit,
and an access time 0.1 s late changes no eviction that matters. The transaction then evicts the
oldest ticks until the tier is within `cache.node_tier_bytes`. Purges are
written at once (after the pending batch), so a purge is never undone by an older store of the
same worker. Byte accounting is the record's length plus `INDEX_OVERHEAD_BYTES`.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import xxhash

from proxy.blocklist.keys import MatchKeys, canonical_host, host_suffixes, match_keys
from proxy.cache.entry import Entry, PrimaryKey, VariantKey
from proxy.cache.shared import Record, Rejected, entry_of
from proxy.config import Config, default_state_dir
from proxy.metrics import WorkerStats
from proxy.rfc.target import Target

log = logging.getLogger("edgeproxy.node_tier")

# bump whenever the layout, `Info` or `NodeRecord` changes (2: hostkey, urlseq, lease, xxh3
# checks; 3: the rendered head in the record; 4: seven rows in three trees, "Layout")
FORMAT = b"4"
MAGIC = b"EPN4"
INDEX_OVERHEAD_BYTES = 256  # info, order and index records of one item, roughly
DBS = (b"items", b"index", b"meta")
# The rows of `index`, by their first byte (see "Layout").
_INFO = b"i"
_ORDER = b"o"
_BYTES = b"p"  # the whole key: right after the order rows, on the page their newest share
_VARY = b"v"
_DIGEST = b"d"
_URL = b"u"
_MARK = b"m"
TOUCH_ONE_IN = 8  # workers touch on every 8th read (the default, 1, is every read: tools, tests)
URLSEQ_KEY_BYTES = 400  # LMDB keys end at 511 bytes: longer url keys share a range, confirmed
_LEASE = struct.Struct("<qd")  # 0 (formerly the fetching worker's pid), marked until (epoch s)
LOCK_FILE = "fetch.lock"  # beside data.mdb: one byte per key's lease (`_slot`)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: type, whence, start, len, pid (0 for OFD)
_BUSY = (errno.EAGAIN, errno.EACCES)  # F_OFD_SETLK: another description holds the byte
_U64 = struct.Struct(">Q")
_HDR = struct.Struct(">4s16s")  # magic, xxh3-128 of the msgpack record
# Filesystems that write a block where `posix_fallocate` reserved it ("Writes through the map").
IN_PLACE_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})
PROOF_OVERHEAD_BYTES = 1500  # a `Proven` and its entry besides the head and header fields


class NodeTierError(Exception):
    """The tier cannot be opened as it is (the supervisor's `prepare` rebuilds it)."""


class Info(msgspec.Struct, array_like=True):
    """What purges and eviction need of an item, without reading its record."""

    tick: int
    size: int
    host: str
    path: str
    query: str | None
    sha256: bytes
    url_key: str


class NodeRecord(Record, tag="n", array_like=True):
    """The shared tier's `Record` and what a hit needs prepared: the head as delivered up to
    the per-delivery fields (`Entry.head`), so a node-tier hit renders nothing."""

    head: bytes
    via: bytes  # the `Via` member `head` carries (a node restarted under another name renders)


class Proven:
    """A node-tier record one worker proved once (its seal checked over the whole value, its
    key and Vary compared: `prove_at`) and decoded into `entry`, so that the memo's later
    hits on it only check that the value under `ikey` is still that one: the same length
    and the same 20 bytes of magic and xxh3-128 seal. LMDB never changes a committed value
    in place (copy-on-write), so a value is rewritten only by a new store, whose payload
    differs and with it its seal (an equal payload is an equal record, served as proven):
    a rewritten record is never served under the old proof, and a purged one is not found.

    The entry holds everything but the body (its head, headers, times, digest), about 2 KB
    (`held`, bounded by `cache.node_proof_cache_bytes` per worker); its body is copied from
    the mapped value on each hit (`get_proven`) and emptied again at the next (`get_hot`),
    so no body the node tier serves stays held in a worker."""

    __slots__ = ("ikey", "seal", "length", "body_at", "body_end", "entry", "held", "__weakref__")

    def __init__(self, ikey: bytes, seal: bytes, length: int, body_at: int, entry: Entry) -> None:
        self.ikey = ikey
        self.seal = seal
        self.length = length
        self.body_at = body_at
        self.body_end = body_at + len(entry.body)
        self.entry = entry
        # What holding it costs, roughly (tracemalloc: 2.35 KB with six fields and a head of
        # 257 bytes, of which the decoded fields about 1 KB), and its key (`Entry.key_bytes`:
        # copies of the path, up to the request-line limit): counted against `proof_bytes`.
        self.held = (
            PROOF_OVERHEAD_BYTES
            + len(entry.head)
            + sum(len(n) + len(v) + 100 for n, v in entry.headers)
            + entry.key_bytes()
        )


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(NodeRecord).decode
_decode_info = msgspec.msgpack.Decoder(Info).decode
_decode_fields = msgspec.msgpack.Decoder(tuple[str, ...]).decode


# A version's purge of the tier reads this many `Info` rows a read transaction, and checks the
# clock for its slice every `_CLOCK_EVERY` of them (a row costs its match keys and a check).
PURGE_STEP = 256
_CLOCK_EVERY = 32


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@lru_cache(maxsize=1024)
def primary_hash(primary: PrimaryKey) -> bytes:
    """Memoised: a cold miss asks for its key's hash five times (the lookup's read, the
    lease, the read after it, the store, the release); a repeat costs a dict lookup."""
    return _h(primary[0].encode("utf-8") + b" " + primary[1])


def item_key(primary: PrimaryKey, fields: tuple[str, ...], variant: VariantKey) -> bytes:
    if not fields and not variant:
        return primary_hash(primary) + _PLAIN
    return primary_hash(primary) + _h(_encode((fields, variant)))


# The second half of the item key of a resource stored without Vary: no `vary` row is written
# for it, `vary_fields` finds its record by this key instead.
_PLAIN = _h(_encode(((), ())))


def node_record(entry: Entry, via: bytes) -> NodeRecord:
    """The shared tier's `record_of` and the head, built at once (by position, in `Record`'s
    field order: building the `Record` first and copying it was half of a store's Python)."""
    e = entry
    return NodeRecord(
        e.primary[0],
        e.primary[1],
        e.vary_fields,
        e.variant,
        e.status,
        e.reason,
        e.headers,
        e.body,
        e.sha256,
        e.request_time,
        e.response_time,
        e.corrected_initial_age,
        e.lifetime,
        e.stale_while_revalidate_s,
        e.stale_if_error_s,
        e.must_revalidate,
        e.no_cache,
        e.etag,
        e.last_modified,
        e.date,
        e.upstream_cache_status,
        e.stored_at,
        e.head,
        via,
    )


def envelope(rec: NodeRecord) -> bytes:
    payload = _encode(rec)
    return _HDR.pack(MAGIC, xxhash.xxh3_128_digest(payload)) + payload


def open_envelope(value: bytes | memoryview) -> NodeRecord:
    """Raises Rejected for a torn, foreign or corrupt value."""
    if len(value) < _HDR.size:
        raise Rejected("truncated")
    magic, check = _HDR.unpack_from(value)
    if magic != MAGIC:
        raise Rejected("not a node-tier record of this format")
    payload = memoryview(value)[_HDR.size :]
    if xxhash.xxh3_128_digest(payload) != check:
        raise Rejected("checksum mismatch")
    try:
        return _decode_record(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise Rejected("undecodable") from e


def body_at(value: bytes | memoryview, body: bytes) -> int:
    """Where `body` lies in the sealed `value` it was decoded from (msgpack stores it verbatim
    after its bin header), or -1. Found by that header and the body's first bytes among the
    value's other bytes, then confirmed whole: an earlier run of equal bytes (an origin's
    field crafted so) is not taken for it. A search for the whole body instead cost ~1 ns a
    byte of it (34 µs at 30 KiB: the two-way search's set-up over the needle), on every
    record a worker proves."""
    n = len(body)
    if n < 256:
        head = b"\xc4" + n.to_bytes(1, "big")
    elif n < 65536:
        head = b"\xc5" + n.to_bytes(2, "big")
    else:
        head = b"\xc6" + n.to_bytes(4, "big")
    needle = head + body[:32]
    view = memoryview(value)
    # The body ends by the value's end: it starts no later than len(value) - n.
    window = bytes(view[_HDR.size : len(view) - n + len(needle)])
    start = 0
    while (i := window.find(needle, start)) >= 0:
        at = _HDR.size + i + len(head)
        if view[at : at + n].tobytes() == body:
            return at
        start = i + 1
    return -1


def tier_path(cfg: Config) -> Path:
    """`cache.node_tier_path`, or `node-cache` under the node's state directory."""
    if cfg.cache.node_tier_path:
        return Path(cfg.cache.node_tier_path)
    state = Path(cfg.state_dir) if cfg.state_dir else default_state_dir()
    return state / "node-cache"


def boot_id() -> bytes:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_bytes().strip()
    except OSError:
        return b"unknown"


# LMDB allows one Environment per file per process (its locks are per process): handles in
# one process (tests, tools) share it, counted.
_OPEN: dict[Path, list[Any]] = {}


def _open_env(path: Path, max_bytes: int) -> lmdb.Environment:
    key = path.resolve()
    held = _OPEN.get(key)
    if held is not None:
        held[1] += 1
        env: lmdb.Environment = held[0]
        return env
    env = _new_env(path, max_bytes)
    _OPEN[key] = [env, 1]
    return env


def _close_env(path: Path) -> None:
    key = path.resolve()
    held = _OPEN.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _OPEN[key]
        held[0].close()


def _new_env(path: Path, max_bytes: int) -> lmdb.Environment:
    path.mkdir(parents=True, exist_ok=True)
    return lmdb.open(
        str(path),
        map_size=map_size(max_bytes),
        max_dbs=len(DBS),
        sync=False,
        metasync=False,
        readahead=False,  # a cache larger than RAM: random reads only
        max_readers=512,
        # Commits through a writable map, not pwrite(): a store costs about half as much
        # ("Writes through the map"); only into disk blocks that exist.
        writemap=preallocated(path, max_bytes),
    )


def preallocated(path: Path, max_bytes: int) -> bool:
    """Whether the data file has disk blocks for its whole map (`preallocate`): only then
    may writes go through a writable map. Into a hole of a sparse file, a full disk raises
    SIGBUS in the worker, where a write() fails with an error the tier handles."""
    return _blocks_cover(path, map_size(max_bytes))


def _blocks_cover(path: Path, size: int) -> bool:
    try:
        st = os.stat(path / "data.mdb")
    except OSError:
        return False
    return st.st_size >= size and st.st_blocks * 512 >= size


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` lies on (the longest mount point above it in
    /proc/self/mountinfo), or "" when that cannot be read."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    where = str(path.resolve())
    best, kind = -1, ""
    for line in lines:
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not after:
            continue
        mount = parts[4].replace("\\040", " ")
        inside = where == mount or where.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best:
            best, kind = len(mount), after.split()[0]
    return kind


def reserve(path: Path, max_bytes: int, keep_free_bytes: int) -> str:
    """`preallocate` where it is safe and there is room, for the log: on a filesystem that
    writes a block where it was reserved (`IN_PLACE_FILESYSTEMS`; on a copy-on-write one an
    overwrite allocates anew, so reserved blocks prove nothing), when the disk keeps at least
    `keep_free_bytes` free after it. Anything else leaves the tier written by pwrite()."""
    kind = filesystem_of(path)
    if kind not in IN_PLACE_FILESYSTEMS:  # the caller logs what is returned
        return f"not preallocated ({kind or 'unknown'} filesystem)"
    try:
        st = os.stat(path / "data.mdb")
        vfs = os.statvfs(path)
    except OSError as e:
        log.warning("node tier %s: not preallocated (%s), written without a writable map", path, e)
        return "not preallocated"
    need = max(0, map_size(max_bytes) - st.st_blocks * 512)
    free = vfs.f_bavail * vfs.f_frsize
    if free - need < keep_free_bytes:
        log.warning(
            "node tier %s: not preallocated (%d MiB free, %d MiB needed and %d MiB kept free), "
            "written without a writable map",
            path,
            free >> 20,
            need >> 20,
            keep_free_bytes >> 20,
        )
        return "not preallocated (disk too full)"
    return preallocate(path, max_bytes)


def preallocate(path: Path, max_bytes: int) -> str:
    """Give the data file its map's disk blocks now, so the workers write through a writable
    map; what was done, for the log. A refusal (a full disk, a filesystem without fallocate)
    leaves the tier written by pwrite(), as without."""
    try:
        fd = os.open(path / "data.mdb", os.O_RDWR | os.O_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, map_size(max_bytes))
        finally:
            os.close(fd)
    except OSError as e:
        log.warning("node tier %s: not preallocated (%s), written without a writable map", path, e)
        return "not preallocated"
    return "preallocated" if preallocated(path, max_bytes) else "not preallocated"


def map_size(max_bytes: int) -> int:
    """Room for the live data, pages freed but still held by a reader, and B-tree overhead."""
    return 2 * max_bytes + (64 << 20)


# -- at node start (the supervisor, before workers) -------------------------------------------


def prepare(
    path: Path,
    max_bytes: int,
    *,
    clear: bool = False,
    prealloc: bool = False,
    keep_free_bytes: int = 0,
) -> str:
    """Make `path` a usable tier before any worker opens it: emptied for `--cache-clear`,
    moved aside (to `<path>.aside`, replacing an older one) when LMDB refuses it, it has
    another format, or it was open when the machine went down. Returns what was done, for the
    log; never raises for the tier's content (an unusable directory raises OSError). With
    `prealloc` the data file is given its map's disk blocks where that is safe and leaves
    `keep_free_bytes` of the disk free (`reserve`, "Writes through the map")."""
    if clear and path.exists():
        shutil.rmtree(path)
        outcome = "cleared"
    else:
        outcome = "opened"
    why = _check(path, max_bytes)
    if why is not None:
        aside = path.with_name(path.name + ".aside")
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
        log.warning("node tier %s: %s; moved to %s, starting empty", path, why, aside)
        outcome = f"rebuilt ({why})"
        if _check(path, max_bytes) is not None:  # a fresh directory cannot fail but loudly
            raise OSError(f"node tier {path}: cannot create a fresh tier")
    if prealloc and not preallocated(path, max_bytes):
        outcome += f", {reserve(path, max_bytes, keep_free_bytes)}"
    return outcome


def _check(path: Path, max_bytes: int) -> str | None:
    """Open (creating when absent), stamp this boot; why the tier is unusable, or None."""
    try:
        env = _open_env(path, max_bytes)
    except lmdb.Error as e:
        return f"unreadable ({type(e).__name__}: {e})"
    try:
        env.reader_check()  # slots of readers that died (SIGKILL) are freed
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            fmt = txn.get(b"format", db=meta)
            if fmt is None:
                if txn.stat(env.open_db(b"items", txn=txn))["entries"]:
                    return "records without a format stamp"
                txn.put(b"format", FORMAT, db=meta)
                txn.put(_BYTES, _U64.pack(0), db=env.open_db(b"index", txn=txn))
            elif fmt != FORMAT:
                return f"format {fmt!r}, this node writes {FORMAT!r}"
            elif txn.get(b"boot", db=meta) not in (boot_id(), None) and (
                txn.get(b"clean", db=meta) != b"1"
            ):
                return "left open when the machine went down (unsynced writes may be torn)"
            txn.put(b"boot", boot_id(), db=meta)
            txn.put(b"clean", b"0", db=meta)
            index = env.open_db(b"index", txn=txn)
            for key in list(_under(txn, index, _MARK)):  # no worker fetches yet
                txn.delete(key, db=index)
        env.sync(True)
        return None
    except lmdb.Error as e:
        return f"corrupt ({type(e).__name__}: {e})"
    finally:
        _close_env(path)


def close_clean(path: Path, max_bytes: int) -> None:
    """At orderly node stop, after the workers exited: flush to disk and say so, so the next
    boot trusts the tier."""
    try:
        env = _open_env(path, max_bytes)
        try:
            env.sync(True)
            meta = env.open_db(b"meta")  # before the write txn: it would start its own
            with env.begin(write=True) as txn:
                txn.put(b"clean", b"1", db=meta)
            env.sync(True)
        finally:
            _close_env(path)
    except (lmdb.Error, OSError) as e:
        log.warning("node tier %s: not marked clean: %s", path, e)


# -- in each worker ---------------------------------------------------------------------------


class NodeTier:
    def __init__(
        self,
        path: Path,
        max_bytes: int,
        max_object_bytes: int,
        stats: WorkerStats,
        *,
        clock: Callable[[], float] = time.time,
        uncacheable_s: float = 10.0,
        touch_delay_s: float = 0.0,
        touch_interval_s: float = 0.0,
        via: bytes = b"",
        overhead_bytes: int = 0,
        touch_one_in: int = 1,
        proof_bytes: int = 64 << 20,
    ) -> None:
        self.path = path
        # This worker's `Via` member and per-entry overhead: records carry their head rendered
        # (`NodeRecord.head`), so a read renders only when the node's name changed since.
        self.via = via
        self.overhead_bytes = overhead_bytes
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes
        self.stats = stats
        self.clock = clock
        try:
            self.env = _open_env(path, max_bytes)
        except lmdb.Error as e:
            raise NodeTierError(f"node tier {path}: {e}") from e
        try:
            # A worker killed inside a read transaction (SIGKILL, the OOM killer) leaves its
            # reader slot behind, and LMDB then cannot reuse any page freed after that
            # snapshot: the file grows to its map size and writes fail. A worker starting
            # (after such a death, the supervisor starts another) frees dead readers' slots.
            self.env.reader_check()
            meta = self.env.open_db(b"meta")
            with self.env.begin() as txn:
                fmt = txn.get(b"format", db=meta)
            if fmt == FORMAT:  # another format's file is left as it is (`prepare` moves it)
                self._db = {name.decode(): self.env.open_db(name) for name in DBS}
                self._items = self._db["items"]
                self._index = self._db["index"]
        except lmdb.Error as e:
            _close_env(path)
            raise NodeTierError(f"node tier {path}: {e}") from e
        if fmt != FORMAT:
            _close_env(path)
            raise NodeTierError(f"node tier {path}: format {fmt!r}, expected {FORMAT!r}")
        self._writemap = bool(self.env.flags()["writemap"])
        self._writable = True  # False once the map grew past its disk blocks (`_remap`)
        self._puts: dict[bytes, Entry] = {}
        self._touches: set[bytes] = set()
        self._releases: set[bytes] = set()
        self._uncacheable: set[bytes] = set()
        self._lock_fd = _open_lock(path)  # the fetch leases' file; -1: none (every worker fetches)
        self.uncacheable_s = uncacheable_s
        self.touch_delay_s = touch_delay_s
        self.touch_one_in = max(1, touch_one_in)
        self._reads = 0  # reads served, for touching one in `touch_one_in`
        # Keys touched in this interval and the one before (`_touch`): swapped, never swept.
        self.touch_interval_s = touch_interval_s
        self._touched_now: set[bytes] = set()
        self._touched_before: set[bytes] = set()
        self._touched_since = clock()
        self._scheduled = False
        self._touch_timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Records this worker proved for the memo's hits (`get_hot`), by item key, bounded by
        # `proof_bytes` (emptied whole when full, as the memo is); the entry whose body the
        # last hot hit lent.
        self.proof_bytes = proof_bytes
        self._proofs: dict[bytes, Proven] = {}
        self._proofs_held = 0
        self._lent: Entry | None = None
        # The read transaction this loop turn's proven hits share (`_turn_reader`), ended at
        # the next turn (`end_turn`) or before this worker's next write, whichever is first.
        self._turn: Any = None
        # The last primary `vary_fields` found nothing for, and the id of the snapshot it
        # looked in: while no transaction has been committed since (`_still_absent`), a cold
        # miss's read after its lease would find nothing either, and is not made again.
        self._absent: tuple[bytes, int] | None = None

    # -- read (synchronous: inside lookup) ----------------------------------------------------

    def _read(self, fn: Callable[[Any], Any], *, buffers: bool = False) -> Any:
        """`fn(txn)` in a read transaction; with `buffers` values are views of the mapped
        pages, valid only inside it."""
        try:
            with self._begin(buffers) as txn:
                return fn(txn)
        except lmdb.MapResizedError:
            self._remap()
            with self._begin(buffers) as txn:
                return fn(txn)

    def _begin(self, buffers: bool) -> Any:
        return self.env.begin(buffers=True) if buffers else self.env.begin(buffers=False)

    def vary_fields(self, primary: PrimaryKey) -> tuple[str, ...] | None:
        if self._closed:
            return None
        hp = primary_hash(primary)
        if self._still_absent(hp):
            return None

        def read(txn: Any) -> tuple[()] | bytes | None:
            if txn.get(hp + _PLAIN, db=self._items) is not None:
                return ()  # stored without Vary: no `vary` row ("Layout")
            raw = txn.get(_VARY + hp, db=self._index)
            if raw is None:
                self._absent = (hp, txn.id())
                return None
            return bytes(raw)

        raw = self._read(read, buffers=True)
        if raw is None or isinstance(raw, tuple):
            return raw
        try:
            return _decode_fields(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._reject(primary_hash(primary), "vary record undecodable", whole_primary=True)
            return None

    def _still_absent(self, hp: bytes) -> bool:
        """Whether `hp` was absent from the snapshot of the last commit: the same read made
        now would see that snapshot (the meta page's last transaction id is a read of shared
        memory; a read transaction costs a reader slot, two B-tree lookups and more Python).
        A commit by any process since, this one's included, makes it look again."""
        absent = self._absent
        if absent is None or absent[0] != hp:
            return False
        try:
            if self.env.info()["last_txnid"] == absent[1]:
                return True
        except lmdb.Error:
            pass
        self._absent = None
        return False

    def get(
        self,
        primary: PrimaryKey,
        variant: VariantKey,
        fields: tuple[str, ...],
        target: Target | None = None,
    ) -> Entry | None:
        """The proven entry stored for this key, or None (a miss, or a record that failed its
        proof: deleted and counted). The entry has its head but is not yet finished for this
        worker (site, parsed Cache-Control, match keys): the facade does that."""
        if self._closed:
            return None
        return self._load(item_key(primary, fields, variant), primary, variant, fields, target)

    def get_at(self, ikey: bytes, target: Target) -> Entry | None:
        """`get` for a key the caller already holds as an item key and a canonical target,
        without Vary (the memo's node-tier hits): the same proof, nothing parsed again."""
        if self._closed:
            return None
        return self._load(ikey, (target.authority, target.raw_path_query), (), (), target)

    def get_hot(self, ikey: bytes, target: Target, p: Proven | None = None) -> Proven | None:
        """`get_at` for the memo's hits: a record this worker proved before (`p`, when the
        caller holds it, else looked up by `ikey`) is answered by `get_proven` (checked to be
        the same record, its body copied), any other is proven (`prove_at`) and remembered
        within `proof_bytes`. Returns the proof, whose entry is lent with this read's body
        until the next `get_hot` or the end of the loop turn, which empty it: no body stays
        held here. A proof not remembered (`proof_bytes` 0, or emptied since) is held by no
        one once the caller lets it go (the facade's `NodeRef` reaches it weakly)."""
        lent = self._lent
        if lent is not None:
            lent.body = b""
            self._lent = None
        proofs = self._proofs
        if p is None:
            p = proofs.get(ikey)
        if p is not None:
            if self.get_proven(p) is not None:
                self._lent = p.entry
                return p
            self.forget_proof(ikey)  # rewritten or gone: proven anew, or a miss
        p = self.prove_at(ikey, target)
        if p is None:
            return None
        if self.proof_bytes > 0:
            if self._proofs_held + p.held > self.proof_bytes:
                proofs.clear()
                self._proofs_held = 0
            proofs[ikey] = p
            self._proofs_held += p.held
        self._lent = p.entry
        return p

    def _return_lent(self) -> None:
        lent = self._lent
        if lent is not None:
            lent.body = b""
            self._lent = None

    def forget_proof(self, ikey: bytes) -> None:
        """Drop this worker's proof of `ikey` (the facade adopted the record into memory)."""
        p = self._proofs.pop(ikey, None)
        if p is not None:
            self._proofs_held -= p.held

    def prove_at(self, ikey: bytes, target: Target) -> Proven | None:
        """`get_at`, and what lets `get_proven` answer this record's later reads without
        proving or decoding it again (see `Proven`); None as `get_at`."""
        if self._closed:
            return None
        found: list[tuple[bytes, int, int]] = []
        entry = self._load(ikey, (target.authority, target.raw_path_query), (), (), target, found)
        if entry is None or not found:
            return None
        return Proven(ikey, *found[-1], entry)

    def get_proven(self, p: Proven) -> Entry | None:
        """The memo's node-tier hit on a record this worker proved (`prove_at`): its entry,
        with the body copied from the mapped value, when the value stored under its key now
        is the one proven (the same length and seal); None when it is not (rewritten by any
        worker, purged, evicted: `prove_at` reads it as it is now). A compare of 20 bytes
        and one copy of the body: no checksum, no decoding, no `Entry`, and in a running
        loop no transaction of its own (`_turn_reader`). The body is copied rather than lent
        as a view of the map: the transport may keep what it is given past the turn, and
        the answer's format would copy a view once more (bytes % memoryview makes bytes)."""
        if self._closed:
            return None
        txn = self._turn or self._turn_reader()
        if txn is None:
            return None
        try:
            raw = txn.get(p.ikey)
            if raw is None or len(raw) != p.length or raw[: _HDR.size] != p.seal:
                return None
            body = raw[p.body_at : p.body_end].tobytes()
        finally:
            if txn is not self._turn:
                txn.abort()
        entry = p.entry
        entry.body = body
        self.stats.node_hits += 1
        self._reads += 1
        if self._reads % self.touch_one_in == 0:
            self._touch(p.ikey)
        return entry

    def _turn_reader(self) -> Any:
        """A read transaction (values as views of the mapped pages) for this loop turn's
        proven hits, ended by `end_turn` at the next turn: a begin and an abort per hit were
        a quarter of a proven hit (0.6 of 2.5 us at 20,000 items, in one process), and a
        worker under load answers 10-20 requests a turn (epoll_pwait per response: 0.05-0.09,
        node-hit). A turn's hits read the tier as it was at the turn's first: a store or
        purge another worker committed since is seen from the next turn on (as by a request
        that came a turn earlier; a purge is acknowledged by every worker, each in a turn of
        its own), and this worker's own writes end it first (`_write`). Without a running
        loop (tools, tests) a transaction for one read, which the caller aborts; None when
        the map was resized (`prove_at` reads through `_read`, which follows the new size)."""
        try:
            txn = self.env.begin(db=self._items, buffers=True)
        except lmdb.MapResizedError:
            return None
        try:
            asyncio.get_running_loop().call_soon(self.end_turn)
        except RuntimeError:
            return txn
        self._turn = txn
        return txn

    def end_turn(self) -> None:
        """End the turn's read transaction (and the lent body, as the next `get_hot` would)."""
        txn = self._turn
        if txn is not None:
            self._turn = None
            self._return_lent()
            txn.abort()

    def _load(
        self,
        ikey: bytes,
        primary: PrimaryKey,
        variant: VariantKey,
        fields: tuple[str, ...],
        target: Target | None,
        proof: list[tuple[bytes, int, int]] | None = None,
    ) -> Entry | None:
        """The proven entry under `ikey`; with `proof`, the value's seal (magic and checksum),
        its length and where its body lies in it are appended there (`prove_at`)."""
        items = self._items

        def read(txn: Any) -> NodeRecord | None:
            # Opened on the mapped pages (no copy of the value first); the decoded record
            # holds copies, valid after the transaction.
            raw = txn.get(ikey, db=items)
            if raw is None:
                return None
            rec = open_envelope(raw)
            if proof is not None:
                at = body_at(raw, rec.body)
                if at >= 0:
                    proof.append((bytes(raw[: _HDR.size]), len(raw), at))
            return rec

        try:
            rec = self._read(read, buffers=True)
            if rec is None:
                self.stats.node_misses += 1
                return None
            if rec.vary_fields != fields:
                raise Rejected("stored under other Vary fields")
            entry = entry_of(rec, primary, lambda f: variant, verify_body=False, target=target)
        except Rejected as e:
            self._reject(ikey, str(e))
            return None
        if rec.via == self.via or not self.via:
            entry.set_head(rec.head, self.overhead_bytes)
        else:
            entry.render_head(self.overhead_bytes, self.via)
        self.stats.node_hits += 1
        self._reads += 1
        if self._reads % self.touch_one_in == 0:
            self._touch(ikey)
        return entry

    def _reject(self, key: bytes, why: str, *, whole_primary: bool = False) -> None:
        log.warning("node tier: dropped a record (%s)", why)
        self.stats.node_rejected += 1
        self.flush()
        try:
            with self._write() as txn:
                if whole_primary:
                    self._delete_primary(txn, key)
                else:
                    self._delete(txn, key)
        except lmdb.Error as e:  # not served either way: `_load` answers None
            self.stats.node_errors += 1
            log.warning("node tier %s: a rejected record not deleted: %s", self.path, e)

    # -- write --------------------------------------------------------------------------------

    def put(self, entry: Entry) -> bool:
        """Queue `entry` for the end of this loop turn; False when it is too large."""
        if self._closed or entry.size > self.max_object_bytes or entry.size > self.max_bytes:
            return False
        self._puts[item_key(entry.primary, entry.vary_fields, entry.variant)] = entry
        self._schedule()
        return True

    def touch(self, entry: Entry) -> None:
        self._touch(item_key(entry.primary, entry.vary_fields, entry.variant))

    def _touch(self, ikey: bytes) -> None:
        """Queue `ikey`'s access tick, unless this worker queued one within the last
        `touch_interval_s` (as Varnish's lru_interval: an order a few seconds coarse evicts
        the same objects, and each tick costs four LMDB operations, a tenth of a node-tier
        hit). Two generations of keys, swapped once per interval, both dropped after two:
        O(1) per hit, bounded by what two intervals touch."""
        interval = self.touch_interval_s
        if interval > 0:
            now = self.clock()
            elapsed = now - self._touched_since
            if elapsed >= interval:
                self._touched_before = self._touched_now if elapsed < 2 * interval else set()
                self._touched_now, self._touched_since = set(), now
            if ikey in self._touched_now or ikey in self._touched_before:
                return
            self._touched_now.add(ikey)
        self._touches.add(ikey)
        self._schedule_touches()

    def _schedule_touches(self) -> None:
        """Touches wait up to `touch_delay_s` for a batch (stores and releases do not: they
        go at the end of the loop turn, and take the waiting touches with them)."""
        if self.touch_delay_s <= 0:
            self._schedule()
            return
        if self._scheduled or self._touch_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._touch_timer = loop.call_later(self.touch_delay_s, self._touches_due)

    def _touches_due(self) -> None:
        self._touch_timer = None
        self.flush()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop (tools, tests): write now
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the queued stores and touches in one transaction, then evict to the bound."""
        self._scheduled = False
        if self._closed or not (self._puts or self._touches or self._releases):
            return
        puts, self._puts = self._puts, {}
        touches, self._touches = self._touches, set()
        releases, self._releases = self._releases, set()
        marks, self._uncacheable = self._uncacheable, set()
        if touches and self.touch_interval_s > 0:
            try:
                touches = self._read(lambda txn: self._due(txn, touches, puts))
            except lmdb.Error as e:  # written as they are, with the rest of the batch
                log.warning("node tier %s: touches not filtered: %s", self.path, e)
        if not (puts or touches or marks):
            self._unlock(releases)  # nothing to write (an error, a refused answer): no commit
            return
        try:
            with self._write() as txn:
                tick = int(self.clock() * 1e6)
                added = 0
                for ikey, entry in puts.items():
                    added += self._store(txn, ikey, entry, tick)
                    touches.discard(ikey)
                # The count once for the batch (a get and a put), and what eviction reads.
                held = self._add_bytes(txn, added) if added else self._bytes(txn)
                for ikey in touches:
                    self._retick(txn, ikey, tick)
                self._evict(txn, held)
                until = self.clock() + self.uncacheable_s
                for hp in marks:
                    txn.put(_MARK + hp, _LEASE.pack(0, until), db=self._index)
        except lmdb.MapFullError:
            self.stats.node_errors += 1
            log.warning("node tier %s: map full; %d stores dropped", self.path, len(puts))
        except lmdb.Error as e:
            self.stats.node_errors += 1
            log.warning("node tier %s: write failed: %s", self.path, e)
        else:
            self.stats.node_stores += len(puts)
        finally:
            self._unlock(releases)  # after the commit: a waiter finds the entry first

    # -- the fetch lease (coalescing across workers) --------------------------------------------

    def lease(self, primary: PrimaryKey) -> bool:
        """Take the node-wide lease to fetch `primary`: True when this worker now holds it, or
        the key is marked not storable (then it holds nothing: every worker fetches), or the
        tier cannot say (as without a node tier); False while another worker holds it."""
        if self._closed or self._lock_fd < 0:
            return True
        hp = primary_hash(primary)
        if self._lock(hp, fcntl.F_WRLCK):
            return True
        return self._marked(hp)

    def leased_elsewhere(self, primary: PrimaryKey) -> bool:
        """Whether another worker holds the lease on `primary` (and no mark lets it be)."""
        if self._closed or self._lock_fd < 0:
            return False
        hp = primary_hash(primary)
        try:
            got = fcntl.fcntl(self._lock_fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, hp))
        except OSError as e:
            self._lock_failed(e)
            return False
        return _FLOCK.unpack(got)[0] != fcntl.F_UNLCK and not self._marked(hp)

    def release(self, primary: PrimaryKey, *, uncacheable: bool = False) -> None:
        """Give the lease back once this loop turn's stores are committed (`flush`). After an
        `uncacheable` answer a mark is written with them, for `uncacheable_s`: the other
        workers' misses for the key then go to the origin in parallel, none waits (their own
        hit-for-miss, across workers)."""
        if self._closed:
            return
        hp = primary_hash(primary)
        self._releases.add(hp)
        if uncacheable:
            self._uncacheable.add(hp)
        else:
            self._uncacheable.discard(hp)
        self._schedule()

    def _lock(self, hp: bytes, kind: int) -> bool:
        """Set (F_WRLCK) or drop (F_UNLCK) this description's lock on `hp`'s byte; False when
        another description holds it. A failure of the file itself counts as held by none."""
        try:
            fcntl.fcntl(self._lock_fd, fcntl.F_OFD_SETLK, _flock(kind, hp))
        except OSError as e:
            if e.errno in _BUSY:
                return False
            self._lock_failed(e)
        return True

    def _lock_failed(self, e: OSError) -> None:
        self.stats.node_errors += 1
        log.warning("node tier %s: fetch lease lock failed: %s", self.path, e)

    def _marked(self, hp: bytes) -> bool:
        """Whether a live mark says `hp`'s answers are not storable."""
        held = self._read(lambda txn: txn.get(_MARK + hp, db=self._index))
        return held is not None and _LEASE.unpack(held)[1] > self.clock()

    def _unlock(self, releases: set[bytes]) -> None:
        """After the commit (or its failure: a lease must not outlive a failed batch, waiters
        would wait out coalesce_wait_s)."""
        if self._lock_fd < 0:
            return
        for hp in releases:
            self._lock(hp, fcntl.F_UNLCK)

    def _write(self) -> Any:
        self.end_turn()  # this worker's hits read what it writes from now on
        if not self._writable:
            raise lmdb.Error("the map grew past its disk blocks: this handle no longer writes")
        try:
            return self.env.begin(write=True)
        except lmdb.MapResizedError:
            self._remap()
            return self._write()

    def _remap(self) -> None:
        """Follow a map another process grew (a larger bound after SIGHUP). A handle that
        writes through the map writes no more when the grown map has no disk blocks (into
        a hole a full disk raises SIGBUS): its worker is being replaced by one opened for the
        new bound, which writes, and its purges reach the tier through those workers."""
        self.env.set_mapsize(0)
        if self._writable and self._writemap:
            if not _blocks_cover(self.path, self.env.info()["map_size"]):
                self._writable = False
                log.warning("node tier %s: map grew past its disk blocks: writes stop", self.path)

    def _store(self, txn: Any, ikey: bytes, entry: Entry, tick: int) -> int:
        """Write one item and its index rows; returns the bytes it adds to the tier's count
        (the caller adds a batch's at once)."""
        index = self._index
        hp = ikey[:16]
        old_fields = txn.get(_VARY + hp, db=index)
        fields = None if ikey[16:] == _PLAIN else _encode(entry.vary_fields)
        if old_fields != fields:  # the resource's Vary changed (or its first variant)
            self._delete_primary(txn, hp)  # other variants go
            if fields is not None:
                txn.put(_VARY + hp, fields, db=index)
        value = envelope(node_record(entry, self.via))
        items = self._items
        # A new key (a cold miss) is one put; a key stored before loses its old rows first.
        if not txn.put(ikey, value, db=items, overwrite=False):
            self._delete(txn, ikey)  # as its primary's last variant, with the vary row
            txn.put(ikey, value, db=items)
            if fields is not None:
                txn.put(_VARY + hp, fields, db=index)
        t = entry.target
        keys = entry.keys if entry.keys is not None else match_keys(t.host, t.path, t.query)
        size = len(value) + INDEX_OVERHEAD_BYTES
        info = Info(tick, size, t.host, t.path, t.query, entry.sha256, keys.url_key)
        txn.put(_INFO + ikey, _encode(info), db=index)
        txn.put(_ORDER + _U64.pack(tick) + ikey, b"", db=index)
        txn.put(_DIGEST + entry.sha256 + ikey, b"", db=index)
        txn.put(_url_row(keys.url_key, exact=True) + ikey, b"", db=index)
        return size

    def _due(self, txn: Any, touches: set[bytes], puts: dict[bytes, Entry]) -> set[bytes]:
        """The touches whose items' ticks are older than `touch_interval_s`: an item any
        worker stored or ticked more recently keeps its place (the order is that coarse
        anyway), so with W workers a key is written about once per interval, not W times,
        and a batch that has nothing left takes no write transaction (its lock, its commit
        and the pages it writes were a fifth of a node-tier hit's system time)."""
        since = int((self.clock() - self.touch_interval_s) * 1e6)
        due = set()
        for ikey in touches:
            if ikey in puts:
                continue  # stored in this batch: ticked with it
            raw = txn.get(_INFO + ikey, db=self._index)
            if raw is not None and _decode_info(raw).tick < since:
                due.add(ikey)
            else:  # not written: this worker's next hit may try again
                self._touched_now.discard(ikey)
                self._touched_before.discard(ikey)
        return due

    def _retick(self, txn: Any, ikey: bytes, tick: int) -> None:
        index = self._index
        raw = txn.get(_INFO + ikey, db=index)
        if raw is None:
            return
        info = _decode_info(raw)
        txn.delete(_ORDER + _U64.pack(info.tick) + ikey, db=index)
        info.tick = tick
        txn.put(_INFO + ikey, _encode(info), db=index)
        txn.put(_ORDER + _U64.pack(tick) + ikey, b"", db=index)

    def _evict(self, txn: Any, held: int) -> None:
        """Evict the oldest items until the tier's count, `held` bytes now, is within bound."""
        over = held - self.max_bytes
        if over <= 0:
            return
        victims, stray = [], []
        index = self._index
        for key in _under(txn, index, _ORDER):
            ikey = key[-32:]
            raw = txn.get(_INFO + ikey, db=index)
            if raw is None:
                stray.append(key)  # leads to no item (its `Info` was undecodable): goes too
                continue
            victims.append(ikey)
            over -= _decode_info(raw).size
            if over <= 0:
                break
        for key in stray:
            txn.delete(key, db=index)
        for ikey in victims:
            self._delete(txn, ikey)
        self.stats.node_evictions += len(victims)

    def _bytes(self, txn: Any) -> int:
        raw = txn.get(_BYTES, db=self._index)
        return _U64.unpack(raw)[0] if raw is not None else 0

    def _add_bytes(self, txn: Any, n: int) -> int:
        """Add `n` to the tier's byte count; returns the new count."""
        held = max(0, self._bytes(txn) + n)
        txn.put(_BYTES, _U64.pack(held), db=self._index)
        return held

    def _delete(self, txn: Any, ikey: bytes) -> int:
        """Delete one item and its index rows; 1 when it was there."""
        index, items = self._index, self._items
        raw = txn.get(_INFO + ikey, db=index)
        gone = txn.delete(ikey, db=items)
        if raw is None:
            return int(gone)
        txn.delete(_INFO + ikey, db=index)
        try:
            info = _decode_info(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.stats.node_rejected += 1  # its other rows stay, and lead nowhere
            return 1
        txn.delete(_ORDER + _U64.pack(info.tick) + ikey, db=index)
        txn.delete(_DIGEST + info.sha256 + ikey, db=index)
        txn.delete(_url_row(info.url_key, exact=True) + ikey, db=index)
        self._add_bytes(txn, -info.size)
        hp = ikey[:16]
        if ikey[16:] != _PLAIN and not any(True for _ in _under(txn, items, hp)):
            txn.delete(_VARY + hp, db=index)  # its last variant
        return 1

    def _delete_primary(self, txn: Any, hp: bytes) -> int:
        n = sum(self._delete(txn, ikey) for ikey in list(_under(txn, self._items, hp)))
        txn.delete(_VARY + hp, db=self._index)
        return n

    # -- remove and purge (written at once, after what is queued) -----------------------------

    def _purge(self, fn: Callable[[Any], int]) -> int:
        if self._closed:
            return 0
        self.flush()
        try:
            with self._write() as txn:
                n = fn(txn)
        except lmdb.Error as e:
            self.stats.node_errors += 1
            log.error("node tier %s: purge failed: %s", self.path, e)
            return 0
        self.stats.node_purged += n
        return n

    def remove(self, entry: Entry) -> int:
        ikey = item_key(entry.primary, entry.vary_fields, entry.variant)
        self._puts.pop(ikey, None)
        return self._purge(lambda txn: self._delete(txn, ikey))

    def purge_primary(self, primary: PrimaryKey) -> int:
        hp = primary_hash(primary)
        for ikey in [k for k in self._puts if k[:16] == hp]:
            del self._puts[ikey]
        return self._purge(lambda txn: self._delete_primary(txn, hp))

    def _purge_indexed(self, starts: tuple[bytes, ...], pred: Callable[[Info], bool]) -> int:
        """Purge the items of the index rows under each of `starts` that `pred` says are
        meant (a row leads to a candidate: a hash or a cut url row may lead to others);
        a row that leads to no item goes with them."""

        def run(txn: Any) -> int:
            index = self._index
            n, seen = 0, set()
            for start in starts:
                for key in list(_under(txn, index, start)):
                    ikey = key[-32:]
                    if ikey in seen:
                        continue  # two ranges cut to one (`URLSEQ_KEY_BYTES`)
                    seen.add(ikey)
                    raw = txn.get(_INFO + ikey, db=self._index)
                    if raw is None:
                        txn.delete(key, db=index)
                        n += self._delete(txn, ikey)
                    elif pred(_decode_info(raw)):
                        n += self._delete(txn, ikey)
            return n

        return self._purge(run)

    def purge_host(self, host: str) -> int:
        return self._purge_indexed(_host_rows(host), lambda i: i.host == host)

    def purge_prefix(self, host: str, path: str) -> int:
        under = path.rstrip("/") + "/"
        return self._purge_indexed(
            _host_rows(host),
            lambda i: i.host == host and (i.path == path or i.path.startswith(under)),
        )

    def purge_digest(self, digest: bytes) -> int:
        return self._purge_indexed((_DIGEST + digest,), lambda i: i.sha256 == digest)

    def purge_url_key(self, url_key: str, listed: Callable[[MatchKeys], bool]) -> int:
        """Items whose target has this blocklist url key and that `listed` says are listed."""
        return self._purge_indexed(
            (_url_row(url_key, exact=True),),
            lambda i: i.url_key == url_key and listed(match_keys(i.host, i.path, i.query)),
        )

    def purge_host_key(self, host_key: str) -> int:
        """Items whose blocklist host key is `host_key` or a subdomain (a host entry): the
        url rows of the host itself and the range of its subdomains (labels reversed), each
        item confirmed as the blocklist matches it (`host_suffixes`)."""
        return self._purge_indexed(
            (
                _url_row(host_key + "/", exact=False),
                _URL + _utf8(_reversed(host_key) + ".")[:URLSEQ_KEY_BYTES],
            ),
            lambda i: host_key in host_suffixes(i.url_key.partition("/")[0]),
        )

    def purge_prefix_key(self, prefix_key: str) -> int:
        """Items a prefix entry with this key lists: "host/" every item of that host key;
        "host/a" the url key itself and the range under "host/a/"."""
        host, _, path = prefix_key.partition("/")
        if not path:
            return self._purge_indexed(
                (_url_row(prefix_key, exact=False),),
                lambda i: i.url_key.partition("/")[0] == host,
            )
        below = prefix_key + "/"
        return self._purge_indexed(
            (_url_row(prefix_key, exact=True), _url_row(below, exact=False)),
            lambda i: i.url_key == prefix_key or i.url_key.startswith(below),
        )

    async def purge_listed(
        self,
        listed: Callable[[MatchKeys, bytes], bool],
        step: int = PURGE_STEP,
        *,
        slice_s: float,
    ) -> int:
        """Walk every item's `Info` (never its record), `step` at a time, and purge those
        `listed` says are listed; the loop is given back whenever `slice_s` has passed
        (`blocklist.purge_slice_s`; the clock read every `_CLOCK_EVERY` items) and after
        every step's purge, a write."""
        purged, after = 0, b""
        clock = time.perf_counter
        until = clock() + slice_s
        while not self._closed:

            def read_batch(txn: Any, start: bytes = after) -> list[tuple[bytes, Info | None]]:
                return self._infos_after(txn, start, step)

            batch = self._read(read_batch)
            if not batch:
                break
            after = batch[-1][0]
            doomed = []
            for n, (k, i) in enumerate(batch, 1):
                if i is None or listed(match_keys(i.host, i.path, i.query), i.sha256):
                    doomed.append(k)
                if n % _CLOCK_EVERY == 0 and clock() > until:
                    await asyncio.sleep(0)
                    until = clock() + slice_s
            if doomed:

                def delete_doomed(txn: Any, keys: list[bytes] = doomed) -> int:
                    return sum(self._delete(txn, k) for k in keys)

                purged += self._purge(delete_doomed)
                await asyncio.sleep(0)
                until = clock() + slice_s
        return purged

    def _infos_after(self, txn: Any, after: bytes, step: int) -> list[tuple[bytes, Info | None]]:
        """Up to `step` (item key, Info) pairs after `after`; None for an undecodable Info."""
        out: list[tuple[bytes, Info | None]] = []
        with txn.cursor(db=self._index) as cur:
            if not cur.set_range(_INFO + after):
                return out
            for k, v in cur.iternext():
                if not k.startswith(_INFO):
                    break
                if k[1:] == after:
                    continue
                try:
                    out.append((k[1:], _decode_info(v)))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    out.append((k[1:], None))
                if len(out) >= step:
                    break
        return out

    # -- report and lifecycle -----------------------------------------------------------------

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) in the tier: the node's, the same from every worker."""
        if self._closed:
            return 0, 0

        def read(txn: Any) -> tuple[int, int]:
            return txn.stat(self._items)["entries"], self._bytes(txn)

        result: tuple[int, int] = self._read(read)
        return result

    def close(self) -> None:
        if self._closed:
            return
        self.end_turn()
        if self._touch_timer is not None:
            self._touch_timer.cancel()
            self._touch_timer = None
        self.flush()
        self._closed = True
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # and with it every lease this handle held
            self._lock_fd = -1
        _close_env(self.path)


def _open_lock(path: Path) -> int:
    """The lease file's descriptor (its own open file description: a lock is this handle's),
    or -1 when it cannot be opened (logged: every worker then fetches for itself)."""
    try:
        return os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        log.warning("node tier %s: no fetch leases (%s): misses are not coalesced", path, e)
        return -1


def _flock(kind: int, hp: bytes) -> bytes:
    """A `struct flock` for `hp`'s byte of the lease file (62 bits of the key's hash)."""
    return _FLOCK.pack(kind, os.SEEK_SET, int.from_bytes(hp[:8], "big") >> 2, 1, 0)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _reversed(host: str) -> str:
    return ".".join(reversed(host.split(".")))


@lru_cache(maxsize=4096)
def _url_host(chost: str) -> str:
    """A canonical host as url rows spell it: labels reversed ("a.example.com" becomes
    "com.example.a"), so a domain's subdomains are one range beside its own; a host without
    parent domains (`host_suffixes`: an IP literal, an overlong name) as it is. Memoised: a
    node serves few hosts."""
    return _reversed(chost) if len(host_suffixes(chost)) > 1 else chost


def _url_row(url_key: str, *, exact: bool) -> bytes:
    """The start of an item's url row for `url_key` (the item key follows), or, not `exact`,
    of the range of every url key that begins with `url_key`. An exact row ends with a NUL,
    so one url key's rows are not mixed with longer keys' ("host/a" and "host/ab"). Cut at
    `URLSEQ_KEY_BYTES` (LMDB keys end at 511 bytes): longer keys share a range, and every
    purge confirms each item against its `Info`."""
    host, _, path = url_key.partition("/")
    row = _utf8(_url_host(host) + "/" + path)
    return _URL + (row + b"\0" if exact else row)[:URLSEQ_KEY_BYTES]


def _host_rows(host: str) -> tuple[bytes, ...]:
    """The url rows of every item whose target host is `host` (a purge by host or prefix
    through the admin API: confirmed by `Info.host`)."""
    return (_url_row(canonical_host(host) + "/", exact=False),)


def _under(txn: Any, db: Any, prefix: bytes) -> Iterator[bytes]:
    """Keys of `db` that start with `prefix`."""
    with txn.cursor(db=db) as cur:
        if not cur.set_range(prefix):
            return
        for key in cur.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                return
            yield key
