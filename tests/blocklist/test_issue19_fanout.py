"""Issue 19, the blocklist side: a lookup and a push cost what the request or the change
involves, not how many entries share a url key or carry an expiry.

- url entries with a query used to sit in one list per url key that every request with a
  query walked (`query_contains` per entry, and a msgpack row decoded per entry in the mapped
  base): now a trie of their pairs (`proxy.blocklist.querytrie`);
- a push used to copy, sort and search a list of every expiring entry (`SnapshotBuilder`), and
  a mapped snapshot walked the base's removed expiring entries on every push to find the next
  live expiry.

Costs are counted, not timed: function calls by the profiler hook (`count_calls`), bytes
allocated by tracemalloc.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.blocklist.keys import match_keys
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import EMPTY_SNAPSHOT, Snapshot
from proxy.blocklist.table import MappedTable, write_table
from tests.cache.opcount import count_calls

NOW = 1000.0


def url(i: int, query: str, eid: str | None = None, expires_at: float | None = None) -> Entry:
    value = f"http://a.example/watch?{query}"
    return Entry(id=eid or f"q{i}", type=EntryType.URL, value=value, expires_at=expires_at)


def watch_entries(n: int) -> list[Entry]:
    """n listed videos: one url key, n queries."""
    return [url(i, f"v={i}") for i in range(n)]


def mapped(tmp_path: Path, entries: list[Entry], name: str) -> MappedSnapshot:
    path = tmp_path / f"{name}.map"
    write_table(path, entries, 1, NOW)
    table = MappedTable(path)
    table.verify()
    return MappedSnapshot.open(table, 1, NOW)


def snapshots(tmp_path: Path, entries: list[Entry], name: str) -> dict[str, Snapshot]:
    """The same list three ways: in dicts, compiled and mapped, and as a mapped overlay."""
    empty = mapped(tmp_path, [], f"{name}-empty")
    return {
        "dict": Snapshot.compile(entries, 1, NOW),
        "mapped base": mapped(tmp_path, entries, name),
        "mapped overlay": empty.with_changes(entries, (), 2, NOW),
    }


def test_issue19_a_lookup_costs_the_same_whatever_the_queries_listed_under_its_url(
    tmp_path: Path,
) -> None:
    requests = {
        "listed, with extra pairs": ("v=777&feature=share", "q777"),
        "not listed": ("v=nope&feature=share", None),
        "many pairs": ("&".join(f"p{j}=1" for j in range(20)) + "&v=3", "q3"),
    }
    costs: dict[tuple[str, str], list[int]] = {}
    for n in (1_000, 20_000):
        for kind, snap in snapshots(tmp_path, watch_entries(n), f"w{n}").items():
            for what, (query, want) in requests.items():
                k = match_keys("a.example", "/watch", query)
                for cs in (False, True):
                    got = snap.check_keys(k, case_sensitive=cs)
                    assert (got.id if got else None) == want, (kind, what, cs)
                    calls = count_calls(lambda s=snap, k=k, c=cs: s.check_keys(k, case_sensitive=c))
                    costs.setdefault((kind, what), []).append(calls)
    for key, calls in costs.items():
        small, big = calls[:2], calls[2:]
        for s, b in zip(small, big, strict=True):
            assert b <= s + 5, f"{key}: {s} calls with 1,000 entries, {b} with 20,000"


def test_issue19_a_long_request_query_costs_what_it_holds_not_the_list(tmp_path: Path) -> None:
    """Entries of two pairs sharing one of them: a request holding that pair probes the
    children of one node, not every entry that shares it."""
    costs = []
    for n in (500, 10_000):
        entries = [url(i, f"list=top&v={i}") for i in range(n)]
        snap = Snapshot.compile(entries, 1, NOW)
        k = match_keys("a.example", "/watch", "list=top&v=nope&t=1")
        assert snap.check_keys(k) is None
        assert snap.check("a.example", "/watch", "t=1&v=42&list=top") == entries[42]
        costs.append(count_calls(lambda s=snap, k=k: s.check_keys(k)))
    assert costs[1] <= costs[0] + 5, costs


# -- the trie answers exactly as "every listed pair is in the request" -----------------------

_PAIRS = ["a=1", "a=2", "b=1", "c=", "a=1"]
_needs = st.lists(st.lists(st.sampled_from(_PAIRS), min_size=0, max_size=3), max_size=12)
_have = st.lists(st.sampled_from(_PAIRS + ["d=9"]), min_size=1, max_size=6)


def _contains(have: list[str], need: list[str]) -> bool:
    rest = list(have)
    for pair in need:
        if pair not in rest:
            return False
        rest.remove(pair)
    return True


@settings(max_examples=150, deadline=None)
@given(_needs, _have, st.integers(0, 11))
def test_query_trie_blocks_exactly_the_requests_holding_every_listed_pair(
    needs: list[list[str]], have: list[str], removed: int
) -> None:
    entries = [url(i, "&".join(need), eid=f"e{i}") for i, need in enumerate(needs)]
    gone = {f"e{removed}"}
    live = [(e, need) for e, need in zip(entries, needs, strict=True) if e.id not in gone]
    base = Snapshot.compile(entries, 1, NOW)
    after = base.with_changes((), gone, 2, NOW)
    empty = Snapshot.compile((), 1, NOW)
    rebuilt = empty.with_changes([e for e, _ in live], (), 2, NOW)
    query = "&".join(have)
    blocking = {e.id for e, need in live if _contains(have, need)}
    for snap in (after, rebuilt):
        got = snap.check("a.example", "/watch", query)
        if blocking:
            assert got is not None and got.id in blocking, (query, needs)
        else:
            assert got is None, (query, needs)
    assert EMPTY_SNAPSHOT.check("a.example", "/watch", query) is None


def test_query_trie_visits_each_sub_multiset_once() -> None:
    """Repeated pairs in a request (a=1&a=1&a=1) do not multiply the walk: a listed
    `a=1&a=1&b=1` is found, and `a=1&a=1&a=1&a=1` is not (the request holds three)."""
    entries = [url(0, "a=1&a=1&b=1"), url(1, "a=1&a=1&a=1&a=1")]
    snap = Snapshot.compile(entries, 1, NOW)
    assert snap.check("a.example", "/watch", "a=1&b=1&a=1&a=1") == entries[0]
    assert snap.check("a.example", "/watch", "a=1&a=1&a=1") is None
    costs = []
    for repeats in (4, 12):
        k = match_keys("a.example", "/watch", "&".join(["a=1"] * repeats) + "&z=1")
        costs.append(count_calls(lambda k=k: snap.check_keys(k)))
    # without the dedup, 12 copies would open C(12, 1..4) = 793 paths against 4's 15
    assert costs[1] <= costs[0] + 40, costs


# -- a push does not walk or copy every expiring entry ---------------------------------------


def _push_peak_bytes(snap: Snapshot) -> int:
    tracemalloc.start()
    try:
        snap.with_changes([url(10**9, "v=pushed", eid="pushed")], (), 3, NOW)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_issue19_a_push_costs_the_same_with_or_without_expiring_entries() -> None:
    n = 60_000
    lasting = Snapshot.compile([url(i, f"v={i}") for i in range(n)], 1, NOW)
    expiring = Snapshot.compile(
        [url(i, f"v={i}", expires_at=NOW + 3600 + i) for i in range(n)], 1, NOW
    )
    assert expiring.next_expiry == NOW + 3600 and lasting.next_expiry is None
    plain, timed = _push_peak_bytes(lasting), _push_peak_bytes(expiring)
    # before: two copies of a list of every expiring entry (~1 MB here) on each push
    assert timed <= plain * 1.5 + 64 * 1024, (plain, timed)


def test_expiry_floors_stay_exact_through_removals_and_lapses() -> None:
    entries = [url(i, f"v={i}", expires_at=NOW + 10 + i) for i in range(2_000)]
    snap = Snapshot.compile(entries, 1, NOW)
    assert snap.next_expiry == NOW + 10
    snap = snap.with_changes((), ["q0", "q1", "q5"], 2, NOW)
    assert snap.next_expiry == NOW + 12
    snap = snap.with_changes((), (), 2, NOW + 500.5)  # those at 10+2 .. 10+490 lapse
    assert snap.next_expiry == NOW + 501 and len(snap) == 2_000 - 491  # i = 0..490 gone
    assert snap.check("a.example", "/watch", "v=490") is None
    assert snap.check("a.example", "/watch", "v=491") == entries[491]
    snap = snap.with_changes((), [e.id for e in entries], 3, NOW + 501)
    assert snap.next_expiry is None and len(snap) == 0


def test_issue19_a_mapped_push_does_not_rewalk_removed_expiring_base_entries(
    tmp_path: Path,
) -> None:
    """Removed entries at the head of the base's expiry order are stepped past once, in the
    snapshot that hid them, not again by every later push."""
    costs = []
    for removed in (50, 4_000):
        entries = [url(i, f"v={i}", expires_at=NOW + 100 + i) for i in range(5_000)]
        snap = mapped(tmp_path, entries, f"exp{removed}").with_changes(
            (), [f"q{i}" for i in range(removed)], 2, NOW
        )
        assert snap.next_expiry == NOW + 100 + removed
        push = [url(10**9, "v=pushed", eid="pushed")]
        costs.append(count_calls(lambda s=snap, p=push: s.with_changes(p, (), 3, NOW)))
        later = snap.with_changes(push, (), 3, NOW)
        assert later.next_expiry == NOW + 100 + removed
        assert later.check("a.example", "/watch", f"v={removed}") == entries[removed]
        assert later.check("a.example", "/watch", f"v={removed - 1}") is None
    assert costs[1] <= costs[0] + 20, costs


# -- the supervisor: a push does not recompile the whole list --------------------------------


async def test_issue19_pushes_below_the_fold_threshold_do_not_recompile_the_list(
    tmp_path: Path,
) -> None:
    """With the mapped base, workers hold pushes in their overlay; the supervisor compiled the
    whole list again after every quiet `compile_quiet_s`, i.e. after nearly every push when an
    operator pushes every few seconds. Now only to fold; a starting worker replays the rest."""
    import msgspec

    from proxy.blocklist.node import NodeBlocklist
    from proxy.config import BlocklistConfig, Config

    cfg = msgspec.structs.replace(Config(), blocklist=BlocklistConfig(compile_quiet_s=0.0))

    async def broadcast(op: str, args: dict[str, object]) -> list[dict[str, object]]:
        return [{"applied_at": 1.0}]

    node = NodeBlocklist(cfg, tmp_path / "state", broadcast)
    node.load_initial()  # compiles the start-up version, 1
    assert node.compiles == 1 and node.compiled_version == 1
    for i in range(20):
        await node.push([{"id": f"p{i}", "type": "url", "value": f"http://a.example/{i}"}])
        assert node._refresh is not None
        await node._refresh
    assert await node.remove("p3") is not None and node.known("p4") and not node.known("p3")
    await node._refresh
    assert node.compiles == 1 and node.version == 22
    replay = node.deltas_since_compiled()
    assert [d["version"] for d in replay] == list(range(2, 23))
    big = [{"id": f"b{i}", "type": "url", "value": f"http://a.example/b/{i}"} for i in range(1001)]
    await node.push(big)
    await node._refresh
    assert node.compiles == 2 and node.compiled_version == 23
    assert node.folds == 1 and node.deltas_since_compiled() == []
