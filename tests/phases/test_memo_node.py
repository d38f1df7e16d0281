"""Issue 11, node-tier answers through the hot memo (proxy/phases/memo.py): a raw target
answered by the node tier and not adopted by memory is remembered as a reference to the node
tier's item, read and proven again on each hit, and answered only with the decisions the full
path would take (plain and fresh, body digest not refused); purged, it is gone."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.cache.node import NodeTier, body_at, prepare
from proxy.cache.tiered import NODE_DETAIL, TieredCache
from proxy.metrics import WorkerStats
from proxy.phases.deliver import hit_bytes
from proxy.phases.memo import HotMemo
from tests.cache.test_shared import NOW, entry

MiB = 1 << 20
HOST = b"example.com"


class World:
    """A worker's memory tier (tiny: reads are rarely adopted) and memo, and a second
    handle on the same node tier standing for the node's other workers."""

    def __init__(self, path: Path) -> None:
        self.now = NOW
        self.refused: set[bytes] = set()
        self.other = NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]))
        self.cache = TieredCache(
            MemoryTier(4096, 4096), node=NodeTier(path, 64 * MiB, 8 * MiB, WorkerStats([]))
        )
        self.memo = HotMemo(
            100,
            lambda: self.now,
            self.cache.touch,
            node=self.cache,
            refused=lambda e: e.sha256 in self.refused,
        )

    def answered_by_node(self, e: Entry) -> Entry:
        """Stored by another worker, answered here by the full path (`lookup`), remembered."""
        self.other.put(e)
        self.other.flush()  # at once, also in a running loop (where it waits for the turn's end)
        got = self.cache.get((e.primary, ()))
        assert got is not None and not got.alive
        self.memo.remember_hit(e.target.raw_path_query, HOST, got)
        return got

    def take(self, e: Entry) -> tuple[Entry, float] | None:
        return self.memo.take_hit("GET", e.target.raw_path_query, HOST)


@pytest.fixture
def world(tmp_path: Path) -> World:
    path = tmp_path / "node-cache"
    prepare(path, 64 * MiB)
    return World(path)


def test_a_node_tier_answer_is_remembered_without_its_body(world: World) -> None:
    e = entry("/n", b"n" * 5000)  # larger than the tiny memory tier: never adopted
    world.answered_by_node(e)
    assert world.memo._refs and not world.memo._hits
    for _ in range(3):
        hot = world.take(e)
        assert hot is not None
        got, now = hot
        assert got.body == e.body and not got.alive and got.tier_detail == NODE_DETAIL
        wire = hit_bytes("GET", True, "1.1", got, now, b"edgeproxy; hit")
        assert isinstance(wire, bytes)
        assert b"Cache-Status: up; hit, edgeproxy; hit; ttl=60; detail=node\r\n" in wire


def test_a_purge_in_the_node_tier_ends_it(world: World) -> None:
    e = entry("/p", b"p" * 5000)
    world.answered_by_node(e)
    world.other.purge_primary(e.primary)  # another worker's purge (operator or blocklist)
    assert world.take(e) is None
    assert not world.memo._refs  # forgotten: the full path decides from here


def test_a_body_stored_anew_with_a_refused_digest_goes_the_full_way(world: World) -> None:
    e = entry("/r", b"r" * 5000)
    world.answered_by_node(e)
    world.other.put(entry("/r", b"R" * 5000))  # another worker stored a new body since
    world.refused.add(entry("/r", b"R" * 5000).sha256)  # and its digest is listed now
    assert world.take(e) is None  # lookup answers 451 and purges
    world.refused.clear()
    hot = world.take(e)
    assert hot is not None and hot[0].body == b"R" * 5000


def test_only_a_plain_fresh_answer(world: World) -> None:
    e = entry("/f", b"f" * 5000, lifetime=60.0)
    world.answered_by_node(e)
    world.now = NOW + 61
    assert world.take(e) is None  # stale: lookup decides (revalidate, stale-while-…)
    world.now = NOW
    nc = entry("/nc", b"c" * 5000)
    nc.no_cache = True
    world.other.put(nc)
    got = world.cache.get((nc.primary, ()))
    assert got is not None
    world.memo.remember_hit(nc.target.raw_path_query, HOST, got)
    assert world.take(nc) is None  # no-cache: validated on every reuse, by the full path


def test_a_response_with_vary_is_not_remembered(world: World) -> None:
    v = entry("/v", b"v" * 5000, vary=("accept-encoding",), variant=("gzip",))
    world.other.put(v)
    got = world.cache.get((v.primary, ("gzip",)))
    assert got is not None
    world.memo.remember_hit(v.target.raw_path_query, HOST, got)
    assert not world.memo._refs and not world.memo._hits


def test_read_again_soon_it_is_adopted_and_answered_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "node-cache"
    prepare(path, 64 * MiB)
    w = World(path)
    w.cache.memory = MemoryTier(MiB, MiB)  # room for it
    e = entry("/a", b"a" * 1000)
    w.answered_by_node(e)
    hot = w.take(e)  # the second read within the window: adopted on this read
    assert hot is not None and hot[0].alive and hot[0].tier_detail == NODE_DETAIL
    assert w.memo._hits and not w.memo._refs
    again = w.take(e)
    assert again is not None and again[0] is hot[0] and again[0].tier_detail == b""
    wire = hit_bytes("GET", True, "1.1", again[0], again[1], b"edgeproxy; hit")
    assert isinstance(wire, bytes) and b"detail=node" not in wire


@pytest.mark.parametrize("still_referenced", [False, True])
def test_after_memory_lets_it_go_the_node_tier_answers_through_the_memo_again(
    tmp_path: Path, still_referenced: bool
) -> None:
    """An adopted entry that memory evicts (or purges) is served by the node tier from then
    on: one full path decides (`answered_by_node`), and the memo answers the requests after
    it from the node tier. It used to keep the dead memory entry's key, so that every later
    request for the target went the full way until the memo was emptied (a Zipf tail over a
    working set larger than memory: most of big-set's node-tier reads)."""
    path = tmp_path / "node-cache"
    prepare(path, 64 * MiB)
    w = World(path)
    w.cache.memory = MemoryTier(2048, 2048)  # one object of 1,000 bytes at a time
    e, other = entry("/a", b"a" * 1000), entry("/b", b"b" * 1000)
    w.answered_by_node(e)
    adopted = w.take(e)  # read again within the window: adopted
    assert adopted is not None and adopted[0].alive
    held = adopted[0] if still_referenced else None  # e.g. a response still being written
    del adopted
    w.cache.memory.put(other)  # memory evicts it
    assert held is None or not held.alive
    assert w.take(e) is None  # memory no longer holds it: the full path decides
    assert not w.memo._hits  # and the dead key is not kept
    w.cache.doorkeeper.clear()  # a read long after the last: not adopted this time
    w.answered_by_node(e)  # the full path: the node tier answers
    hot = w.take(e)  # by the memo, from the node tier (and adopted again: read twice)
    assert hot is not None and hot[0].body == e.body and hot[0].tier_detail == NODE_DETAIL
    hot = w.take(e)
    assert hot is not None and hot[0].body == e.body and hot[0].alive


def test_a_node_tier_answer_replaces_a_remembered_entry_memory_let_go(world: World) -> None:
    """remember_hit of a node-tier answer for a target whose memory entry is still
    remembered (another request took the full path meanwhile): the reference replaces it."""
    e = entry("/c", b"c" * 1000)
    world.cache.memory = MemoryTier(4096, 4096)
    world.cache.memory.put(e)
    world.memo.remember_hit(e.target.raw_path_query, HOST, e)
    world.cache.memory.purge_primary(e.primary)
    assert not e.alive
    world.answered_by_node(e)
    assert not world.memo._hits and world.memo._refs
    hot = world.take(e)
    assert hot is not None and hot[0].tier_detail == NODE_DETAIL


# -- proven once per record (NodeTier.prove_at / get_proven) -----------------------------------


def _with_etag(e: Entry, etag: bytes) -> Entry:
    e.headers = ((b"Cache-Control", b"max-age=60"), (b"ETag", etag))
    e.etag = etag.decode()
    e.render_head(100, b"1.1 edgeproxy")
    return e


def _rewrite_in_child(path: str, target: str, body: bytes, etag: bytes) -> None:
    """Another worker process stores `target` anew (`body`, ETag `etag`)."""
    t = NodeTier(Path(path), 64 * MiB, 8 * MiB, WorkerStats([]))
    t.put(_with_etag(entry(target, body), etag))
    t.close()


def test_later_hits_on_the_same_record_are_not_proven_again(world: World) -> None:
    """The first memo hit proves and decodes the record; the later ones check its seal and
    copy the body, answering with the entry proven then."""
    e = entry("/s", b"s" * 5000)
    world.answered_by_node(e)
    first = world.take(e)
    assert first is not None and first[0].body == e.body
    node = world.cache.node
    assert node is not None
    ref = world.memo._refs[(e.target.raw_path_query, HOST)]
    assert node._proofs[ref.ikey].entry is first[0]
    opened = node.stats.node_hits
    for _ in range(3):
        hot = world.take(e)
        assert hot is not None and hot[0] is first[0] and hot[0].body == e.body
        assert not hot[0].alive and hot[0].tier_detail == NODE_DETAIL
    assert node.stats.node_hits == opened + 3


def test_a_record_rewritten_by_another_process_between_two_hits_is_served_new(
    world: World, tmp_path: Path
) -> None:
    """Issue 11: a proven record is never served once another process stored a new one
    under its key: not with the old body, not with the old head, also when the new body
    has the old one's length (only the seal tells them apart)."""
    e = entry("/w", b"o" * 5000)
    world.answered_by_node(e)
    for _ in range(2):  # proven, then answered under that proof
        hot = world.take(e)
        assert hot is not None and hot[0].body == e.body and b'"v1"' in hot[0].head
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=_rewrite_in_child, args=(str(tmp_path / "node-cache"), "/w", b"n" * 5000, b'"v2"')
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    hot = world.take(e)
    assert hot is not None
    got, now = hot
    assert got.body == b"n" * 5000 and got.etag == '"v2"'
    wire = hit_bytes("GET", True, "1.1", got, now, b"edgeproxy; hit")
    assert isinstance(wire, bytes) and b'ETag: "v2"\r\n' in wire and b"o" * 100 not in wire
    again = world.take(e)  # and proven anew: the new record from now on
    assert again is not None and again[0].body == b"n" * 5000 and again[0].etag == '"v2"'


def test_the_same_body_under_a_new_head_is_served_with_the_new_head(world: World) -> None:
    e = entry("/h", b"h" * 5000)
    world.answered_by_node(e)
    assert world.take(e) is not None and world.take(e) is not None
    world.other.put(_with_etag(entry("/h", b"h" * 5000), b'"v9"'))
    hot = world.take(e)
    assert hot is not None and b'ETag: "v9"\r\n' in hot[0].head and hot[0].etag == '"v9"'


def test_a_purge_between_two_proven_hits_is_a_miss(world: World) -> None:
    e = entry("/g", b"g" * 5000)
    world.answered_by_node(e)
    assert world.take(e) is not None and world.take(e) is not None  # proven, then reused
    world.other.purge_primary(e.primary)
    assert world.take(e) is None
    assert not world.memo._refs


def test_a_digest_listed_after_the_proof_is_refused_on_the_next_hit(world: World) -> None:
    e = entry("/d", b"d" * 5000)
    world.answered_by_node(e)
    assert world.take(e) is not None and world.take(e) is not None
    world.refused.add(e.sha256)
    assert world.take(e) is None  # the full path answers 451 and purges


def test_the_memo_holds_no_body_of_what_the_node_tier_serves(world: World) -> None:
    """A proven entry lends the body of its last hit only until the next hot hit."""
    a, b = entry("/a1", b"a" * 5000), entry("/b1", b"b" * 5000)
    world.answered_by_node(a)
    world.answered_by_node(b)
    hot_a = world.take(a)
    assert hot_a is not None and hot_a[0].body == a.body
    hot_b = world.take(b)
    assert hot_b is not None and hot_b[0].body == b.body
    assert hot_a[0].body == b""  # the previous hit's body, let go
    assert world.cache.node is not None
    assert sum(len(p.entry.body) for p in world.cache.node._proofs.values()) == 5000


def test_proofs_are_bounded_in_bytes(tmp_path: Path) -> None:
    """`cache.node_proof_cache_bytes`: a worker's proofs are emptied whole when the next
    would pass it (the hits are answered all the same, proven anew); 0 keeps none."""
    path = tmp_path / "node-cache"
    prepare(path, 64 * MiB)
    for budget in (6000, 0):
        w = World(path)
        assert w.cache.node is not None
        w.cache.node.proof_bytes = budget
        es = [entry(f"/b{budget}/{i}", b"%d" % i * 2000) for i in range(5)]
        for e in es:
            w.answered_by_node(e)
        for _ in range(2):
            for e in es:
                hot = w.take(e)
                assert hot is not None and hot[0].body == e.body
                assert w.cache.node._proofs_held <= budget
                assert len(w.cache.node._proofs) < (len(es) if budget else 1)
                # the memo's references reach the proofs weakly: none outlives the bound
                refs = w.memo._refs.values()
                live = sum(r.proof is not None and r.proof() is not None for r in refs)
                assert live == len(w.cache.node._proofs)


async def test_the_hits_of_one_loop_turn_share_a_read_transaction(world: World) -> None:
    """In a running loop a turn's proven hits read through one transaction, ended (with the
    lent body) when the turn is over: no transaction and no body outlive it."""
    a, b = entry("/t1", b"a" * 5000), entry("/t2", b"b" * 5000)
    world.answered_by_node(a)
    world.answered_by_node(b)
    assert world.take(a) is not None and world.take(b) is not None  # proven
    await asyncio.sleep(0)
    node = world.cache.node
    assert node is not None and node._turn is None
    hot_a = world.take(a)
    turn = node._turn
    hot_b = world.take(b)
    assert turn is not None and node._turn is turn
    assert hot_a is not None and hot_b is not None and hot_b[0].body == b.body
    await asyncio.sleep(0)
    assert node._turn is None and hot_b[0].body == b""


async def test_this_workers_purge_is_seen_by_its_next_hit_in_the_same_turn(world: World) -> None:
    e = entry("/tp", b"p" * 5000)
    world.answered_by_node(e)
    assert world.take(e) is not None and world.take(e) is not None  # proven, then reused
    world.cache.purge_primary(e.primary)  # this worker's write ends the turn's transaction
    assert world.take(e) is None


async def test_another_workers_store_is_served_from_the_next_turn(world: World) -> None:
    """A turn's hits read the tier as it was at the turn's first hit (as a request a turn
    earlier would); what another worker committed since is served from the next turn on."""
    e = entry("/tn", b"o" * 5000)
    world.answered_by_node(e)
    assert world.take(e) is not None and world.take(e) is not None
    world.other.put(_with_etag(entry("/tn", b"n" * 5000), b'"v2"'))
    world.other.flush()
    hot = world.take(e)
    assert hot is not None and hot[0].body == e.body  # this turn: its snapshot, whole
    await asyncio.sleep(0)
    hot = world.take(e)
    assert hot is not None and hot[0].body == b"n" * 5000 and hot[0].etag == '"v2"'


# -- where a proven body lies (node.body_at) --------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 200, 255, 256, 5000, 65535, 65536, 200_000])
def test_a_proof_finds_its_body_past_a_field_that_starts_like_it(world: World, size: int) -> None:
    """An origin's field may hold the body's msgpack header and first bytes (or the body
    whole): the proof points at the body itself, and every later hit serves its bytes."""
    body = bytes((i * 7 + 3) % 251 for i in range(size))
    e = entry("/decoy", body)
    header = (b"\xc4" + size.to_bytes(1, "big")) if size < 256 else b""
    e.headers = (
        (b"Cache-Control", b"max-age=60"),
        (b"X-Decoy", header + body[:40]),
        (b"X-Pad", b"p" * 5000),  # larger than the tiny memory tier: answered by the node tier
    )
    e.render_head(100, b"1.1 edgeproxy")
    world.answered_by_node(e)
    for _ in range(3):
        hot = world.take(e)
        assert hot is not None and hot[0].body == body
    node = world.cache.node
    assert node is not None
    ref = world.memo._refs[(e.target.raw_path_query, HOST)]
    proof = node._proofs[ref.ikey]
    assert proof.body_end - proof.body_at == size


def test_body_at_takes_the_body_not_an_earlier_run_of_its_first_bytes() -> None:
    body = b"B" * 64 + b"tail"
    head = b"\xc4" + len(body).to_bytes(1, "big")
    seal = b"\0" * 20
    decoy = head + body[:40] + b"different"  # its header and first 40 bytes, then not it
    value = seal + b"\x93" + decoy + head + body + b"\xc0"
    at = body_at(value, body)
    assert value[at : at + len(body)] == body
    assert at == len(seal) + 1 + len(decoy) + len(head)
    assert body_at(seal + b"\x91" + decoy, body) == -1  # not there at all
    whole = seal + b"\x92" + head + body + head + body  # an equal run: either is the body
    assert whole[body_at(whole, body) :][: len(body)] == body


def test_a_proof_counts_its_key_against_the_bound(tmp_path: Path) -> None:
    """A proof holds its entry's target and cache key (copies of the path, which runs to the
    request-line limit): counted, so proofs of long URLs fit the bound as short ones do."""
    path = tmp_path / "node-cache"
    prepare(path, 64 * MiB)
    w = World(path)
    assert w.cache.node is not None
    w.cache.node.proof_bytes = 100_000
    es = [entry(f"/long/{i}/" + "p" * 8000, b"%d" % i) for i in range(8)]
    for e in es:
        w.answered_by_node(e)
    for e in es:
        hot = w.take(e)
        assert hot is not None and hot[0].body == e.body
        assert w.cache.node._proofs_held <= 100_000
    assert all(p.held > 4 * 8000 for p in w.cache.node._proofs.values())
    assert 0 < len(w.cache.node._proofs) <= 3
