"""Issue 12's miss-path budget: what `MappedSnapshot.check_keys` probes, and that the shortcuts
taken for it (the overlay's own host group summaries, one-unpack record reads, the group key
taken from the host's suffixes) change no answer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import proxy.blocklist.table as table_mod
from proxy.blocklist.keys import MatchKeys, host_suffixes
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.blocklist.table import Kind, MappedTable, host_group, write_table
from tests.blocklist.test_mapped import _entry, _same
from tests.blocklist.test_summary import ODD_HOSTS, count_probes, mapped

DEEP = "/" + "/".join(f"s{i}" for i in range(70))  # past the summaries' last depth bit


def _odd_entry(rng: random.Random, eid: str) -> Entry:
    """Hosts of one label, IP literals, deep subdomains, prefixes past depth 63."""
    host = rng.choice(ODD_HOSTS)
    kind = rng.choice(["host", "url", "prefix", "deep"])
    if kind == "host":
        return Entry(eid, EntryType.HOST, host)
    if kind == "deep":
        return Entry(eid, EntryType.PREFIX, f"http://{host}{DEEP[: rng.randint(200, len(DEEP))]}")
    path = rng.choice(["/", "/a", "/a/b", "/a?v=1", "/a/b?v=1&w=2"])
    if kind == "prefix":
        path = path.split("?")[0]
    return Entry(eid, EntryType(kind), f"http://{host}{path}")


def _odd_requests(rng: random.Random, n: int) -> list[tuple[str, str, str | None]]:
    hosts = ODD_HOSTS + ["www.x.1.2.3.4", "q.localhost", "z.example", "b.c.d.e.example"]
    paths = ["/", "/a", "/a/b", "/a/b/c", DEEP, DEEP + "/more", DEEP[:250]]
    return [
        (rng.choice(hosts), rng.choice(paths), rng.choice([None, "v=1", "v=1&w=2", "w=2"]))
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_entries_pushed_over_a_base_answer_as_the_dict_snapshot(tmp_path: Path, seed: int) -> None:
    """The overlay is probed where its own summaries say (one-label hosts, IP literals, depths
    past the last bit included), and the answers are the dict snapshot's."""
    rng = random.Random(seed)
    base = [_odd_entry(rng, f"b{i}") for i in range(rng.randint(0, 30))]
    old: Snapshot = Snapshot.compile(base, 1, 0.0)
    new: Snapshot = mapped(tmp_path, base)
    for step in range(5):
        adds = [_odd_entry(rng, f"n{step}-{i}") for i in range(rng.randint(1, 10))]
        removes = [e.id for e in rng.sample(base, min(len(base), 3))]
        old = old.with_changes(adds, removes, step + 2, 0.0)
        new = new.with_changes(adds, removes, step + 2, 0.0)
        for host, path, query in _odd_requests(rng, 200):
            for cs in (False, True):
                want = old.check(host, path, query, case_sensitive=cs)
                got = new.check(host, path, query, case_sensitive=cs)
                assert got == want, (host, path, query, cs)


@pytest.mark.parametrize("seed", range(4))
def test_random_deltas_over_an_empty_base_answer_as_the_dict_snapshot(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    old: Snapshot = Snapshot.compile([], 1, 0.0)
    new: Snapshot = mapped(tmp_path, [])
    for step in range(4):
        adds = [_entry(rng, f"n{step}-{i}", 0.0) for i in range(rng.randint(0, 20))]
        old = old.with_changes(adds, [], step + 2, 0.0)
        new = new.with_changes(adds, [], step + 2, 0.0)
        _same(old, new, rng, 300)


def test_a_push_costs_no_probe_on_other_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the overlay's own summaries, one pushed prefix made every request probe the
    overlay at every depth of its path, and one pushed host entry at every suffix."""
    snap = mapped(tmp_path, [Entry("p", EntryType.PREFIX, "http://listed.example/a/b/c/")])
    snap = snap.with_changes(
        [
            Entry("n", EntryType.PREFIX, "http://new.example/x/"),
            Entry("h", EntryType.HOST, "pirate.example"),
        ],
        [],
        2,
        0.0,
    )
    looked_up: list[object] = []
    entries_for = type(snap.dict_part()).entries_for

    def counted(self: object, etype: EntryType, key: str | bytes) -> object:
        looked_up.append(key)
        return entries_for(self, etype, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(snap.dict_part()), "entries_for", counted)
    probes = count_probes(monkeypatch)
    assert snap.check("listed.example", "/a/b/z/d", None) is None
    assert probes == [Kind.SUMMARY, Kind.PREFIX] and looked_up == []
    probes.clear()
    assert snap.check("www.other.example", "/x/y", None) is None
    assert probes == [Kind.SUMMARY] and looked_up == []
    assert snap.check("new.example", "/x/y", None).id == "n"  # type: ignore[union-attr]
    assert looked_up == ["new.example/x"]  # depth 1 only: the one its summary names
    assert snap.check("a.pirate.example", "/", None).id == "h"  # type: ignore[union-attr]


def test_a_host_entry_of_one_label_pushed_blocks_every_host_under_it(tmp_path: Path) -> None:
    snap = mapped(tmp_path, [Entry("p", EntryType.PREFIX, "http://a.example/x/")])
    snap = snap.with_changes([Entry("tld", EntryType.HOST, "example")], [], 2, 0.0)
    assert snap.check("www.site.example", "/", None).id == "tld"  # type: ignore[union-attr]
    assert snap.check("a.example", "/y", None).id == "tld"  # type: ignore[union-attr]
    assert snap.check("www.site.test", "/", None) is None


@pytest.mark.parametrize(
    "host",
    [*ODD_HOSTS, "a..b", ".b", "a.b", "x.10.0.0.1", "10.0.0.1", "[::1]", "a" * 300 + ".ex"],
)
def test_a_request_hosts_summary_is_its_host_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """Taken from its suffixes (`keys.host_suffixes`) when it has several, as `host_group`
    would compute it, whatever the host (IP literals and overlong names have one suffix)."""
    snap = mapped(tmp_path, [Entry("p", EntryType.PREFIX, "http://a.example/x/")])
    asked: list[bytes] = []
    find = MappedTable.find

    def recorded(table: MappedTable, kind: int, key: bytes) -> tuple[int, ...]:
        if kind == Kind.SUMMARY:
            asked.append(key)
        return find(table, kind, key)

    monkeypatch.setattr(MappedTable, "find", recorded)
    k = MatchKeys(
        host=host,
        path="/x",
        exact_path="/x",
        query=None,
        host_suffixes=host_suffixes(host),
        url_key=host + "/x",
        prefix_ends=(len(host) + 1, len(host) + 2),
    )
    assert snap.check_keys(k) is None
    assert asked == [host_group(host).encode("utf-8", "surrogatepass")]


def test_records_of_several_entries_and_summaries_read_whole(tmp_path: Path) -> None:
    entries = [
        Entry(f"u{i}", EntryType.URL, "http://a.example/same", notice=str(i)) for i in range(5)
    ]
    write_table(tmp_path / "t.map", entries, 1, 0.0)
    table = MappedTable(tmp_path / "t.map")
    assert table.find(int(Kind.URL), b"a.example/same") == (0, 1, 2, 3, 4)
    assert table.find(int(Kind.URL), b"a.example/other") == ()
    assert table.summary("a.example") == (0, table_mod.HAS_URL, 0)


def test_a_long_key_against_a_record_at_the_files_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every key hashing alike, a probe's key longer than what is left of the file past a
    record is read piece by piece, and told apart by its full key."""
    monkeypatch.setattr(table_mod, "hash_key", lambda data, seed: 42)
    write_table(tmp_path / "t.map", [Entry("u", EntryType.URL, "http://e.example/a")], 1, 0.0)
    table = MappedTable(tmp_path / "t.map")
    long = b"e.example/" + b"x" * (table.size + 100)
    assert table.find(int(Kind.URL), long) == ()
    assert table.find(int(Kind.URL), b"e.example/a") == (0,)
    snap = MappedSnapshot.open(table, 1, 0.0)
    assert snap.check("e.example", "/" + "x" * (table.size + 100), None) is None
