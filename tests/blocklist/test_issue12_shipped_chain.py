"""Issue 12: deltas over a shipped (or kept) table are applied as changes over it, never by
compiling the whole version again: several deltas dropped at once, a node that starts with the
full version and its deltas in the directory, and a node that restarts with the enforced
table in its state (proxy/blocklist/chain.py, `NodeBlocklist._start_chain`). A bad delta in
a chain keeps the last good version enforced, logged and counted. Each test runs the real
compile child when one is needed, and checks every entry of the base and of each delta
(adds and removes) as a worker that starts now would enforce it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from proxy.blocklist.format import generate_keypair, version_filename, write_version
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import NodeBlocklist
from proxy.config import Config
from tests.blocklist.test_loader import Workers, node
from tests.blocklist.test_shipped import ENTRIES, phases, sign, worker_view

# The base: deltas in all stay within `delta_max_fraction` (0.1) of it, as takedown deltas
# over a large list do.
BASE = [*ENTRIES, *(Entry(f"m{i}", EntryType.URL, f"http://m.example/{i}") for i in range(200))]


def adds_of(sequence: int) -> list[Entry]:
    return [
        Entry(f"new{sequence}", EntryType.HOST, f"new{sequence}.example"),
        Entry(f"url{sequence}", EntryType.URL, f"http://d.example/{sequence}?k=v"),
        Entry(f"pre{sequence}", EntryType.PREFIX, f"http://e.example/{sequence}/"),
    ]


# What each delta removes: an entry of the base (a host, a url), then an add of an earlier
# delta, then the base's query-keyed url.
REMOVES = {2: ["h", "n0"], 3: ["new2"], 4: ["q", "pre3"]}


def drop_delta(lists: Path, key: bytes, sequence: int) -> Path:
    path = lists / version_filename(sequence)
    write_version(
        path,
        sequence,
        adds_of(sequence),
        base=sequence - 1,
        removes=REMOVES[sequence],
        private_key_pem=key,
    )
    return path


def listed_after(top: int) -> tuple[list[Entry], list[Entry]]:
    """(listed, unlisted) once deltas 2..top are applied over BASE."""
    entries = {e.id: e for e in BASE}
    removed: list[Entry] = []
    for sequence in range(2, top + 1):
        for entry_id in REMOVES[sequence]:
            removed.append(entries.pop(entry_id))
        entries.update((e.id, e) for e in adds_of(sequence))
    return list(entries.values()), removed


def blocks(snap: MappedSnapshot, entry: Entry) -> bool:
    """Does `snap` block a request for the entry's own value, by that entry?"""
    if entry.type == EntryType.SHA256:
        got = snap.check_digest(bytes.fromhex(entry.value))
    elif entry.type == EntryType.HOST:
        got = snap.check(f"www.{entry.value}", "/any", None)
    else:
        url = urlsplit(entry.value)
        path = url.path + ("inside" if entry.type == EntryType.PREFIX else "")
        got = snap.check(url.hostname or "", path, url.query or None)
    return got is not None and got.id == entry.id


def enforces_chain(bl: NodeBlocklist, top: int) -> None:
    """Every entry of the base and of deltas 2..top (and every push) as a worker starting
    now enforces it."""
    snap = worker_view(bl)
    listed, removed = listed_after(top)
    assert [e.id for e in listed if not blocks(snap, e)] == []
    assert [e.id for e in removed if blocks(snap, e)] == []
    assert all(blocks(snap, e) for e in bl.pushed.values())
    assert bl.file_sequence == top
    assert sum(bl.counts().values()) == len(listed) + len(bl.pushed)


def restarted(tmp_path: Path, keys: tuple[bytes, bytes], bl: NodeBlocklist) -> NodeBlocklist:
    """The node stopped as the supervisor stops it (its compiled files removed, but the
    table its state names), and a new one started on the same directories and config."""
    for path in bl.compiled_files():
        path.unlink()
    cfg = msgspec.structs.replace(Config(), blocklist=bl.cfg)
    return NodeBlocklist(cfg, bl.state_dir, Workers())


def shipped_node(
    tmp_path: Path, keys: tuple[bytes, bytes], **cfg: Any
) -> tuple[NodeBlocklist, Workers, Path]:
    bl, workers, lists = node(tmp_path, keys, **cfg)
    sign(lists, keys, 1, BASE)
    bl.load_initial()
    assert bl.tables_shipped == 1
    return bl, workers, lists


@pytest.mark.parametrize("top", [3, 4])
async def test_deltas_dropped_at_once_apply_over_the_shipped_table(
    tmp_path: Path, keys: tuple[bytes, bytes], top: int
) -> None:
    """Two or three deltas at once: the newest does not rest on the enforced version, yet no
    compile job runs; each delta goes to workers in order, as its own version."""
    bl, workers, lists = shipped_node(tmp_path, keys)
    compiles, seen = bl.compiles, phases(bl)
    for sequence in range(2, top + 1):
        drop_delta(lists, keys[0], sequence)
    assert await bl.reload_dir() is not None
    assert bl.compiles == compiles and seen == []  # no child at all
    assert [op for op, _ in workers.sent] == ["blocklist.delta"] * (top - 1)
    assert [h["source"] for h in bl.history][: top - 1] == [f"file:{s}" for s in range(top, 1, -1)]
    assert bl.reload_failures == 0 and bl.last_errors == []
    enforces_chain(bl, top)
    assert await bl.reload_dir() is None and bl.compiles == compiles  # nothing newer


@pytest.mark.parametrize("install", ["copy", "link"])
@pytest.mark.parametrize("dropped_while_down", [False, True])
async def test_a_restart_maps_the_kept_table_and_applies_the_chain(
    tmp_path: Path, keys: tuple[bytes, bytes], dropped_while_down: bool, install: str
) -> None:
    """The enforced version's table stays in the state directory when the node stops; the
    next start maps it (the same file: no copy, no compile, no child) and applies the deltas
    over it, whether they were applied before the stop or dropped while it was down. With
    `table_install = "link"` that file is the signer's own."""
    bl, _workers, lists = shipped_node(tmp_path, keys, table_install=install)
    if not dropped_while_down:
        for sequence in (2, 3):
            drop_delta(lists, keys[0], sequence)
            assert await bl.reload_dir() is not None
    assert bl.file_table is not None
    inode = bl.file_table.path.stat().st_ino
    version = bl.version
    if dropped_while_down:
        for sequence in (2, 3):
            drop_delta(lists, keys[0], sequence)
    again = restarted(tmp_path, keys, bl)
    seen = phases(again)
    again.load_initial()
    assert seen == [] and again.compiles == 0 and again.tables_shipped == 0
    assert again.file_table is not None and again.file_table.path.stat().st_ino == inode
    if install == "link":
        assert inode == (lists / "blocklist-0000000001.table").stat().st_ino
    assert again.version > version and again.deltas_since_compiled()[-1]["version"] == again.version
    enforces_chain(again, 3)
    # Running on, a further delta is applied over the same table.
    drop_delta(lists, keys[0], 4)
    assert await again.reload_dir() is not None
    assert again.compiles == 0 and seen == []
    enforces_chain(again, 4)


def test_a_restart_with_an_unchanged_directory_compiles_nothing(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, _workers, _lists = shipped_node(tmp_path, keys)
    pushed = Entry("x1", EntryType.URL, "http://pushed.example/a")
    bl.pushed[pushed.id] = pushed
    bl._persist()
    again = restarted(tmp_path, keys, bl)
    seen = phases(again)
    again.load_initial()
    assert seen == [] and again.compiles == 0
    assert again.file_sequence == 1 and again.version == bl.version + 1
    snap = worker_view(again)
    assert blocks(snap, pushed)
    enforces_chain(again, 1)


def test_a_node_that_starts_on_a_shipped_version_and_deltas_compiles_nothing(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """No state: the full version is taken from its signer's table (one child, which reads
    that file alone) and the deltas are applied over it."""
    bl, _workers, lists = node(tmp_path, keys)
    sign(lists, keys, 1, BASE)
    for sequence in (2, 3, 4):
        drop_delta(lists, keys[0], sequence)
    seen = phases(bl)
    bl.load_initial()
    assert bl.tables_shipped == 1 and bl.compiles == 1
    assert "table" in seen and "compile" not in seen
    enforces_chain(bl, 4)


async def test_a_bad_middle_delta_keeps_the_last_good_version(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """Delta 3 is signed by another key: 3 and 4 (which rests on it) are refused, counted and
    logged; delta 2 alone is applied, and nothing is compiled."""
    bl, workers, lists = shipped_node(tmp_path, keys)
    compiles, seen = bl.compiles, phases(bl)
    drop_delta(lists, keys[0], 2)
    drop_delta(lists, generate_keypair()[0], 3)
    drop_delta(lists, keys[0], 4)
    assert await bl.reload_dir() is not None
    assert bl.compiles == compiles and seen == []
    assert [op for op, _ in workers.sent] == ["blocklist.delta"]
    assert bl.reload_failures == 2
    assert "wrong key" in bl.last_errors[0] or "signature" in bl.last_errors[0]
    assert "delta base sequence 3 not found or invalid" in bl.last_errors[1]
    enforces_chain(bl, 2)
    # The same directory at a restart: the same version, the same refusals.
    again = restarted(tmp_path, keys, bl)
    again.load_initial()
    assert again.compiles == 0 and again.reload_failures == 2
    enforces_chain(again, 2)


async def test_a_bad_first_delta_changes_nothing(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    bl, workers, lists = shipped_node(tmp_path, keys)
    version, compiles = bl.version, bl.compiles
    drop_delta(lists, generate_keypair()[0], 2)
    drop_delta(lists, keys[0], 3)
    assert await bl.reload_dir() is None
    assert workers.sent == [] and bl.version == version and bl.compiles == compiles
    assert bl.file_sequence == 1 and bl.reload_failures == 2 and len(bl.last_errors) == 2
    assert await bl.reload_dir() is None  # a wake later (SIGHUP): the same two refusals
    assert bl.reload_failures == 4 and len(bl.last_errors) == 2 and bl.compiles == compiles
    enforces_chain(bl, 1)


def test_a_damaged_kept_table_is_not_used(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """The kept table fails its checksum: the node reads the directory as without it (here
    the signer's table again), and enforces every entry."""
    bl, _workers, lists = shipped_node(tmp_path, keys)
    drop_delta(lists, keys[0], 2)
    assert bl.file_table is not None
    kept = bl.file_table.path
    again = restarted(tmp_path, keys, bl)
    raw = bytearray(kept.read_bytes())
    raw[-9] ^= 0xFF
    kept.write_bytes(bytes(raw))
    seen = phases(again)
    again.load_initial()
    assert again.tables_shipped == 1 and "compile" not in seen
    enforces_chain(again, 2)


def test_a_kept_table_whose_version_left_the_directory_is_not_used(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """The directory now holds another version 1 (a rollback, a new signer): the node loads
    what the directory holds, as it would without the kept table."""
    bl, _workers, lists = shipped_node(tmp_path, keys)
    assert bl.file_table is not None
    kept = bl.file_table.path
    again = restarted(tmp_path, keys, bl)
    other = [*BASE[:50], Entry("z", EntryType.HOST, "z.example")]
    os.unlink(lists / version_filename(1))
    sign(lists, keys, 1, other)
    again.load_initial()
    assert again.tables_shipped == 1 and not kept.exists()
    snap = worker_view(again)
    assert blocks(snap, other[-1]) and not blocks(snap, BASE[60])


async def test_a_table_folded_from_deltas_is_kept_as_the_version_it_holds(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """The refresh that folds the deltas' changes into a new file-layer table (a compile, off
    the answer's path) notes it as version 3: the next start maps it with nothing to apply."""
    bl, _workers, lists = shipped_node(tmp_path, keys)
    for sequence in (2, 3):
        drop_delta(lists, keys[0], sequence)
    assert await bl.reload_dir() is not None
    await bl._write_full_async()
    assert bl.file_table is not None
    folded = bl.file_table.path
    again = restarted(tmp_path, keys, bl)
    seen = phases(again)
    again.load_initial()
    assert seen == [] and again.compiles == 0 and again.deltas_since_compiled() == []
    assert again.file_table is not None and again.file_table.path == folded
    enforces_chain(again, 3)
