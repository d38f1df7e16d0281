"""The node tier (proxy/cache/node.py) in one process and across two: round trips with their
proof, Vary, eviction by access age, every purge by its index, torn and foreign records
dropped and counted, and a broken or old-format tier moved aside at start."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import multiprocessing
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest

from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.cache.node import (
    _INFO,
    FORMAT,
    INDEX_OVERHEAD_BYTES,
    NodeTier,
    NodeTierError,
    _decode_info,
    boot_id,
    envelope,
    item_key,
    node_record,
    prepare,
    primary_hash,
)
from proxy.cache.tiered import NODE_DETAIL, TieredCache
from proxy.metrics import WorkerStats
from tests.cache.test_shared import entry

MiB = 1 << 20


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "node-cache"
    assert prepare(p, 64 * MiB) == "opened"
    return p


def tier(path: Path, max_bytes: int = 64 * MiB) -> NodeTier:
    return NodeTier(path, max_bytes, 8 * MiB, WorkerStats([]))


def test_an_absence_is_read_again_only_after_a_commit(path: Path) -> None:
    """A cold miss reads the tier at its lookup and again after its lease: the second read is
    skipped while no transaction was committed since the first (same snapshot, same answer),
    and made as soon as any process committed one."""
    a, b = tier(path), tier(path)
    primary = ("example.com", b"/absent")
    reads = 0
    read = b._read

    def counted(fn: Any, **kw: Any) -> Any:
        nonlocal reads
        reads += 1
        return read(fn, **kw)

    b._read = counted  # type: ignore[method-assign]
    assert b.vary_fields(primary) is None and reads == 1
    assert b.vary_fields(primary) is None and reads == 1  # nothing committed: not read again
    assert b.vary_fields(("example.com", b"/other")) is None and reads == 2  # another key
    assert b.vary_fields(primary) is None and reads == 3  # the last absence was /other's
    assert b.vary_fields(primary) is None and reads == 3
    a.put(entry("/absent", b"stored by another worker"))  # committed at once (no loop)
    assert b.vary_fields(primary) == () and reads == 4  # read again: found
    assert b.vary_fields(primary) == () and reads == 5  # found answers are always read
    c = ("example.com", b"/c")
    assert b.vary_fields(c) is None and reads == 6
    b.put(entry("/unrelated", b"this handle's own commit"))
    assert b.vary_fields(c) is None and reads == 7  # any commit makes it look again
    a.purge_primary(primary)
    assert b.vary_fields(primary) is None and reads == 8


async def test_a_batch_counts_the_bytes_of_each_store(path: Path, tmp_path: Path) -> None:
    """One loop turn's stores are committed together and counted once (a get and a put of
    the count for the batch): the count is what one commit per store gives, overwrites and
    evictions included."""
    other = tmp_path / "one-by-one"
    prepare(other, 64 * MiB)
    batched, alone = tier(path), tier(other)
    entries = [entry(f"/b{i}", b"x" * (100 * i + 1)) for i in range(5)]
    entries.append(entry("/b1", b"a new body for /b1, stored again in the same batch"))
    for e in entries:
        batched.put(e)  # queued for the end of the turn
    assert batched.usage() == (0, 0)
    await asyncio.sleep(0)
    for e in entries:
        alone.put(e)
        alone.flush()
    assert batched.usage() == alone.usage() and batched.usage()[0] == 5
    again = [entry("/b2", b"y" * 7), entry("/b9", b"z" * 9)]
    for e in again:
        batched.put(e)
        alone.put(e)
        alone.flush()
    batched.flush()
    assert batched.usage() == alone.usage() and batched.usage()[0] == 6


def test_a_stored_entry_is_read_back_proven(path: Path) -> None:
    a, b = tier(path), tier(path)  # two workers' handles on one tier
    a.put(entry("/a", b"body a"))
    assert b.vary_fields(("example.com", b"/a")) == ()
    got = b.get(("example.com", b"/a"), (), ())
    assert got is not None and got.body == b"body a" and got.etag == '"v1"'
    assert b.stats.node_hits == 1
    assert b.get(("example.com", b"/other"), (), ()) is None
    assert b.stats.node_misses == 1
    assert a.usage()[0] == b.usage()[0] == 1


def test_variants_and_a_vary_change(path: Path) -> None:
    t = tier(path)
    t.put(entry("/v", b"gz", vary=("accept-encoding",), variant=("gzip",)))
    t.put(entry("/v", b"id", vary=("accept-encoding",), variant=("",)))
    assert t.vary_fields(("example.com", b"/v")) == ("accept-encoding",)
    got = t.get(("example.com", b"/v"), ("gzip",), ("accept-encoding",))
    assert got is not None and got.body == b"gz"
    # Asked under other fields (a stale idea of the resource's Vary): not found.
    assert t.get(("example.com", b"/v"), ("gzip",), ("accept-language",)) is None
    t.put(entry("/v", b"fr", vary=("accept-language",), variant=("fr",)))
    assert t.vary_fields(("example.com", b"/v")) == ("accept-language",)
    assert t.usage()[0] == 1  # the variants under the old Vary went


def test_a_resource_without_vary_has_no_vary_row_and_may_gain_and_lose_one(path: Path) -> None:
    """Format 4 writes a `vary` row only for a resource stored with Vary (one page fewer per
    cold store): `vary_fields` finds a Vary-less one by its record. Changing between the two
    drops what was stored under the other."""
    t = tier(path)
    primary = ("example.com", b"/p")
    t.put(entry("/p", b"plain"))
    assert t.vary_fields(primary) == ()
    with t.env.begin() as txn:
        assert not any(k.startswith(b"v") for k, _ in txn.cursor(db=t._index))
    t.put(entry("/p", b"gz", vary=("accept-encoding",), variant=("gzip",)))
    assert t.vary_fields(primary) == ("accept-encoding",)
    assert t.get(primary, (), ()) is None and t.usage()[0] == 1
    t.put(entry("/p", b"again plain"))
    assert t.vary_fields(primary) == () and t.usage()[0] == 1
    assert t.get(primary, ("gzip",), ("accept-encoding",)) is None
    got = t.get(primary, (), ())
    assert got is not None and got.body == b"again plain"
    assert t.purge_primary(primary) == 1 and t.vary_fields(primary) is None
    t.put(entry("/p", b"gz", vary=("accept-encoding",), variant=("gzip",)))
    assert t.remove(entry("/p", b"gz", vary=("accept-encoding",), variant=("gzip",))) == 1
    assert t.vary_fields(primary) is None  # the row went with its last variant


def _raw_put(t: NodeTier, key: bytes, value: bytes) -> None:
    """Bytes written straight into the items table, past every check of the tier."""
    with t.env.begin(write=True) as txn:
        txn.put(key, value, db=t.env.open_db(b"items", txn=txn))


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v[: len(v) // 2],  # torn: a truncated record
        lambda v: v[:-3] + b"xyz",  # a flipped tail (the crc catches it)
        lambda v: b"EPN0" + v[4:],  # another format's record
        lambda v: b"garbage",
    ],
)
def test_a_damaged_record_is_dropped_counted_and_never_served(
    path: Path, damage: Callable[[bytes], bytes]
) -> None:
    t = tier(path)
    e = entry("/t", b"x" * 5000)
    t.put(e)
    key = item_key(e.primary, (), ())
    good = envelope(node_record(e, b""))
    _raw_put(t, key, damage(good))
    assert t.get(e.primary, (), ()) is None
    assert t.stats.node_rejected == 1 and t.stats.node_hits == 0
    assert t.usage() == (0, 0)  # deleted, with its accounting


def test_a_record_that_proves_another_url_is_refused(path: Path) -> None:
    t = tier(path)
    a, b = entry("/a", b"A"), entry("/b", b"B")
    t.put(a)
    # B's (intact) record under A's key: its own URL does not prove A's.
    _raw_put(t, item_key(a.primary, (), ()), envelope(node_record(b, b"")))
    assert t.get(a.primary, (), ()) is None and t.stats.node_rejected == 1


def test_a_flipped_body_byte_is_never_served(path: Path) -> None:
    """A node-tier read does not re-hash the body (the envelope's xxh3-128 covers it): one
    flipped byte in the middle of a stored body is still caught, dropped and counted, and the
    facade in front (a worker whose memory does not hold it) answers a miss."""
    writer = tier(path)
    e = entry("/flip", bytes(range(256)) * 16)
    writer.put(e)
    key = item_key(e.primary, (), ())
    with writer.env.begin() as txn:
        stored = bytearray(txn.get(key, db=writer.env.open_db(b"items", txn=txn)))
    at = stored.find(e.body) + len(e.body) // 2
    stored[at] ^= 0x01
    _raw_put(writer, key, bytes(stored))
    reader = TieredCache(MemoryTier(MiB, MiB), node=tier(path))
    assert reader.vary_fields(e.primary) == ()
    assert reader.get((e.primary, ())) is None
    assert reader.node is not None and reader.node.stats.node_rejected == 1
    assert reader.node.stats.node_hits == 0 and reader.node.usage() == (0, 0)


def test_a_content_coded_body_is_served_under_its_identity_digest(path: Path) -> None:
    """A gzip body is indexed by the digest of its decoded form (the blocklist's identity
    digest), which is not the sha256 of the stored bytes: the seal proves it all the same."""
    identity = b"the same text, compressed " * 100
    coded = entry("/gz", gzip.compress(identity, mtime=0))
    coded.sha256 = hashlib.sha256(identity).digest()
    tier(path).put(coded)
    got = tier(path).get(coded.primary, (), ())
    assert got is not None and got.body == coded.body and got.sha256 == coded.sha256


def test_eviction_takes_the_least_recently_used(path: Path) -> None:
    one = len(envelope(node_record(entry("/0", b"x" * 10_000), b""))) + INDEX_OVERHEAD_BYTES
    t = tier(path, max_bytes=one * 3 + 10)
    clock = iter(range(1, 1000))
    t.clock = lambda: float(next(clock))
    for i in range(3):
        t.put(entry(f"/{i}", b"x" * 10_000))
    assert t.get(("example.com", b"/0"), (), ()) is not None  # /0 is now the most recent
    t.flush()
    t.put(entry("/3", b"x" * 10_000))
    assert t.stats.node_evictions == 1
    assert t.get(("example.com", b"/1"), (), ()) is None  # the oldest access went
    for p in (b"/0", b"/2", b"/3"):
        assert t.get(("example.com", p), (), ()) is not None
    assert t.usage() == (3, 3 * one)


def test_purges_reach_every_index(path: Path) -> None:
    t = tier(path)
    for p in ("/a/1", "/a/2", "/b/1", "/a"):
        t.put(entry(p, p.encode()))
    t.put(entry("/x", b"shared body", host="other.example"))
    t.put(entry("/y", b"shared body", host="other.example"))
    assert t.purge_prefix("example.com", "/a") == 3
    assert t.purge_primary(("example.com", b"/b/1")) == 1
    assert t.purge_digest(entry("/x", b"shared body").sha256) == 2
    assert t.usage() == (0, 0)
    t.put(entry("/h", b"h"))
    assert t.purge_host("example.com") == 1 and t.usage()[0] == 0
    t.put(entry("/u", b"u"))
    e = entry("/u", b"u")
    assert t.purge_url_key("example.com/u", lambda k: k.path == "/u") == 1
    assert t.get(e.primary, (), ()) is None


async def test_purge_listed_walks_info_in_steps(path: Path) -> None:
    t = tier(path)
    for i in range(25):
        t.put(entry(f"/p{i}", b"%d" % i))
    t.flush()
    n = await t.purge_listed(lambda k, d: k.path.endswith("7"), step=4, slice_s=0.002)
    assert n == 2  # /p7 and /p17, found across steps of 4
    assert t.usage()[0] == 23


def test_a_purge_drops_queued_stores(path: Path) -> None:
    t = tier(path)
    t.flush = lambda: None  # type: ignore[method-assign]  # keep the store queued
    e = entry("/q", b"q")
    t._puts[item_key(e.primary, (), ())] = e
    assert t.purge_primary(e.primary) == 0
    assert not t._puts


def test_the_facade_adopts_a_node_hit_read_again_with_detail(path: Path) -> None:
    """Issue 11: a node-tier read is adopted into memory only when read again within the
    doorkeeper's window; the first is answered from the node tier and not `alive` (no memo
    or purge of memory has to know it)."""
    a = TieredCache(MemoryTier(MiB, MiB), node=tier(path))
    b = TieredCache(MemoryTier(MiB, MiB), node=tier(path))
    e = entry("/f", b"f")
    assert a.put(e)
    assert b.vary_fields(e.primary) == ()
    first = b.get((e.primary, ()))
    assert first is not None and first.tier_detail == NODE_DETAIL and not first.alive
    assert b.memory.stats().objects == 0
    got = b.get((e.primary, ()))
    assert got is not None and got is not first and got.alive
    assert got.tier_detail == NODE_DETAIL and b.memory.stats().objects == 1
    again = b.get((e.primary, ()))
    assert again is got and again.tier_detail == b""  # now a memory hit
    assert b.purge_primary(e.primary) == 1
    assert a.get((e.primary, ())) is e  # a's memory keeps it until the node's purge reaches a
    assert a.node is not None and a.node.get(e.primary, (), ()) is None


def test_an_old_format_or_garbage_tier_is_moved_aside(tmp_path: Path) -> None:
    p = tmp_path / "t"
    assert prepare(p, 8 * MiB) == "opened"
    env = lmdb.open(str(p), max_dbs=8, map_size=100 * MiB)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"0", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(NodeTierError):
        tier(p)
    assert prepare(p, 8 * MiB).startswith("rebuilt (format")
    assert (tmp_path / "t.aside").is_dir()
    tier(p).close()
    (p / "data.mdb").write_bytes(b"\0garbage" * 1000)
    assert prepare(p, 8 * MiB).startswith("rebuilt (unreadable")
    t = tier(p)
    assert t.usage() == (0, 0)
    with t.env.begin() as txn:
        assert txn.get(b"format", db=t.env.open_db(b"meta", txn=txn)) == FORMAT


FORMAT_3_DBS = (b"items", b"info", b"order", b"vary", b"host", b"digest", b"urlkey")
FORMAT_3_DBS += (b"hostkey", b"urlseq", b"lease", b"meta")


def format_3_tier(p: Path, e: Entry) -> None:
    """A tier as a node of format 3 left it (eleven named databases, one item of `e`),
    closed cleanly on this boot."""
    env = lmdb.open(str(p), max_dbs=len(FORMAT_3_DBS), map_size=100 * MiB)
    db = {name: env.open_db(name) for name in FORMAT_3_DBS}
    with env.begin(write=True) as txn:
        txn.put(b"format", b"3", db=db[b"meta"])
        txn.put(b"boot", boot_id(), db=db[b"meta"])
        txn.put(b"clean", b"1", db=db[b"meta"])
        txn.put(item_key(e.primary, (), ()), b"EPN3" + bytes(16) + e.body, db=db[b"items"])
        txn.put(item_key(e.primary, (), ())[:16], b"\x90", db=db[b"vary"])
    env.close()


def test_a_tier_of_format_3_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    """The issue's "tier from an older format version": format 4 put the eleven trees of a
    store into three. A worker refuses the old file, and the node's start moves it aside,
    says so, and gives every worker an empty tier of this format that stores and serves."""
    p = tmp_path / "node-cache"
    old = entry("/old", b"stored by format 3")
    format_3_tier(p, old)
    with pytest.raises(NodeTierError, match="format b'3'"):
        tier(p)
    assert prepare(p, 8 * MiB) == f"rebuilt (format b'3', this node writes {FORMAT!r})"
    assert FORMAT == b"4"
    aside = lmdb.open(str(tmp_path / "node-cache.aside"), max_dbs=len(FORMAT_3_DBS))
    with aside.begin() as txn:  # the old file is kept as it was, for whoever wants it
        assert txn.stat(aside.open_db(b"items", txn=txn))["entries"] == 1
    aside.close()
    t = tier(p)
    assert t.usage() == (0, 0) and t.get(old.primary, (), ()) is None
    new = entry("/new", b"stored by format 4")
    t.put(new)
    got = tier(p).get(new.primary, (), ())
    assert got is not None and got.body == new.body
    with t.env.begin() as txn:
        names = {k for k, _ in txn.cursor()}  # the unnamed database lists the named ones
    assert names == {b"items", b"index", b"meta"}
    t.close()


def test_cache_clear_starts_empty(path: Path) -> None:
    t = tier(path)
    t.put(entry("/c", b"c"))
    t.close()
    assert prepare(path, 64 * MiB, clear=True) == "cleared"
    assert tier(path).usage() == (0, 0)


def _store_in_child(path: str, n: int) -> None:
    t = NodeTier(Path(path), 64 * MiB, 8 * MiB, WorkerStats([]))
    for i in range(n):
        t.put(entry(f"/child/{i}", b"c%d" % i))
    t.close()


def test_another_process_writes_what_this_one_reads(path: Path) -> None:
    t = tier(path)  # opened before the child writes: readers see later commits
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_store_in_child, args=(str(path), 50))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert t.usage()[0] == 50
    got = t.get(("example.com", b"/child/49"), (), ())
    assert got is not None and got.body == b"c49"


def test_two_writers_of_one_key_leave_one_whole_record(path: Path) -> None:
    a, b = tier(path), tier(path)
    ea, eb = entry("/same", b"from a" * 100), entry("/same", b"from b" * 100)
    a._puts[item_key(ea.primary, (), ())] = ea
    b._puts[item_key(eb.primary, (), ())] = eb
    a.flush()
    b.flush()
    got = a.get(ea.primary, (), ())
    assert got is not None and got.body == eb.body
    assert a.usage()[0] == 1 and a.stats.node_rejected == 0


# -- the fetch lease: coalescing across workers ------------------------------------------------


def _other_worker(path: Path, clock: Callable[[], float] | None = None) -> NodeTier:
    """A second handle: its own open file description of the lease file, so its locks are
    another worker's (an OFD lock belongs to the description, not the process)."""
    return NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=clock or (lambda: 1000.0))


async def test_one_worker_holds_a_key_lease_until_its_store_lands(path: Path) -> None:
    """Inside a loop, stores and releases are queued for the end of the loop turn."""
    now = [1000.0]
    a = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: now[0])
    b = _other_worker(path, lambda: now[0])
    primary = ("example.com", b"/l")
    assert a.lease(primary)
    assert not b.lease(primary) and b.leased_elsewhere(primary)
    assert a.lease(primary)  # its own lease: taken again, never waits on itself
    a.put(entry("/l", b"fetched once"))
    a.release(primary)
    assert b.leased_elsewhere(primary)  # queued: released with the store, not before
    a.flush()
    assert not b.leased_elsewhere(primary)
    got = b.get(primary, (), ())
    assert got is not None and got.body == b"fetched once"
    assert b.lease(primary)  # free again: the next miss (after eviction, a purge) may lead


def _tick(t: NodeTier, e: Entry) -> int:
    with t.env.begin() as txn:
        raw = txn.get(_INFO + item_key(e.primary, (), ()), db=t.env.open_db(b"index", txn=txn))
    return int(_decode_info(raw).tick)


async def test_hit_touches_wait_for_a_batch_and_go_with_the_next_store(path: Path) -> None:
    """A node-tier hit's access time is not worth a write transaction of its own (tens of
    microseconds, most of a hit): touches wait up to `touch_delay_s`, or for the next store."""
    now = [1000.0]
    t = NodeTier(
        path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: now[0], touch_delay_s=3600.0
    )
    a, b = entry("/a", b"A"), entry("/b", b"B")
    t.put(a)
    await asyncio.sleep(0)  # the end of this loop turn: the store is written
    stored = _tick(t, a)
    now[0] += 5
    assert t.get(a.primary, (), ()) is not None
    await asyncio.sleep(0)
    assert _tick(t, a) == stored  # the touch waits
    t.put(b)
    await asyncio.sleep(0)
    assert _tick(t, a) == _tick(t, b) > stored  # written with the store, in its transaction
    t.get(a.primary, (), ())
    t.close()  # a pending batch is written at close, its timer cancelled
    assert t._touch_timer is None


async def test_a_key_is_touched_at_most_once_per_interval(path: Path) -> None:
    """Each touch is four LMDB operations: a key's access tick is written at most once per
    `touch_interval_s`, by any worker (its store counts as one), and again once the interval
    has passed; the eviction order it keeps is that coarse, no coarser. A batch of touches
    that are all recent takes no write transaction."""
    now = [1000.0]
    t = NodeTier(
        path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: now[0], touch_interval_s=10.0
    )
    other = NodeTier(
        path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: now[0], touch_interval_s=10.0
    )
    a, b = entry("/a", b"A"), entry("/b", b"B")
    t.put(a)
    t.put(b)
    await asyncio.sleep(0)
    stored = _tick(t, a)
    for step in (1, 3, 4):  # 8 s after the store: within the interval, nothing is written
        now[0] += step
        assert t.get(a.primary, (), ()) is not None
        await asyncio.sleep(0)
        assert _tick(t, a) == stored
    now[0] += 3  # 11 s after the store: this worker's next hit writes
    assert t.get(a.primary, (), ()) is not None
    await asyncio.sleep(0)
    first = _tick(t, a)
    assert first > stored
    now[0] += 2  # another worker's hit within the interval of that tick: nothing written
    assert other.get(a.primary, (), ()) is not None
    await asyncio.sleep(0)
    assert _tick(t, a) == first
    assert other.get(b.primary, (), ()) is not None  # another key is its own: written
    await asyncio.sleep(0)
    assert _tick(t, b) > stored
    now[0] += 21  # two intervals on: both generations are dropped, the next hit writes
    assert t.get(a.primary, (), ()) is not None
    await asyncio.sleep(0)
    assert _tick(t, a) > first
    t.close()
    other.close()


def _lease_and_hold(path: str, key: bytes, held: Any) -> None:
    """A worker that takes `key`'s lease and is killed while it fetches."""
    t = NodeTier(Path(path), 64 * MiB, 8 * MiB, WorkerStats([]))
    held.put(t.lease(("example.com", key)))
    while True:
        os.pause()


def test_a_leader_killed_while_it_holds_a_lease_leaves_it_to_the_waiter(path: Path) -> None:
    """The kernel drops the lock of a process that dies (SIGKILL: no handler, no release):
    the waiter, polling as the Fetcher does, finds the lease gone and takes it over."""
    ctx = multiprocessing.get_context("spawn")
    held = ctx.Queue()
    leader = ctx.Process(target=_lease_and_hold, args=(str(path), b"/dead", held))
    leader.start()
    try:
        assert held.get(timeout=30) is True
        waiter = _other_worker(path)
        assert not waiter.lease(("example.com", b"/dead"))
        assert waiter.leased_elsewhere(("example.com", b"/dead"))
        assert waiter.lease(("example.com", b"/alive"))  # one key's lease, not the file's
    finally:
        assert leader.pid is not None
        os.kill(leader.pid, signal.SIGKILL)
        leader.join(30)
    assert leader.exitcode == -signal.SIGKILL
    assert not waiter.leased_elsewhere(("example.com", b"/dead"))
    assert waiter.lease(("example.com", b"/dead"))
    assert not _other_worker(path).lease(("example.com", b"/dead"))  # and holds it now


def _race_for_lease(path: str, start: Any, won: Any) -> None:
    t = NodeTier(Path(path), 64 * MiB, 8 * MiB, WorkerStats([]))
    start.wait(30)
    won.put(t.lease(("example.com", b"/race")))
    start.wait(30)  # hold it until every racer has tried
    t.close()


def test_workers_racing_for_one_key_give_it_to_exactly_one(path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    racers = 3
    start, won = ctx.Barrier(racers), ctx.Queue()
    procs = [
        ctx.Process(target=_race_for_lease, args=(str(path), start, won)) for _ in range(racers)
    ]
    for p in procs:
        p.start()
    results = [won.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(results) == [False] * (racers - 1) + [True]
    assert _other_worker(path).lease(("example.com", b"/race"))  # closed: released


def test_a_live_holder_keeps_its_lease_until_it_releases_or_closes(path: Path) -> None:
    a, b = _other_worker(path), _other_worker(path)
    primary = ("example.com", b"/slow")
    assert a.lease(primary) and not b.lease(primary)
    a.release(primary)  # no loop: written (nothing) and unlocked at once
    assert b.lease(primary) and not a.lease(primary)
    b.close()
    assert a.lease(primary)


def test_without_a_lease_file_every_worker_fetches(path: Path) -> None:
    a, b = _other_worker(path), _other_worker(path)
    os.close(a._lock_fd)
    a._lock_fd = -1  # as when the file could not be opened (a full disk, read-only)
    primary = ("example.com", b"/nolock")
    assert b.lease(primary) and a.lease(primary) and not a.leased_elsewhere(primary)


def test_an_uncacheable_answer_leaves_a_mark_nobody_waits_on(path: Path) -> None:
    now = [1000.0]
    a = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: now[0], uncacheable_s=10)
    b = _other_worker(path, lambda: now[0])
    c = _other_worker(path, lambda: now[0])
    primary = ("example.com", b"/ns")
    assert a.lease(primary)
    a.release(primary, uncacheable=True)
    a.flush()
    # Marked: every worker's miss goes to the origin at once, none takes or waits on a lease.
    assert b.lease(primary) and c.lease(primary)
    assert not b.leased_elsewhere(primary) and not c.leased_elsewhere(primary)
    now[0] += 11  # the mark is gone: the next miss leads again, and others wait on it
    assert b.lease(primary) and not c.lease(primary)


def test_a_failed_batch_still_releases_its_leases(path: Path) -> None:
    a = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: 1000.0)
    b = _other_worker(path)
    primary = ("example.com", b"/big")
    assert a.lease(primary)

    def refuse(*_args: object) -> None:
        raise lmdb.MapFullError("full")

    a._store = refuse  # type: ignore[method-assign]
    a.put(entry("/big", b"x"))
    a.release(primary)
    a.flush()
    assert a.stats.node_errors == 1
    assert not b.leased_elsewhere(primary)


def test_a_node_start_drops_every_lease(path: Path) -> None:
    a = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: 1000.0)
    b = _other_worker(path)
    assert b.lease(("example.com", b"/x"))
    a.close()
    b.close()
    assert prepare(path, 64 * MiB) == "opened"
    assert not _other_worker(path).leased_elsewhere(("example.com", b"/x"))


def test_a_node_start_drops_every_not_storable_mark(path: Path) -> None:
    """Marks live in the index tree ("m" rows) since format 4: the node's start removes them
    (no worker fetches yet) and nothing else."""
    a = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), clock=lambda: 1000.0)
    kept = entry("/kept", b"kept")
    a.put(kept)
    assert a.lease(("example.com", b"/ns"))
    a.release(("example.com", b"/ns"), uncacheable=True)
    a.flush()
    assert a._marked(primary_hash(("example.com", b"/ns")))
    a.close()
    assert prepare(path, 64 * MiB) == "opened"
    b = _other_worker(path)
    assert not b._marked(primary_hash(("example.com", b"/ns")))
    got = b.get(kept.primary, (), ())
    assert got is not None and got.body == b"kept"


def _read_and_wait(path: str, ready: Any, stop: Any) -> None:
    env = lmdb.open(path, max_dbs=16, lock=True)
    txn = env.begin()  # held open: the snapshot a SIGKILL leaves pinned
    txn.get(b"x")
    ready.set()
    stop.wait(60)


def test_a_worker_killed_mid_read_leaves_no_reader_slot_once_another_starts(path: Path) -> None:
    """Issue 19 (soak): a stale reader slot pins LMDB's oldest snapshot, so freed pages are
    never reused and the tier's file grows to its map size. A tier opening (the replacement
    worker) frees the slots of readers whose process is gone."""
    import os
    import signal

    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_read_and_wait, args=(str(path), ready, stop))
    child.start()
    assert ready.wait(30)
    t = tier(path)

    def holds_slot(env: Any) -> bool:
        return re.search(rf"^\s*{child.pid}\s", env.readers(), re.M) is not None

    assert holds_slot(t.env)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert holds_slot(t.env)  # the dead reader's slot is still taken
    replacement = tier(path)
    assert not holds_slot(replacement.env)
    t.close()
    replacement.close()


def test_a_record_carries_its_head_and_another_node_name_renders_it(path: Path) -> None:
    """A node-tier hit renders nothing: the record holds the head as delivered (up to the
    per-delivery fields), unless the node now has another `Via` name."""
    via = b"1.1 edgeproxy"
    writer = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), via=via, overhead_bytes=100)
    e = entry("/h", b"h" * 100)  # rendered with via "1.1 edgeproxy", overhead 100
    writer.put(e)
    got = writer.get(e.primary, (), ())
    assert got is not None and got.head == e.head and got.size == e.size
    renamed = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), via=b"1.1 other")
    again = renamed.get(e.primary, (), ())
    assert again is not None and b"Via: 1.1 other\r\n" in again.head
    assert b"edgeproxy" not in again.head


def test_a_read_by_item_key_is_proven_as_every_read(path: Path) -> None:
    """`get_at` (the memo's node-tier hits) reads by a key the caller holds: the record must
    still prove the URL and that it has no Vary."""
    t = tier(path)
    a, b = entry("/a", b"A"), entry("/b", b"B")
    t.put(a)
    got = t.get_at(item_key(a.primary, (), ()), a.target)
    assert got is not None and got.body == b"A" and got.target is a.target
    _raw_put(t, item_key(a.primary, (), ()), envelope(node_record(b, b"")))
    assert t.get_at(item_key(a.primary, (), ()), a.target) is None
    assert t.stats.node_rejected == 1
    v = entry("/v", b"V", vary=("accept-encoding",), variant=("gzip",))
    _raw_put(t, item_key(v.primary, (), ()), envelope(node_record(v, b"")))
    assert t.get_at(item_key(v.primary, (), ()), v.target) is None
    assert t.stats.node_rejected == 2


def test_an_entry_memory_cannot_hold_is_never_alive(path: Path) -> None:
    """Issue 11: an object the node tier holds but a worker's memory tier cannot (larger than
    its share) was answered as a live entry, so the memo kept it and served it after purges
    that never found it in memory."""
    node = tier(path)
    cache = TieredCache(MemoryTier(4096, 4096), node=node)
    e = entry("/big", b"b" * 10_000)
    assert node.put(e)
    for _ in range(3):  # read again: adopted, but it does not fit
        got = cache.get((e.primary, ()))
        assert got is not None and not got.alive and got.tier_detail == NODE_DETAIL
    assert cache.memory.stats().objects == 0


def test_the_memo_read_of_a_node_tier_item(path: Path) -> None:
    """`node_ref` and `get_hot`: a reference without body to a node-tier answer memory did
    not adopt; read again within the doorkeeper's window it is adopted, read after many
    others it is answered from the node tier again, and once purged it is gone."""
    other = tier(path)
    cache = TieredCache(MemoryTier(8192, 8192), node=tier(path))
    e = entry("/n", b"n" * 1000)
    other.put(e)
    first = cache.get((e.primary, ()))
    assert first is not None and not first.alive
    ref = cache.node_ref(first)
    assert ref is not None and ref.target is first.target
    for i in range(40):  # 40 KB of other reads: well past the window (two memory tiers)
        x = entry(f"/x/{i}", b"x" * 1000)
        other.put(x)
        assert cache.get((x.primary, ())) is not None
    got = cache.get_hot(ref)
    assert got is not None and not got.alive and got.body == e.body
    assert got.tier_detail == NODE_DETAIL and got.site_index == ref.site_index
    adopted = cache.get_hot(ref)  # read again at once: adopted, finished
    assert adopted is not None and adopted.alive and cache.memory.stats().objects >= 1
    assert cache.node_ref(adopted) is None  # the memo keeps the entry itself now
    other.purge_primary(e.primary)
    assert cache.get_hot(ref) is None


def test_reads_touch_one_in_touch_one_in(path: Path) -> None:
    """Workers touch on every `TOUCH_ONE_IN`th node-tier read (a sampled LRU, as the memo
    samples memory's): with a working set larger than memory nearly every read was a key's
    first touch in its interval."""
    t = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]), touch_one_in=8)
    touched: list[bytes] = []
    t._touch = touched.append  # type: ignore[method-assign]
    e = entry("/s", b"s")
    t.put(e)
    for _ in range(16):
        assert t.get(e.primary, (), ()) is not None
    assert touched == [item_key(e.primary, (), ())] * 2


def test_a_read_takes_the_target_the_caller_parsed(path: Path) -> None:
    """lookup hands the facade the target admit parsed: the read does not parse it again,
    and one that is not the key's own is not taken (the record's URL is parsed as before)."""
    t = tier(path)
    a, b = entry("/a", b"A"), entry("/b", b"B")
    t.put(a)
    got = t.get(a.primary, (), (), a.target)
    assert got is not None and got.target is a.target
    other = t.get(a.primary, (), (), b.target)
    assert other is not None and other.target == a.target and other.target is not b.target


def test_a_preallocated_tier_is_written_through_the_map(tmp_path: Path) -> None:
    """Writes go through a writable map only into a data file with disk blocks for its whole
    map (into a hole a full disk would raise SIGBUS): preallocated at node start on request."""
    plain, full = tmp_path / "plain", tmp_path / "full"
    assert prepare(plain, 1 * MiB) == "opened"
    assert prepare(full, 1 * MiB, prealloc=True) == "opened, preallocated"
    assert prepare(full, 1 * MiB, prealloc=True) == "opened"  # already: nothing to do
    for p, mapped in ((plain, False), (full, True)):
        t = tier(p, 1 * MiB)
        assert t.env.flags()["writemap"] is mapped
        e = entry("/w", b"through the map" * 100)
        t.put(e)
        got = tier(p, 1 * MiB).get(e.primary, (), ())
        assert got is not None and got.body == e.body
        t.close()


def test_a_refused_preallocation_leaves_the_tier_as_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    p = tmp_path / "node-cache"
    assert prepare(p, 1 * MiB, prealloc=True) == "opened, not preallocated"
    t = tier(p, 1 * MiB)
    assert t.env.flags()["writemap"] is False
    t.put(entry("/x", b"still stored"))
    assert t.usage()[0] == 1
    t.close()


def test_a_variant_stored_again_keeps_its_vary_row(path: Path) -> None:
    """The one variant of a resource with Vary, stored again (a refresh): the store replaces
    its rows, and the resource's `vary` row stays, so the new record is found (it went with
    the old record as its "last variant", leaving the new one unreachable)."""
    t = tier(path)
    primary = ("example.com", b"/r")
    t.put(entry("/r", b"first", vary=("accept-encoding",), variant=("gzip",)))
    t.put(entry("/r", b"second", vary=("accept-encoding",), variant=("gzip",)))
    assert t.vary_fields(primary) == ("accept-encoding",)
    got = t.get(primary, ("gzip",), ("accept-encoding",))
    assert got is not None and got.body == b"second"
    assert t.usage() == (1, len(envelope(node_record(got, b""))) + INDEX_OVERHEAD_BYTES)


def test_a_key_stored_again_leaves_one_set_of_rows(path: Path) -> None:
    """A store of a key already there drops its old index rows (digest, url, order, info)
    before writing the new ones: a purge by the old digest finds nothing."""
    t = tier(path)
    t.put(entry("/k", b"old body"))
    t.put(entry("/k", b"new body"))
    with t.env.begin() as txn:
        kinds = sorted(bytes(k[:1]) for k, _ in txn.cursor(db=t._index))
    assert kinds == [b"d", b"i", b"o", b"p", b"u"]
    assert t.purge_digest(hashlib.sha256(b"old body").digest()) == 0
    assert t.purge_digest(hashlib.sha256(b"new body").digest()) == 1
    assert t.usage() == (0, 0)


def test_a_node_record_holds_what_record_of_gives(path: Path) -> None:
    """`node_record` builds the record by position: field for field the shared tier's
    `record_of` and the head."""
    import msgspec

    from proxy.cache.shared import record_of

    e = entry("/n", b"body", vary=("accept-encoding",), variant=("gzip",))
    e.render_head(256, b"1.1 edge")
    rec = node_record(e, b"1.1 edge")
    assert msgspec.structs.asdict(rec) == dict(
        msgspec.structs.asdict(record_of(e)), head=e.head, via=b"1.1 edge"
    )


def test_a_tier_is_preallocated_by_default_where_it_is_safe_and_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cache.node_tier_preallocate` is on by default; the node reserves the map's blocks
    only on a filesystem that writes in place and when the disk keeps
    `node_tier_preallocate_keep_free_bytes` free after it. Otherwise the tier is written
    with pwrite(), as without, and serves."""
    from proxy.cache import node as node_mod
    from proxy.config import Config

    cache = Config().cache
    assert cache.node_tier_preallocate is True
    assert cache.node_tier_preallocate_keep_free_bytes == 1 << 30
    ok = tmp_path / "ok"
    assert node_mod.filesystem_of(tmp_path) in node_mod.IN_PLACE_FILESYSTEMS
    assert prepare(ok, 1 * MiB, prealloc=True) == "opened, preallocated"

    cow = tmp_path / "cow"
    monkeypatch.setattr(node_mod, "filesystem_of", lambda p: "btrfs")
    assert prepare(cow, 1 * MiB, prealloc=True) == "opened, not preallocated (btrfs filesystem)"
    monkeypatch.undo()

    full = tmp_path / "full"
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    outcome = prepare(full, 1 * MiB, prealloc=True, keep_free_bytes=free)
    assert outcome == "opened, not preallocated (disk too full)"
    for p, mapped in ((ok, True), (cow, False), (full, False)):
        t = tier(p, 1 * MiB)
        assert t.env.flags()["writemap"] is mapped
        e = entry("/d", b"served either way")
        t.put(e)
        got = t.get(e.primary, (), ())
        assert got is not None and got.body == e.body
        t.close()


def _grow_map(path: str, map_bytes: int) -> None:
    """Another process opens the tier for a larger bound (a worker of a SIGHUP's new config)
    and writes past the first map's end."""
    env = lmdb.open(path, map_size=map_bytes, max_dbs=3, sync=False)
    junk = env.open_db(b"junk")  # a database of this test's own: the tier's stay as they are
    with env.begin(write=True) as txn:
        for i in range(80):
            txn.put(b"%d" % i, os.urandom(1 << 20), db=junk)
    env.close()


def test_a_handle_writing_through_the_map_stops_writing_past_its_blocks(tmp_path: Path) -> None:
    """A worker that writes through the map, whose map another process grew past the disk
    blocks reserved for it, follows the map for reads but writes no more (into a hole a
    full disk raises SIGBUS); the node's new workers, opened for the new bound, write."""
    from proxy.cache.node import map_size

    p = tmp_path / "node-cache"
    assert prepare(p, 1 * MiB, prealloc=True) == "opened, preallocated"
    t = tier(p, 1 * MiB)
    kept = entry("/kept", b"stored before")
    t.put(kept)
    assert t.env.flags()["writemap"] is True
    child = multiprocessing.get_context("spawn").Process(
        target=_grow_map, args=(str(p), map_size(1 * MiB) + 64 * MiB)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    late = entry("/late", b"not written")
    t.put(late)
    assert t.stats.node_errors == 1 and t.stats.node_stores == 1
    got = t.get(kept.primary, (), ())
    assert got is not None and got.body == kept.body  # reads follow the grown map
    assert t.get(late.primary, (), ()) is None
    t.close()


def _store_until_killed(path: str, ready: Any) -> None:
    t = tier(Path(path), 8 * MiB)  # past 8 MiB every store evicts too
    assert t.env.flags()["writemap"] is True
    body = os.urandom(3000)
    for i in range(1_000_000):
        t.put(entry(f"/k{i}", body + b"%d" % i))  # no loop: each store its own commit
        if i == 50:
            ready.set()


def test_a_writer_killed_mid_store_through_the_map_leaves_no_torn_entry(tmp_path: Path) -> None:
    """SIGKILL while a worker stores through the writable map (the default where the disk
    is preallocated): LMDB writes a commit's pages only where no committed tree points, so
    what another worker then reads is every record whole, each proven, with its index
    rows, and the tier goes on storing."""
    p = tmp_path / "node-cache"
    assert prepare(p, 8 * MiB, prealloc=True) == "opened, preallocated"
    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):
        ready = ctx.Event()
        child = ctx.Process(target=_store_until_killed, args=(str(p), ready))
        child.start()
        assert ready.wait(60)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        t = tier(p, 8 * MiB)
        with t.env.begin() as txn:
            keys = [bytes(k) for k, _ in txn.cursor(db=t._items)]
            infos = [k for k in keys if txn.get(_INFO + k, db=t._index) is not None]
        assert len(keys) > 50 and infos == keys
        for k in keys:
            got = t.get_at(k, _target_of(t, k))
            assert got is not None
        assert t.stats.node_rejected == 0
        t.put(entry("/after", b"stored after the kill"))
        assert t.get(("example.com", b"/after"), (), ()) is not None
        t.close()


def _target_of(t: NodeTier, ikey: bytes) -> Any:
    from proxy.cache.node import open_envelope
    from proxy.rfc.target import canonical_target

    with t.env.begin() as txn:
        rec = open_envelope(txn.get(ikey, db=t._items))
    return canonical_target(rec.raw_path_query, rec.authority.encode())
