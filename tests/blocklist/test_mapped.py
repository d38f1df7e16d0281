"""The mapped snapshot answers exactly as the dict snapshot does, for the same history.

Random lists over a small universe (so keys repeat across entries, hosts nest, prefixes cover
urls, queries overlap, case differs), then random deltas and expiries applied to both, and
random requests through both after every step."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from proxy.blocklist.mapped import MappedSnapshot, load_mapped
from proxy.blocklist.model import Entry, EntryType, InvalidEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.blocklist.table import MappedTable, write_table

HOSTS = ["a.example", "b.a.example", "c.b.a.example", "A.Example", "127.0.0.1", "bücher.example"]
SEGMENTS = ["x", "X", "manga", "Manga", "one", "%6Danga", "ß", "ss", "a;p=1", ".."]
PAIRS = ["v=1", "v=2", "w=1", "V=1", "v=1%26w=1", "t"]
DIGESTS = [bytes([i]) * 32 for i in range(4)]


def _path(rng: random.Random) -> str:
    return "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(0, 3)))


def _query(rng: random.Random) -> str | None:
    if rng.random() < 0.5:
        return None
    return "&".join(rng.choice(PAIRS) for _ in range(rng.randint(1, 3)))


def _entry(rng: random.Random, eid: str, now: float) -> Entry:
    kind = rng.choice(["url", "url", "prefix", "host", "sha256"])
    expires = rng.choice([None, None, now + rng.uniform(-5, 30)])
    notice = rng.choice(["", "N-1", "N-2"])
    if kind == "host":
        value = rng.choice(HOSTS).lower()
    elif kind == "sha256":
        value = rng.choice(DIGESTS).hex()
    else:
        value = f"http://{rng.choice(HOSTS)}{_path(rng)}"
        if kind == "url" and (q := _query(rng)):
            value += "?" + q
        if kind == "prefix" and not value.endswith("/"):
            value += "/"
    return Entry(id=eid, type=EntryType(kind), value=value, notice=notice, expires_at=expires)


def _same(a: Snapshot, b: Snapshot, rng: random.Random, probes: int = 300) -> None:
    assert len(a) == len(b) and a.counts == b.counts
    assert a.next_expiry == b.next_expiry
    assert dict(a.entries_by_id) == dict(b.entries_by_id)
    for _ in range(probes):
        host, path, query = rng.choice(HOSTS), _path(rng), _query(rng)
        for cs in (False, True):
            want = a.check(host, path, query, case_sensitive=cs)
            got = b.check(host, path, query, case_sensitive=cs)
            assert got == want, (host, path, query, cs)
    for digest in [*DIGESTS, b"\xff" * 32]:
        assert b.check_digest(digest) == a.check_digest(digest)


def _mapped(tmp_path: Path, entries: list[Entry], version: int, now: float) -> MappedSnapshot:
    path = tmp_path / f"v{version}.map"
    write_table(path, entries, version, now)
    table = MappedTable(path)
    table.verify()
    return MappedSnapshot.open(table, version, now)


@pytest.mark.parametrize("seed", range(12))
def test_random_lists_and_deltas_answer_as_the_dict_snapshot(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    now = 1000.0
    entries = [_entry(rng, f"e{i}", now) for i in range(rng.randint(0, 60))]
    ids = [e.id for e in entries]
    built_at = now - rng.choice([0.0, 10.0])  # the worker opens it later: some lapsed since
    old: Snapshot = Snapshot.compile(entries, 1, now)
    new: Snapshot = _mapped(tmp_path, entries, 1, built_at)
    if built_at != now:
        new = MappedSnapshot.open(new.table, 1, now)  # type: ignore[attr-defined]
    _same(old, new, rng)
    for step in range(8):
        now += rng.uniform(0, 8)
        adds = [
            _entry(rng, rng.choice(ids) if ids and rng.random() < 0.4 else f"n{step}-{i}", now)
            for i in range(rng.randint(0, 6))
        ]
        removes = [rng.choice(ids) for _ in range(rng.randint(0, 4))] if ids else []
        removes.append("never-listed")
        ids.extend(e.id for e in adds)
        old = old.with_changes(adds, removes, step + 2, now)
        new = new.with_changes(adds, removes, step + 2, now)
        _same(old, new, rng)


def test_a_big_random_list_answers_as_the_dict_snapshot(tmp_path: Path) -> None:
    rng = random.Random(99)
    entries = [_entry(rng, f"e{i}", 0.0) for i in range(3000)]
    _same(Snapshot.compile(entries, 1, 0.0), _mapped(tmp_path, entries, 1, 0.0), rng, 2000)


def test_a_hash_hit_is_confirmed_against_the_full_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every key hashing alike, only the full-key check tells them apart."""
    import proxy.blocklist.table as table_mod

    monkeypatch.setattr(table_mod, "hash_key", lambda data, seed: 42)
    entries = [
        Entry(id="a", type=EntryType.URL, value="http://e.example/a"),
        Entry(id="b", type=EntryType.URL, value="http://e.example/b"),
        Entry(id="p", type=EntryType.PREFIX, value="http://e.example/a/"),
    ]
    snap = _mapped(tmp_path, entries, 1, 0.0)
    assert snap.check("e.example", "/c", None) is None
    assert snap.check("e.example", "/b", None).id == "b"  # type: ignore[union-attr]
    assert snap.check("e.example", "/a/x", None).id == "p"  # type: ignore[union-attr]
    assert snap.table.keys == 7  # three match keys, three ids, the host summary: one hash


def test_a_repeated_id_is_refused_as_compile_refuses_it(tmp_path: Path) -> None:
    entries = [
        Entry(id="same", type=EntryType.HOST, value="a.example"),
        Entry(id="same", type=EntryType.HOST, value="b.example"),
    ]
    with pytest.raises(InvalidEntry, match="duplicate id"):
        write_table(tmp_path / "t.map", entries, 1, 0.0)
    assert not list(tmp_path.iterdir())  # nothing left behind, not even a temporary


def test_a_delta_costs_the_overlay_not_the_base(tmp_path: Path) -> None:
    entries = [
        Entry(id=f"u{i}", type=EntryType.URL, value=f"http://h.example/{i}") for i in range(500)
    ]
    base = _mapped(tmp_path, entries, 1, 0.0)
    pushed = Entry(id="new", type=EntryType.HOST, value="pirate.example")
    after = base.with_changes([pushed], ["u1"], 2, 0.0)
    assert after.table is base.table and after.overlay_size == 2
    assert after.check("cdn.pirate.example", "/", None) == pushed
    assert after.check("h.example", "/1", None) is None and base.check("h.example", "/1", None)
    assert len(after) == 500 and after.counts[EntryType.HOST] == 1


async def test_load_mapped_checks_the_version_and_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "v3.map"
    write_table(path, [Entry(id="h", type=EntryType.HOST, value="a.example")], 3, 0.0)
    snap = await load_mapped(path, 3, 0.0)
    assert snap.version == 3 and snap.check("a.example", "/", None) is not None
    from proxy.blocklist.table import TableError

    with pytest.raises(TableError, match="holds version 3, expected 4"):
        await load_mapped(path, 4, 0.0)


async def test_a_new_table_is_checked_in_a_thread_of_lower_priority(tmp_path: Path) -> None:
    """The checksum pass of a swap takes what the serving loop leaves of the CPU: its thread's
    nice value is raised (Linux keeps one per thread), the loop's is not."""
    import os
    import threading

    from proxy.blocklist.mapped import VERIFY_NICE, in_low_priority_thread
    from proxy.blocklist.table import TableError

    seen: list[int] = []

    def check() -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    await in_low_priority_thread(check)
    assert seen == [min(19, loop_nice + VERIFY_NICE)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice

    def corrupt() -> None:
        raise TableError("checksum mismatch (corrupt)")

    with pytest.raises(TableError, match="corrupt"):
        await in_low_priority_thread(corrupt)

    path = tmp_path / "v1.map"  # and a damaged table is still refused through it
    write_table(path, [Entry(id="h", type=EntryType.HOST, value="a.example")], 1, 0.0)
    data = bytearray(path.read_bytes())
    data[-9] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TableError):
        await load_mapped(path, 1, 0.0)
