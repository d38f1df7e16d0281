"""Per-host summaries in the compiled table (issue 12): a request probes the base only where its
host's summary says something is listed, and answers exactly as before (the dict snapshot's
answers), with deltas over it, with summaries written out in pieces and merged, and for a file
written before summaries."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import proxy.blocklist.table as table_mod
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.blocklist.table import (
    HAS_SHORT_HOST,
    HAS_URL,
    HAS_URLQ,
    NOTHING,
    Kind,
    MappedTable,
    write_table,
)
from tests.blocklist.test_mapped import _entry, _same


def mapped(tmp_path: Path, entries: list[Entry], **kw: Any) -> MappedSnapshot:
    path = tmp_path / "t.map"
    write_table(path, entries, 1, 0.0, **kw)
    table = MappedTable(path)
    table.verify()
    return MappedSnapshot.open(table, 1, 0.0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("how", ["summaries", "written in pieces", "no summaries (format 2)"])
def test_summaries_change_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, how: str
) -> None:
    if how == "written in pieces":  # every host's summary written out again and again: merged
        monkeypatch.setattr(table_mod, "SUMMARY_CACHE", 1)
    rng = random.Random(seed)
    entries = [_entry(rng, f"e{i}", 0.0) for i in range(rng.randint(0, 300))]
    snap = mapped(tmp_path, entries, summaries=how != "no summaries (format 2)")
    assert snap.table.summaries == (how != "no summaries (format 2)")
    old: Snapshot = Snapshot.compile(entries, 1, 0.0)
    new: Snapshot = snap
    _same(old, new, rng, 500)
    for step in range(4):  # deltas: the overlay is probed whatever the base's summary says
        adds = [_entry(rng, f"n{step}-{i}", 0.0) for i in range(rng.randint(0, 8))]
        removes = [e.id for e in rng.sample(entries, min(len(entries), 5))]
        old = old.with_changes(adds, removes, step + 2, 0.0)
        new = new.with_changes(adds, removes, step + 2, 0.0)
        _same(old, new, rng, 300)


def test_a_summary_says_what_a_host_group_lists(tmp_path: Path) -> None:
    entries = [
        Entry("p0", EntryType.PREFIX, "http://a.example/"),
        Entry("p2", EntryType.PREFIX, "http://a.example/x/y/"),
        Entry("u", EntryType.URL, "http://a.example/z"),
        Entry("q", EntryType.URL, "http://b.example/w?v=1"),
        Entry("deep", EntryType.PREFIX, "http://c.example/" + "/".join(["s"] * 70)),
        Entry("h", EntryType.HOST, "d.example"),
        Entry("h3", EntryType.HOST, "x.d.example"),
        Entry("ip", EntryType.HOST, "10.0.0.1"),
        Entry("sub", EntryType.URL, "http://www.e.example/"),
    ]
    snap = mapped(tmp_path, entries)
    table = snap.table
    assert table.summary("a.example") == (0b101, HAS_URL, 0)
    assert table.summary("b.example") == (0, HAS_URLQ, 0)
    assert table.summary("c.example") == (1 << 63, 0, 0)  # depths past 63 share the last bit
    assert table.summary("d.example") == (0, 0, 1 << 2 | 1 << 3)  # host entries' label counts
    assert table.summary("0.1") == (0, 0, 1 << 4)  # an IP literal: its last two labels too
    assert table.summary("e.example") == (0, HAS_URL, 0)  # www.e.example's group
    assert table.summary("unlisted.example") == NOTHING
    assert table.summary("") == NOTHING  # no host entry of one label
    deep = "/" + "/".join(["s"] * 72)
    assert snap.check("c.example", deep, None).id == "deep"  # type: ignore[union-attr]
    assert snap.check("c.example", deep[:-20], None) is None
    assert snap.check("a.example", "/x/y/z", None).id == "p0"  # type: ignore[union-attr]


def test_a_host_entry_of_one_label_blocks_every_host_under_it(tmp_path: Path) -> None:
    entries = [Entry("tld", EntryType.HOST, "example"), Entry("ip6", EntryType.HOST, "[::1]")]
    snap = mapped(tmp_path, entries)
    assert snap.table.summary("")[1] & HAS_SHORT_HOST
    assert snap.check("www.site.example", "/", None).id == "tld"  # type: ignore[union-attr]
    assert snap.check("example", "/", None).id == "tld"  # type: ignore[union-attr]
    assert snap.check("[::1]", "/", None).id == "ip6"  # type: ignore[union-attr]
    assert snap.check("www.site.test", "/", None) is None


def count_probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The kind of every probe of any mapped table from now on (`MappedTable.find` wrapped)."""
    kinds: list[int] = []
    find = MappedTable.find

    def counted(table: MappedTable, kind: int, key: bytes) -> tuple[int, ...]:
        kinds.append(kind)
        return find(table, kind, key)

    monkeypatch.setattr(MappedTable, "find", counted)
    return kinds


def test_an_unlisted_host_costs_one_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        Entry("h", EntryType.HOST, "pirate.example"),
        Entry("h2", EntryType.HOST, "www.pirate.example"),
        Entry("p", EntryType.PREFIX, "http://listed.example/a/b/c/"),
        Entry("u", EntryType.URL, "http://listed.example/x?v=1"),
    ]
    snap = mapped(tmp_path, entries)
    probes = count_probes(monkeypatch)
    assert snap.check("www.other.example", "/a/b/c/d/e", "v=1") is None
    assert probes == [Kind.SUMMARY]
    probes.clear()
    assert snap.check("listed.example", "/a/b/z/d/e", None) is None  # depths 0-5: 3 listed
    assert probes == [Kind.SUMMARY, Kind.PREFIX]
    probes.clear()
    assert snap.check("listed.example", "/a/b/z/d/e", "w=1") is None  # + the query trie's root
    assert probes == [Kind.SUMMARY, Kind.PREFIX, Kind.URLQ_NODE]
    probes.clear()
    assert snap.check("a.b.pirate.example", "/", None).id == "h"  # type: ignore[union-attr]
    assert probes == [Kind.SUMMARY, Kind.HOST, Kind.HOST]  # of 3 and 2 labels, not 4 or 1
    assert snap.check("listed.example", "/a/b/c/d", None).id == "p"  # type: ignore[union-attr]
    assert snap.check("listed.example", "/x", "v=1&w=2").id == "u"  # type: ignore[union-attr]


def test_a_pushed_prefix_on_a_host_the_base_never_listed_blocks(tmp_path: Path) -> None:
    snap = mapped(tmp_path, [Entry("p", EntryType.PREFIX, "http://listed.example/a/")])
    pushed = Entry("n", EntryType.PREFIX, "http://new.example/deep/er/")
    url = Entry("m", EntryType.URL, "http://new.example/q?v=2")
    snap = snap.with_changes([pushed, url], [], 2, 0.0)
    assert snap.check("new.example", "/deep/er/x", None).id == "n"  # type: ignore[union-attr]
    assert snap.check("new.example", "/q", "v=2").id == "m"  # type: ignore[union-attr]
    assert snap.check("new.example", "/deep", None) is None


ODD_HOSTS = [
    "example",
    "localhost",
    "1.2.3.4",
    "x.1.2.3.4",
    "3.4",
    "[::1]",
    "a.b.c.d.e.example",
    "c.d.e.example",
    "e.example",
    "www.example",
]


@pytest.mark.parametrize("seed", range(6))
def test_host_groups_with_odd_hosts_change_no_answer(tmp_path: Path, seed: int) -> None:
    """One-label hosts, IP literals inside longer names, deep subdomains: whatever a host
    entry's group, every request it blocked is blocked."""
    rng = random.Random(seed)
    entries = []
    for i in range(rng.randint(1, 40)):
        host = rng.choice(ODD_HOSTS)
        kind = rng.choice(["host", "host", "url", "prefix"])
        value = host if kind == "host" else f"http://{host}/{rng.choice(['', 'a', 'a/b'])}"
        entries.append(Entry(f"e{i}", EntryType(kind), value))
    old = Snapshot.compile(entries, 1, 0.0)
    new = mapped(tmp_path, entries)
    for host in ODD_HOSTS + ["www.x.1.2.3.4", "q.localhost", "z.example", "b.c.d.e.example"]:
        for path in ("/", "/a", "/a/b/c"):
            assert new.check(host, path, None) == old.check(host, path, None), (host, path)
