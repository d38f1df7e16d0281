"""A signer's compiled table shipped beside a full version (proxy/blocklist/shipped.py): the node
verifies and maps it instead of compiling; any mismatch is logged, counted by reason, and the
version is compiled here as always (issue 12). Each test runs the real compile child."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.blocklist import shipped
from proxy.blocklist.format import (
    BlocklistError,
    generate_keypair,
    render_version,
    signature_line,
    version_filename,
    write_atomic,
    write_version,
)
from proxy.blocklist.keys import CANONICALISER_VERSION
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import Loading, NodeBlocklist
from proxy.blocklist.table import MappedTable, write_table
from tests.blocklist.test_loader import node

DIGEST = "ab" * 32
ENTRIES = [
    Entry("u", EntryType.URL, "http://a.example/x", notice="N-1"),
    Entry("q", EntryType.URL, "http://a.example/watch?v=42", reason="copyright"),
    Entry("p", EntryType.PREFIX, "http://b.example/manga/"),
    Entry("h", EntryType.HOST, "pirate.example"),
    Entry("d", EntryType.SHA256, DIGEST),
    *(Entry(f"n{i}", EntryType.URL, f"http://c.example/{i}") for i in range(95)),
]


def sign(lists: Path, keys: tuple[bytes, bytes], sequence: int, entries: list[Entry]) -> Path:
    """A full version with its companions, as `blocklist sign --table` writes them."""
    path = lists / version_filename(sequence)
    data = render_version(sequence, entries, private_key_pem=keys[0])
    shipped.write_companions(path, data, entries, keys[0])
    write_atomic(path, data)
    return path


def resign(manifest: Path, key: bytes, **changes: Any) -> None:
    """The manifest with fields changed, signed again with `key`."""
    m = msgspec.json.decode(manifest.read_bytes().split(b"\n")[0], type=shipped.Manifest)
    line = msgspec.json.encode(msgspec.structs.replace(m, **changes)) + b"\n"
    manifest.write_bytes(line + signature_line(line, key))


def vouch(manifest: Path, table: Path, key: bytes, **changes: Any) -> None:
    """The manifest re-signed for the table as it now is (its bytes, hash and counts)."""
    mapped = MappedTable(table)
    resign(
        manifest,
        key,
        table_sha256=hashlib.sha256(table.read_bytes()).hexdigest(),
        table_bytes=table.stat().st_size,
        entries=mapped.entries,
        keys=mapped.keys,
        counts={str(t): n for t, n in mapped.counts.items()},
        **changes,
    )


def worker_view(bl: NodeBlocklist) -> MappedSnapshot:
    """What a worker (re)starting now enforces: the mapped file, checked whole, with the
    overlay it is loaded with, then the deltas since."""
    args = bl.load_args()
    table = MappedTable(Path(args["path"]))
    assert table.version == args.get("stamp", args["version"])  # as `load_mapped` checks
    table.verify()
    snap = MappedSnapshot.open(table, args["version"], time.time())
    if args.get("add"):
        add = msgspec.convert(args["add"], list[Entry])
        snap = snap.with_changes(add, (), args["version"], time.time())
    for d in bl.deltas_since_compiled():
        add = msgspec.convert(d["add"], list[Entry])
        snap = snap.with_changes(add, d["remove"], d["version"], time.time())
    return snap


def enforces_entries(snap: MappedSnapshot) -> None:
    """Exact for url, query-keyed url, prefix, host and sha256 entries."""
    blocked = [
        ("a.example", "/x", None, "u"),
        ("A.EXAMPLE.", "/x/", "utm=1", "u"),
        ("a.example", "/watch", "list=7&v=42", "q"),
        ("b.example", "/manga/one", None, "p"),
        ("cdn.pirate.example", "/", None, "h"),
        ("c.example", "/94", None, "n94"),
    ]
    for host, path, query, want in blocked:
        got = snap.check(host, path, query)
        assert got is not None and got.id == want, (host, path, query)
    for host, path, query in [
        ("a.example", "/watch", "v=43"),
        ("b.example", "/mangafoo", None),
        ("notpirate.example", "/", None),
        ("c.example", "/95", None),
    ]:
        assert snap.check(host, path, query) is None, (host, path, query)
    digest = snap.check_digest(bytes.fromhex(DIGEST))
    assert digest is not None and digest.id == "d"


def phases(bl: NodeBlocklist) -> list[str]:
    seen: list[str] = []

    def note(loading: Loading) -> None:
        if not seen or seen[-1] != loading.phase:
            seen.append(loading.phase)

    bl.on_progress = note
    return seen


def test_a_shipped_table_is_mapped_without_a_local_compile(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, _workers, lists = node(tmp_path, keys)
    sign(lists, keys, 1, ENTRIES)
    seen = phases(bl)
    bl.load_initial()
    assert bl.tables_shipped == 1 and bl.table_rejections == {}
    assert "table" in seen and "compile" not in seen  # no entry was canonicalised here
    assert bl.file_sequence == 1 and bl.version == 1
    assert bl.counts() == {"url": 97, "prefix": 1, "host": 1, "sha256": 1}
    assert bl.known("q") and not bl.known("zz")
    enforces_entries(worker_view(bl))


async def test_pushes_over_a_shipped_table_load_as_the_overlay(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, workers, lists = node(tmp_path, keys)
    write_version(lists / version_filename(1), 1, ENTRIES[:2], private_key_pem=keys[0])
    bl.load_initial()
    await bl.push([{"id": "x1", "type": "url", "value": "http://pushed.example/a"}])
    await bl.push([{"id": "u", "type": "prefix", "value": "http://a.example/over/"}])
    sign(lists, keys, 2, ENTRIES)
    assert await bl.reload_dir() is not None
    assert bl.tables_shipped == 1 and bl.table_rejections == {}
    op, args = workers.sent[-1]
    assert op == "blocklist.load" and {e["id"] for e in args["add"]} == {"x1", "u"}
    snap = worker_view(bl)
    assert snap.check("pushed.example", "/a", None) is not None
    over = snap.check("a.example", "/over/z", None)
    assert over is not None and over.id == "u"  # the push replaces the file's "u"
    assert snap.check("a.example", "/x", None) is None
    assert bl.counts() == {"url": 97, "prefix": 2, "host": 1, "sha256": 1}
    await bl.remove("u")  # the file's entry is back, as a delta over the shipped table
    snap = worker_view(bl)
    back = snap.check("a.example", "/x", None)
    assert back is not None and back.id == "u"
    assert snap.check("a.example", "/over/z", None) is None


def delta(lists: Path, keys: tuple[bytes, bytes], sequence: int) -> None:
    write_version(
        lists / version_filename(sequence),
        sequence,
        [Entry(f"new{sequence}", EntryType.HOST, f"new{sequence}.example")],
        base=sequence - 1,
        removes=["h"],
        private_key_pem=keys[0],
    )


async def test_deltas_after_a_shipped_version_apply_without_a_compile(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """A delta resting on the enforced version is applied as changes over its table (a
    probe per entry it names), as a feed's delta is: no compile job reads the chain again."""
    bl, workers, lists = node(tmp_path, keys)
    sign(lists, keys, 1, ENTRIES)
    bl.load_initial()
    compiles = bl.compiles
    for sequence in (2, 3):
        delta(lists, keys, sequence)
        assert await bl.reload_dir() is not None
        assert workers.sent[-1][0] == "blocklist.delta" and bl.compiles == compiles
    snap = worker_view(bl)
    assert bl.file_sequence == 3 and bl.history[0]["source"] == "file:3"
    assert snap.check("a.new2.example", "/", None) is not None
    assert snap.check("new3.example", "/", None) is not None
    assert snap.check("pirate.example", "/", None) is None
    assert snap.check("a.example", "/watch", "v=42") is not None
    assert bl.counts() == {"url": 97, "prefix": 1, "host": 2, "sha256": 1}
    assert await bl.reload_dir() is None  # nothing newer


async def test_a_delta_whose_base_left_the_directory_is_refused_as_always(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, workers, lists = node(tmp_path, keys)
    sign(lists, keys, 1, ENTRIES)
    bl.load_initial()
    (lists / version_filename(1)).unlink()
    delta(lists, keys, 2)
    assert await bl.reload_dir() is None
    assert bl.file_sequence == 1 and workers.sent == []
    assert "delta base sequence 1 not found" in bl.last_errors[-1]


def altered(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    raw = bytearray(table.read_bytes())
    raw[-9] ^= 0xFF
    table.write_bytes(bytes(raw))


def other_key(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    resign(manifest, generate_keypair()[0])


def bad_signature(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    line, sig = manifest.read_bytes().split(b"\n")[:2]
    manifest.write_bytes(line.replace(b'"keys":', b'"keys": ') + b"\n" + sig + b"\n")


def another_version(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    resign(manifest, keys[0], sequence=7)


def another_header(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    resign(manifest, keys[0], header_sha256="00" * 32)


def another_canonicaliser(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    resign(manifest, keys[0], canonicaliser=CANONICALISER_VERSION + 1)


def truncated(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    table.write_bytes(table.read_bytes()[:-100])


def altered_and_vouched(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    """A body byte changed and the manifest signed for it: only the table's own checksum,
    taken in the same pass as the sha256, finds it."""
    altered(table, manifest, keys)
    resign(manifest, keys[0], table_sha256=hashlib.sha256(table.read_bytes()).hexdigest())


def altered_header(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    """A header byte changed: the header no longer parses, and the bytes are what is told."""
    raw = bytearray(table.read_bytes())
    raw[20] ^= 0xFF
    table.write_bytes(bytes(raw))


def truncated_and_vouched(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    table.write_bytes(table.read_bytes()[:-100])
    resign(
        manifest,
        keys[0],
        table_sha256=hashlib.sha256(table.read_bytes()).hexdigest(),
        table_bytes=table.stat().st_size,
    )


def lacks_entries(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    """A valid table, vouched for, without every other entry of the version."""
    write_table(table, ENTRIES[::2], 1, time.time())
    vouch(manifest, table, keys[0])


def no_manifest(table: Path, manifest: Path, keys: tuple[bytes, bytes]) -> None:
    manifest.unlink()


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (altered, "table-hash"),
        (other_key, "signature"),
        (bad_signature, "signature"),
        (another_version, "version"),
        (another_header, "version"),
        (another_canonicaliser, "canonicaliser"),
        (truncated, "table-size"),
        (truncated_and_vouched, "table-corrupt"),
        (altered_and_vouched, "table-corrupt"),
        (altered_header, "table-hash"),
        (lacks_entries, "spot-check"),
        (no_manifest, "incomplete"),
    ],
)
@pytest.mark.parametrize("install", ["copy", "link"])
def test_a_bad_shipped_table_falls_back_to_a_local_compile(
    tmp_path: Path, keys: tuple[bytes, bytes], spoil: Any, reason: str, install: str
) -> None:
    bl, _workers, lists = node(tmp_path, keys, table_install=install)
    version = sign(lists, keys, 1, ENTRIES)
    spoil(*shipped.companions(version), keys)
    table = shipped.companions(version)[0]
    mode = table.stat().st_mode if table.exists() else None
    seen = phases(bl)
    bl.load_initial()
    assert bl.table_rejections == {reason: 1} and bl.tables_shipped == 0
    assert "compile" in seen  # compiled here instead
    assert bl.file_sequence == 1 and bl.reload_failures == 0
    enforces_entries(worker_view(bl))
    assert (table.stat().st_mode if table.exists() else None) == mode  # left as it came
    if table.exists():
        assert table.stat().st_nlink == 1  # no link of the refused table stays in the state


def test_a_version_without_companions_is_compiled_as_always(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, _workers, lists = node(tmp_path, keys)
    write_version(lists / version_filename(1), 1, ENTRIES, private_key_pem=keys[0])
    bl.load_initial()
    assert bl.table_rejections == {} and bl.tables_shipped == 0
    enforces_entries(worker_view(bl))


def test_no_shipped_table_is_used_when_the_spot_check_is_off(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, _workers, lists = node(tmp_path, keys, table_spot_check_entries=0)
    sign(lists, keys, 1, ENTRIES)
    bl.load_initial()
    assert bl.table_rejections == {} and bl.tables_shipped == 0
    enforces_entries(worker_view(bl))


def test_the_spot_check_samples_lines_uniformly_and_finds_a_gap(tmp_path: Path) -> None:
    """With more lines than the sample, lines are drawn at random byte offsets and kept in
    inverse proportion to their length: short and long lines are drawn alike."""
    lines = [b"s" * 47 if i % 2 else b"l" * 470 for i in range(4000)]
    data = b"H\n" + b"\n".join(lines) + b"\n"
    drawn = list(shipped.sample_lines(data, 2, len(data), len(lines), 1000, random.Random(7)))
    assert len(drawn) == 1000 and len({at for at, _ in drawn}) == 1000
    longs = sum(1 for _, line in drawn if line.startswith(b"l"))
    assert 400 < longs < 600
    assert all(line in (b"s" * 47, b"l" * 470) for _, line in drawn)


def test_a_disk_full_during_the_copy_is_a_refusal_that_leaves_nothing(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's copy into the state dir fails (disk full): refused as `copy`, no file left;
    the caller then compiles (and fails, counted, if the disk is still full)."""
    import errno

    from proxy.blocklist.format import Reading, read_version

    lists = tmp_path / "lists"
    lists.mkdir()
    version = sign(lists, keys, 1, ENTRIES)

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shipped, "copy_bytes", full)
    refused: list[shipped.Rejected] = []
    out = tmp_path / "state" / "file.map"
    out.parent.mkdir()

    def take(offer: Any) -> bool:
        try:
            return shipped.adopt(offer, keys[1], out, 9, spot_check=10)
        except shipped.Rejected as e:
            refused.append(e)
            return False

    v = read_version(version, keys[1], max_bytes=1 << 30, reading=Reading(shipped=take))
    assert len(v.adds) == len(ENTRIES)  # read (and compiled) as always
    assert [e.reason for e in refused] == [shipped.Reason.COPY]
    assert "No space left" in str(refused[0]) and list(out.parent.iterdir()) == []


@pytest.mark.parametrize("spoil", [None, lacks_entries])
def test_shipped_tables_with_parallel_readers(
    tmp_path: Path, keys: tuple[bytes, bytes], spoil: Any
) -> None:
    """`compile_processes` > 1: a good table is taken the same way; a refused one's version
    is read by the parallel readers, as without companions."""
    bl, _workers, lists = node(tmp_path, keys, compile_processes=2)
    version = sign(lists, keys, 1, ENTRIES)
    if spoil is not None:
        spoil(*shipped.companions(version), keys)
    bl.load_initial()
    assert bl.tables_shipped == (spoil is None)
    assert bl.table_rejections == ({} if spoil is None else {"spot-check": 1})
    enforces_entries(worker_view(bl))


async def test_a_full_version_is_never_read_by_the_supervisor(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only deltas over a table are read in the supervisor (`chain.read_links`, after their
    unverified headers); a full one goes to the child whole (a 10M-entry version read there
    first cost a minute)."""
    import proxy.blocklist.chain as chain_module

    bl, _workers, lists = node(tmp_path, keys)
    sign(lists, keys, 1, ENTRIES)
    bl.load_initial()
    read: list[object] = []
    real = chain_module.read_version
    monkeypatch.setattr(
        chain_module, "read_version", lambda *a, **k: read.append(a) or real(*a, **k)
    )
    sign(lists, keys, 2, ENTRIES[:50])
    assert await bl.reload_dir() is not None
    assert read == [] and bl.tables_shipped == 2 and bl.file_sequence == 2
    delta(lists, keys, 3)
    assert await bl.reload_dir() is not None
    assert len(read) == 1 and bl.file_sequence == 3


async def test_a_linked_table_is_the_shipped_file_with_its_signers_stamp(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """`table_install = "link"`: the node maps the shipped inode (no second copy on disk),
    made read-only, unstamped (so the shipped file still matches its manifest: a restarted
    node takes it again); workers are told the stamp to expect and refuse another."""
    from proxy.blocklist.mapped import load_mapped
    from proxy.blocklist.table import TableError

    bl, _workers, lists = node(tmp_path, keys, table_install="link")
    version = sign(lists, keys, 5, ENTRIES)  # the signer's sequence 5, the node's version 1
    table = shipped.companions(version)[0]
    seen = phases(bl)
    bl.load_initial()
    assert bl.tables_shipped == 1 and "compile" not in seen
    args = bl.load_args()
    mapped = Path(args["path"])
    assert mapped.stat().st_ino == table.stat().st_ino
    assert table.stat().st_mode & 0o222 == 0
    assert (args["version"], args["stamp"]) == (1, 5)
    enforces_entries(worker_view(bl))
    snap = await load_mapped(mapped, 1, time.time(), stamp=5)
    assert snap.version == 1 and snap.check("b.example", "/manga/one", None) is not None
    with pytest.raises(TableError, match="holds version 5, expected 1"):
        await load_mapped(mapped, 1, time.time())
    again, _, _ = node(tmp_path / "restarted", keys, table_install="link", dir=str(lists))
    again.load_initial()
    assert again.tables_shipped == 1 and again.table_rejections == {}
    enforces_entries(worker_view(again))


def test_a_link_across_filesystems_is_a_copy(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    import os
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        bl, _workers, _ = node(tmp_path, keys, table_install="link", dir=other)
        version = sign(Path(other), keys, 5, ENTRIES)
        table = shipped.companions(version)[0]
        bl.load_initial()
        assert bl.tables_shipped == 1 and bl.table_rejections == {}
        args = bl.load_args()
        assert os.stat(args["path"]).st_ino != table.stat().st_ino
        assert "stamp" not in args  # the node's own copy, stamped with its version
        assert table.stat().st_mode & 0o222  # the shipped file left as it came
        enforces_entries(worker_view(bl))


def _spoil_signature(version: Path) -> None:
    """The version's signature, still base64 of 64 bytes, no longer matching its bytes."""
    data = version.read_bytes()
    head, _, sig_line = data[:-1].rpartition(b"\n")
    sig = msgspec.json.decode(sig_line)
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 1
    sig["signature"] = base64.b64encode(bytes(raw)).decode()
    version.write_bytes(head + b"\n" + msgspec.json.encode(sig) + b"\n")


def test_a_manifest_vouches_for_its_version_so_the_whole_file_is_not_hashed_twice(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest signed by the list's key binds the version's exact header, and the header's
    sha256 binds every entry line (checked as always): the version's own Ed25519 signature,
    which hashes every byte (20 s at 100M entries), is not checked again. Without a manifest
    that vouches for it, the same spoiled signature is refused, as always."""
    from proxy.blocklist.format import read_version

    bl, _workers, lists = node(tmp_path, keys)
    version = sign(lists, keys, 1, ENTRIES)
    _spoil_signature(version)
    bl.load_initial()
    assert bl.tables_shipped == 1 and bl.reload_failures == 0
    enforces_entries(worker_view(bl))
    with pytest.raises(BlocklistError, match="bad signature"):
        read_version(version, keys[1], max_bytes=1 << 20)  # as `edgeproxy blocklist verify`

    for spoil in (other_key, another_header):  # a manifest that does not vouch: checked as always
        other = tmp_path / spoil.__name__
        bl2, _, lists2 = node(other, keys)
        v = sign(lists2, keys, 1, ENTRIES)
        spoil(*shipped.companions(v), keys)
        _spoil_signature(v)
        with pytest.raises(Exception, match="no valid version"):
            bl2.load_initial()
        assert bl2.tables_shipped == 0


def test_a_vouched_version_with_other_entry_lines_is_refused(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """Vouching covers the header; the entry lines must still hash to the header's sha256."""
    bl, _workers, lists = node(tmp_path, keys)
    version = sign(lists, keys, 1, ENTRIES)
    version.write_bytes(version.read_bytes().replace(b"http://a.example/x", b"http://a.example/y"))
    with pytest.raises(Exception, match="no valid version"):
        bl.load_initial()
    assert any("sha256 of the entry lines" in e for e in bl.last_errors)
