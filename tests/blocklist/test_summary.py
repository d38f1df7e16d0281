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
from proxy.blocklist.keys import match_keys
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.blocklist.table import HAS_URL, HAS_URLQ, MappedTable, write_table
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


def test_a_summary_says_what_a_host_lists(tmp_path: Path) -> None:
    entries = [
        Entry("p0", EntryType.PREFIX, "http://a.example/"),
        Entry("p2", EntryType.PREFIX, "http://a.example/x/y/"),
        Entry("u", EntryType.URL, "http://a.example/z"),
        Entry("q", EntryType.URL, "http://b.example/w?v=1"),
        Entry("deep", EntryType.PREFIX, "http://c.example/" + "/".join(["s"] * 70)),
        Entry("h", EntryType.HOST, "d.example"),
    ]
    table = mapped(tmp_path, entries).table
    assert table.summary(b"a.example") == (0b101, HAS_URL)
    assert table.summary(b"b.example") == (0, HAS_URLQ)
    assert table.summary(b"c.example") == (1 << 63, 0)  # depths past 63 share the last bit
    assert table.summary(b"d.example") == (0, 0)  # host entries are probed by suffix
    assert table.summary(b"unlisted.example") == (0, 0)


def count_probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The kind of every probe of any mapped table from now on (`MappedTable.find` wrapped)."""
    kinds: list[int] = []
    find = MappedTable.find

    def counted(table: MappedTable, kind: int, key: bytes) -> tuple[int, ...]:
        kinds.append(kind)
        return find(table, kind, key)

    monkeypatch.setattr(MappedTable, "find", counted)
    return kinds


def test_an_unlisted_host_costs_one_probe_beyond_its_host_suffixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        Entry("h", EntryType.HOST, "pirate.example"),
        Entry("p", EntryType.PREFIX, "http://listed.example/a/b/c/"),
        Entry("u", EntryType.URL, "http://listed.example/x?v=1"),
    ]
    snap = mapped(tmp_path, entries)
    probes = count_probes(monkeypatch)
    k = match_keys("www.other.example", "/a/b/c/d/e", "v=1")
    assert snap.check_keys(k) is None
    assert len(probes) == len(k.host_suffixes) + 1  # + its summary
    probes.clear()
    k = match_keys("listed.example", "/a/b/z/d/e", None)  # depths 0-5; only 3 is listed
    assert snap.check_keys(k) is None
    assert len(probes) == len(k.host_suffixes) + 1 + 1
    probes.clear()
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
