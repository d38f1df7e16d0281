"""The compiled table file: bad files are refused, and the last good list keeps enforcing.

Issue 12, "Bad input": a truncated or corrupt compiled file, a version whose compile fails
(a full disk), a worker told to load a bad file."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.blocklist.format import generate_keypair, version_filename, write_version
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import NodeBlocklist
from proxy.blocklist.table import HEADER_SIZE, MappedTable, TableError, write_table
from proxy.config import BlocklistConfig, Config
from proxy.node.control import BlocklistLoad
from proxy.node.worker import Worker
from tests.integration.conftest import config

ENTRIES = [
    Entry(id="u", type=EntryType.URL, value="http://a.example/x"),
    Entry(id="h", type=EntryType.HOST, value="pirate.example", notice="N-7"),
    Entry(id="d", type=EntryType.SHA256, value="cd" * 32),
]


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "v1.map"
    write_table(path, ENTRIES, 1, 0.0)
    return path


@pytest.fixture
def reads(monkeypatch: Any) -> list[tuple[int, int]]:
    """The (start, end) of every pass a `MappedTable` makes over its file (`_read_through`),
    in this process."""
    import proxy.blocklist.table as table_module

    seen: list[tuple[int, int]] = []
    real = table_module.MappedTable._read_through

    def record(self: MappedTable, start: int, end: int, *rest: Any) -> None:
        seen.append((start, end))
        real(self, start, end, *rest)

    monkeypatch.setattr(table_module.MappedTable, "_read_through", record)
    return seen


def _open_checked(path: Path) -> MappedTable:
    table = MappedTable(path)
    table.verify()
    return table


def test_a_good_file_opens_and_answers(good: Path) -> None:
    snap = MappedSnapshot.open(_open_checked(good), 1, 0.0)
    assert snap.check("cdn.pirate.example", "/", None) == ENTRIES[1]
    assert snap.check_digest(bytes.fromhex("cd" * 32)) == ENTRIES[2]


@pytest.mark.parametrize("keep", [0, 10, HEADER_SIZE - 1, HEADER_SIZE + 8, -1])
def test_a_truncated_file_is_refused(good: Path, keep: int) -> None:
    data = good.read_bytes()
    good.write_bytes(data[: keep if keep >= 0 else len(data) - 1])
    with pytest.raises(TableError, match="truncated"):
        _open_checked(good)


def test_a_flipped_byte_in_the_body_is_refused_by_the_checksum(good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    good.write_bytes(bytes(data))
    table = MappedTable(good)  # the header is intact
    with pytest.raises(TableError, match="checksum mismatch"):
        table.verify()


def test_a_flipped_byte_in_the_header_is_refused(good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[20] ^= 0x40  # inside the build time
    good.write_bytes(bytes(data))
    with pytest.raises(TableError, match="header checksum"):
        MappedTable(good)


def test_another_kind_of_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.map"
    path.write_bytes(b"\x93\x01" * 300)
    with pytest.raises(TableError, match="not a compiled blocklist"):
        MappedTable(path)
    with pytest.raises(TableError, match="No such file"):
        MappedTable(tmp_path / "absent.map")


@pytest.mark.parametrize("check", ["thread", "child"])
@pytest.mark.parametrize("damage", ["flipped byte", "cut by 1", "cut by 4096"])
async def test_a_worker_refuses_a_corrupt_file_and_keeps_enforcing(
    tmp_path: Path, damage: str, check: str
) -> None:
    """In a thread (a small table) or a child process (`check_in_child_min_bytes` and up)."""
    cfg = config("http://127.0.0.1:9")
    min_bytes = 0 if check == "child" else 1 << 30
    blocklist = msgspec.structs.replace(cfg.blocklist, check_in_child_min_bytes=min_bytes)
    worker = Worker(msgspec.structs.replace(cfg, blocklist=blocklist), 0)
    first = tmp_path / "v1.map"
    write_table(first, ENTRIES, 1, time.time())
    await worker.blocklist_load(BlocklistLoad(path=str(first), version=1, format="mapped"))
    enforced = worker.pipeline.blocklist
    bad = tmp_path / "v2.map"
    many = [Entry(id=f"n{i}", type=EntryType.HOST, value=f"h{i}.example") for i in range(500)]
    write_table(bad, many, 2, time.time())
    data = bytearray(bad.read_bytes())
    if damage == "flipped byte":
        data[-3] ^= 0xFF
    else:
        del data[-int(damage.rsplit(" ", 1)[1]) :]
    bad.write_bytes(bytes(data))
    with pytest.raises(TableError, match="checksum" if damage == "flipped byte" else "truncated"):
        await worker.blocklist_load(BlocklistLoad(path=str(bad), version=2, format="mapped"))
    assert worker.pipeline.blocklist is enforced and enforced.version == 1
    assert worker.pipeline.blocklist.check("pirate.example", "/", None) == ENTRIES[1]
    assert worker.stats.blocklist_load_failures == 1


def _sealed_table(path: Path, entries: list[Entry], version: int) -> BlocklistLoad:
    """A table written and checked, as the supervisor tells a worker of it: with its seal.
    Its mtime is set a minute back first, so a write after the seal is seen whatever the
    filesystem's timestamp granularity."""
    write_table(path, entries, version, time.time())
    back = time.time_ns() - 60_000_000_000
    os.utime(path, ns=(back, back))
    seal = _open_checked(path).seal
    return BlocklistLoad(path=str(path), version=version, format="mapped", seal=seal)


@pytest.mark.parametrize("pinned", [True, False])
async def test_a_sealed_table_is_mapped_without_its_check(
    tmp_path: Path, reads: list[tuple[int, int]], pinned: bool
) -> None:
    """The file the supervisor checked (the same seal) is not read again by the worker: at
    most its probe sections, once, when the supervisor does not hold them locked."""
    worker = Worker(config("http://127.0.0.1:9"), 0)
    load = _sealed_table(tmp_path / "v1.map", ENTRIES, 1)
    reads.clear()
    await worker.blocklist_load(msgspec.structs.replace(load, pinned=pinned))
    table = MappedTable(tmp_path / "v1.map")
    assert reads == ([] if pinned else [table.probe_span])
    assert worker.pipeline.blocklist.check("pirate.example", "/", None) == ENTRIES[1]
    assert (worker.stats.blocklist_tables_sealed, worker.stats.blocklist_tables_checked) == (1, 0)


@pytest.mark.parametrize("check", ["thread", "child"])
@pytest.mark.parametrize("change", ["byte rewritten", "cut by 8", "replaced", "no seal"])
async def test_a_table_that_is_not_the_sealed_file_is_checked_whole(
    tmp_path: Path, change: str, check: str
) -> None:
    """A seal names one file as it was checked: a write in place (a new mtime), a cut (a new
    size) or another file at the path (a new inode) is checked whole by the worker, and
    refused when damaged, as is any table sent without a seal."""
    cfg = config("http://127.0.0.1:9")
    min_bytes = 0 if check == "child" else 1 << 30
    blocklist = msgspec.structs.replace(cfg.blocklist, check_in_child_min_bytes=min_bytes)
    worker = Worker(msgspec.structs.replace(cfg, blocklist=blocklist), 0)
    await worker.blocklist_load(_sealed_table(tmp_path / "v1.map", ENTRIES, 1))
    enforced = worker.pipeline.blocklist
    many = [Entry(id=f"n{i}", type=EntryType.HOST, value=f"h{i}.example") for i in range(500)]
    path = tmp_path / "v2.map"
    load = _sealed_table(path, many, 2)
    if change == "byte rewritten":
        with open(path, "r+b") as f:  # in place: same inode and size, a new mtime
            f.seek(-3, os.SEEK_END)
            last = f.read(1)
            f.seek(-3, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))
    elif change == "cut by 8":
        os.truncate(path, path.stat().st_size - 8)
    elif change == "replaced":  # another good table of the same version
        other = tmp_path / "other.map"
        write_table(other, many[:10], 2, time.time())
        other.replace(path)
    else:
        load = msgspec.structs.replace(load, seal=None)
    if change in ("replaced", "no seal"):
        await worker.blocklist_load(load)
        assert worker.pipeline.blocklist.version == 2
        assert worker.stats.blocklist_tables_checked == 1
        return
    with pytest.raises(TableError, match="checksum" if change == "byte rewritten" else "truncated"):
        await worker.blocklist_load(load)
    assert worker.pipeline.blocklist is enforced and enforced.version == 1
    assert worker.stats.blocklist_load_failures == 1
    assert (worker.stats.blocklist_tables_sealed, worker.stats.blocklist_tables_checked) == (1, 0)


async def test_the_supervisor_seals_each_compiled_table_unless_told_not_to(
    tmp_path: Path,
) -> None:
    """What workers are told of a compiled table: its seal as the supervisor found it once
    the job checked it (none with `worker_check_whole`), and whether its probe sections are
    locked in memory."""
    private, public = generate_keypair()
    lists = tmp_path / "lists"
    lists.mkdir()
    write_version(lists / version_filename(1), 1, ENTRIES, private_key_pem=private)
    (tmp_path / "pub.pem").write_bytes(public)

    async def broadcast(_op: str, _args: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    for whole in (False, True):
        blocklist = BlocklistConfig(
            dir=str(lists), public_key=str(tmp_path / "pub.pem"), worker_check_whole=whole
        )
        cfg = msgspec.structs.replace(Config(), blocklist=blocklist)
        node = NodeBlocklist(cfg, tmp_path / f"state-{whole}", broadcast)
        node.load_initial()
        await node.pinner.settled()
        args = node.load_args()
        load = msgspec.convert(args, type=BlocklistLoad)
        assert load.format == "mapped" and load.pinned
        if whole:
            assert load.seal is None
        else:
            assert load.seal == MappedTable(Path(load.path)).seal
        node.pinner.close()


@contextlib.contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """A full disk, as the kernel reports it to a writer: no file this process (or a child it
    starts meanwhile, the compile child) writes may grow past `max_bytes` (EFBIG; Python
    ignores SIGXFSZ). The soft limit only, restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_a_version_whose_compile_fails_leaves_the_last_good_one(tmp_path: Path) -> None:
    """The disk fills half way through the compile (in the compile child): nothing is
    distributed, the version number does not move, the failure is counted and reported with
    its cause, and no partial file is left for a worker to find."""
    private, public = generate_keypair()
    (tmp_path / "pub.pem").write_bytes(public)
    lists = tmp_path / "lists"
    lists.mkdir()
    cfg = msgspec.structs.replace(
        Config(),
        blocklist=BlocklistConfig(dir=str(lists), public_key=str(tmp_path / "pub.pem")),
    )
    sent: list[str] = []

    async def broadcast(op: str, _args: dict[str, Any]) -> list[dict[str, Any]]:
        sent.append(op)
        return []

    node = NodeBlocklist(cfg, tmp_path / "state", broadcast)
    write_version(lists / version_filename(1), 1, ENTRIES, private_key_pem=private)
    node.load_initial()
    version, path = node.version, node.compiled_path
    assert path is not None and path.exists()
    many = [Entry(id=f"n{i}", type=EntryType.HOST, value=f"h{i}.example") for i in range(5000)]
    write_version(lists / version_filename(2), 2, many, private_key_pem=private)
    before = sorted(p.name for p in (tmp_path / "state").iterdir())
    with file_size_limit(64 << 10):
        assert await node.reload_dir() is None
    assert node.version == version and node.compiled_path == path and sent == []
    assert node.reload_failures == 1 and "File too large" in node.last_errors[-1]
    assert node.file_sequence == 1 and {e.id for e in node.entries()} == {"u", "h", "d"}
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == before
    assert await node.reload_dir() is not None  # the cause gone, the same file applies
    assert node.version == version + 1 and sent == ["blocklist.load"]
    assert node.known("n4999") and not node.known("u")


async def test_an_overlay_past_its_share_is_folded_into_a_new_base(tmp_path: Path) -> None:
    """Pushes go to workers as deltas; once they pass `overlay_max_fraction` of the base (and
    1000), the refreshed compiled file is swapped into every worker: the version and its
    applied_at proof stay as they were."""
    cfg = msgspec.structs.replace(
        Config(), blocklist=BlocklistConfig(compile_quiet_s=0.0, overlay_max_fraction=0.5)
    )
    sent: list[tuple[str, int]] = []

    async def broadcast(op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        sent.append((op, args["version"]))
        return [{"applied_at": 1.0}]

    node = NodeBlocklist(cfg, tmp_path / "state", broadcast)
    node.load_initial()
    small = [{"id": f"s{i}", "type": "host", "value": f"s{i}.example"} for i in range(10)]
    await node.push(small)
    assert node._refresh is not None
    await node._refresh
    assert [op for op, _ in sent] == ["blocklist.delta"] and node.folds == 0
    big = [{"id": f"b{i}", "type": "host", "value": f"b{i}.example"} for i in range(1001)]
    result = await node.push(big)
    await node._refresh
    assert sent[-1] == ("blocklist.load", result["version"]) and node.folds == 1
    assert node.version == result["version"] and node.overlay_changes == 0
    assert node.applied_at == result["applied_at"] and node.history[0]["source"] == "push"
    loaded = MappedSnapshot.open(_open_checked(Path(node.load_args()["path"])), node.version, 0)
    assert len(loaded) == 1011 and loaded.overlay_size == 0


def test_a_check_gives_up_the_gil_every_few_mib(tmp_path: Path, monkeypatch: Any) -> None:
    """A worker may check a new table in a thread beside its serving loop: the check hands
    the GIL over (a `time.sleep(0)`) after every `_VERIFY_STEP_BYTES`, so the Python between
    pieces never keeps the loop waiting across a whole 64 MiB piece."""
    import proxy.blocklist.table as table_module

    path = tmp_path / "t.map"
    entries = [
        Entry(f"u{i}", EntryType.URL, f"http://a.example/{i:08d}/" + "x" * 200)
        for i in range(40_000)
    ]
    write_table(path, entries, 1, time.time())
    table = MappedTable(path)
    sleeps: list[float] = []
    monkeypatch.setattr(table_module.time, "sleep", sleeps.append)
    table.verify()
    size = path.stat().st_size
    assert size > 3 * table_module._VERIFY_STEP_BYTES
    assert len(sleeps) >= size // table_module._VERIFY_STEP_BYTES and set(sleeps) == {0}


async def test_a_worker_reads_the_probe_sections_again_after_the_check(
    tmp_path: Path, reads: list[tuple[int, int]]
) -> None:
    """A table larger than the page cache (100M entries) loses its directory to the check's
    stream of the whole file, and a probe of a new key (a push's `index_of`) then waits for
    the disk. A worker's load reads the sections every probe reads (directory, hashes,
    record offsets) once more after the check, and nothing else."""
    from proxy.blocklist.mapped import load_mapped

    path = tmp_path / "v1.map"
    entries = [Entry(f"u{i}", EntryType.URL, f"http://a.example/{i}") for i in range(3000)]
    write_table(path, entries, 1, time.time())
    snap = await load_mapped(path, 1, time.time())
    table = snap.table
    body, probe = reads
    assert body == (HEADER_SIZE, path.stat().st_size)  # the check: the whole body
    assert probe[0] == HEADER_SIZE and probe[0] < probe[1] < body[1]
    dir_bytes, key_bytes = table._dir.nbytes, 8 * table.keys
    assert probe[1] - probe[0] >= dir_bytes + 2 * key_bytes  # directory, hashes, offsets
    assert snap.check("a.example", "/17", None) == entries[17]


def test_state_files_are_replaced_together_or_not_at_all(tmp_path: Path) -> None:
    """`write_atomic_all`: every file is replaced whole and no temp file is left; when one
    cannot be written, none is replaced."""
    from proxy.blocklist.format import write_atomic_all

    a, b = tmp_path / "pushed.json", tmp_path / "version"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    write_atomic_all({a: b"new a" * 1000, b: b"7"})
    assert a.read_bytes() == b"new a" * 1000 and b.read_bytes() == b"7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pushed.json", "version"]
    assert oct(a.stat().st_mode & 0o777) == oct(0o644)

    missing = tmp_path / "absent" / "record.json"  # its directory is gone: mkstemp fails
    with pytest.raises(FileNotFoundError):
        write_atomic_all({a: b"newer a", b: b"8", missing: b"{}"})
    assert a.read_bytes() == b"new a" * 1000 and b.read_bytes() == b"7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pushed.json", "version"]


async def test_a_child_checks_the_file_mapped_not_what_the_path_names_later(
    tmp_path: Path,
) -> None:
    """The child is handed the worker's file by descriptor and answers its checksum: a good
    table is taken, a damaged one refused with the path and cause, and a path replaced since
    the worker mapped it is refused rather than checked in its place."""
    from proxy.blocklist.tablecheck import check_in_child

    path = tmp_path / "v1.map"
    write_table(path, ENTRIES, 1, time.time())
    await check_in_child(MappedTable(path), 0)

    mapped = MappedTable(path)  # then the path is replaced by another good table
    other = tmp_path / "other.map"
    write_table(other, ENTRIES[:1], 1, time.time())
    other.replace(path)
    with pytest.raises(TableError, match="replaced since it was mapped"):
        await check_in_child(mapped, 0)

    bad = tmp_path / "v2.map"
    many = [Entry(id=f"n{i}", type=EntryType.HOST, value=f"h{i}.example") for i in range(500)]
    write_table(bad, many, 2, time.time())
    data = bytearray(bad.read_bytes())
    data[-3] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(TableError, match=f"{bad}: checksum mismatch"):
        await check_in_child(MappedTable(bad), 0)
    # "keep" (a sealed table the supervisor does not hold locked) reads the probe sections
    # alone: the damage past them is not its to find, and it answers the header's checksum
    await check_in_child(MappedTable(bad), 0, "keep")


def test_a_check_child_whose_worker_is_gone_does_not_run(tmp_path: Path) -> None:
    """The child asks to be killed with its worker; one that finds its worker already gone
    (its parent is not the pid it was given) ends at once without checking."""
    import subprocess
    import sys

    path = tmp_path / "v1.map"
    write_table(path, ENTRIES, 1, time.time())
    with open(path, "rb") as f:
        argv = [sys.executable, "-m", "proxy.blocklist.tablecheck", str(f.fileno()), str(path)]
        ok = subprocess.run([*argv, "0", str(os.getpid())], pass_fds=(f.fileno(),),
                            capture_output=True, check=False)  # fmt: skip
        orphan = subprocess.run([*argv, "0", "1"], pass_fds=(f.fileno(),),
                                capture_output=True, check=False)  # fmt: skip
    assert ok.returncode == 0 and b'"checksum"' in ok.stdout
    assert orphan.returncode == 1 and orphan.stdout == b""


async def test_without_a_child_the_table_is_checked_in_a_thread(
    tmp_path: Path, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No child process can start (here: no interpreter at `sys.executable`): the worker
    says so and checks in a thread, so the version is still taken, and a damaged one still
    refused."""
    import sys

    from proxy.blocklist.mapped import load_mapped

    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    path = tmp_path / "v1.map"
    write_table(path, ENTRIES, 1, time.time())
    snap = await load_mapped(path, 1, time.time(), check_in_child_min_bytes=0)
    assert snap.check("pirate.example", "/", None) == ENTRIES[1]
    assert "could not start" in caplog.text and "checked in a thread instead" in caplog.text
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TableError, match="checksum mismatch"):
        await load_mapped(path, 1, time.time(), check_in_child_min_bytes=0)
