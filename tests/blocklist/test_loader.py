"""The compile child (proxy/blocklist/loader.py): the supervisor holds no version's entries, and
a child that dies, fails half way or hangs leaves the last good version enforced.

Issue 12, "Bad input": each failure is logged with its cause and counted, and no worker is
ever told of a half-built file."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.blocklist.compiled import load_compiled
from proxy.blocklist.format import (
    AddLine,
    parse_version,
    render_version,
    version_filename,
    write_version,
)
from proxy.blocklist.loader import CompileFailed, run
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import Loading, NodeBlocklist, StartupRefused
from proxy.blocklist.table import MappedTable
from proxy.config import BlocklistConfig, Config
from tests.blocklist.signing import signed_lines

FIRST = [
    Entry("u", EntryType.URL, "http://a.example/x"),
    Entry("h", EntryType.HOST, "pirate.example", notice="N-7"),
    Entry("d", EntryType.SHA256, "cd" * 32),
]


class Workers:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        self.sent.append((op, args))
        return [{"worker": 0, "version": args["version"], "applied_at": time.time()}]


def node(
    tmp_path: Path, keys: tuple[bytes, bytes], **bl: Any
) -> tuple[NodeBlocklist, Workers, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pub.pem").write_bytes(keys[1])
    lists = Path(bl.pop("dir", tmp_path / "lists"))  # another node's directory: a restart
    lists.mkdir(exist_ok=True)
    cfg = msgspec.structs.replace(
        Config(),
        blocklist=BlocklistConfig(dir=str(lists), public_key=str(tmp_path / "pub.pem"), **bl),
    )
    workers = Workers()
    return NodeBlocklist(cfg, tmp_path / "state", workers), workers, lists


def started(
    tmp_path: Path, keys: tuple[bytes, bytes], **bl: Any
) -> tuple[NodeBlocklist, Workers, Path]:
    """A node enforcing FIRST, signed as version 1, from its start."""
    node_, workers, lists = node(tmp_path, keys, **bl)
    write_version(lists / version_filename(1), 1, FIRST, private_key_pem=keys[0])
    node_.load_initial()
    return node_, workers, lists


def kept_the_last_good(
    bl: NodeBlocklist, workers: Workers, version: int, before: list[str]
) -> None:
    """Nothing moved: version, workers, file layer, state files; one failure counted."""
    assert bl.version == version and workers.sent == [] and bl.file_sequence == 1
    assert bl.reload_failures == 1 and bl.loading is None
    assert state_files(bl.state_dir.parent) == before  # no half-built file, no temporaries
    assert bl.known("u") and {e.id for e in bl.entries()} == {"u", "h", "d"}


def hosts(n: int, prefix: str = "n") -> list[Entry]:
    return [Entry(f"{prefix}{i}", EntryType.HOST, f"{prefix}{i}.example") for i in range(n)]


def state_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "state").iterdir())


def enforced(node: NodeBlocklist) -> MappedSnapshot:
    """What a worker that (re)starts now maps: the compiled file, checked whole."""
    table = MappedTable(Path(node.load_args()["path"]))
    table.verify()
    return MappedSnapshot.open(table, node.compiled_version, time.time())


async def test_the_supervisor_answers_from_the_mapped_file_layer(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """No entry list in the supervisor: ids, counts and a removed push's uncovered file entry
    come from the file layer's table."""
    bl, workers, lists = node(tmp_path, keys)
    write_version(lists / version_filename(1), 1, FIRST, private_key_pem=keys[0])
    bl.load_initial()
    assert not hasattr(bl, "file_entries") and bl.file_table is not None
    assert bl.known("u") and bl.known("d") and not bl.known("x")
    assert bl.counts() == {"url": 1, "prefix": 0, "host": 1, "sha256": 1}
    # When nothing is pushed, workers map the file layer itself (one file, linked).
    assert os.path.samefile(bl.load_args()["path"], bl.file_table.path)
    pushed = {"id": "u", "type": "prefix", "value": "http://a.example/p/"}
    await bl.push([pushed])
    assert bl.counts() == {"url": 0, "prefix": 1, "host": 1, "sha256": 1}
    await bl.remove("u")
    op, args = workers.sent[-1]
    assert op == "blocklist.delta" and args["remove"] == ["u"]
    assert args["add"] == [msgspec.to_builtins(FIRST[0])]  # the file's entry is back
    assert bl.counts() == {"url": 1, "prefix": 0, "host": 1, "sha256": 1}


async def test_a_compile_child_killed_mid_compile_leaves_the_last_good_version(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, workers, lists = started(tmp_path, keys)
    version, path = bl.version, bl.compiled_path
    write_version(lists / version_filename(2), 2, hosts(3000), private_key_pem=keys[0])
    before = state_files(tmp_path)
    killed: list[int] = []

    def kill(loading: Loading) -> None:
        if not killed:
            killed.append(loading.pid)
            os.kill(loading.pid, signal.SIGKILL)

    bl.on_progress = kill
    assert await bl.reload_dir() is None
    assert killed and bl.compiled_path == path
    kept_the_last_good(bl, workers, version, before)
    assert "killed by SIGKILL" in bl.last_errors[-1] and not bl.known("n0")
    assert {e.id for e in enforced(bl).entries_by_id.values()} == {"u", "h", "d"}
    bl.on_progress = None
    assert await bl.reload_dir() is not None  # nothing wrong with the version itself
    assert bl.file_sequence == 2 and bl.known("n2999") and not bl.known("u")
    assert workers.sent[-1][0] == "blocklist.load"


def signed_with_a_bad_line(keys: tuple[bytes, bytes], sequence: int, bad_at: int) -> bytes:
    """A correctly signed version whose entry line `bad_at` does not validate (a url entry
    with no host): the signature holds, the entry fails half way through the read."""
    lines = [
        AddLine(
            id=f"b{i}",
            type=EntryType.URL,
            value="http:///no-host" if i == bad_at else f"http://b.example/{i}",
        )
        for i in range(2 * bad_at)
    ]
    return signed_lines(keys[0], lines, sequence)


async def test_a_version_that_fails_half_way_keeps_the_last_good_one(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, workers, lists = started(tmp_path, keys)
    version, before = bl.version, state_files(tmp_path)
    (lists / version_filename(2)).write_bytes(signed_with_a_bad_line(keys, 2, 500))
    assert await bl.reload_dir() is None
    kept_the_last_good(bl, workers, version, before)
    assert ":502: entry 'b500'" in bl.last_errors[-1]  # the file, the line, the cause


async def test_a_compile_that_hangs_is_stopped_at_its_timeout(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, workers, lists = started(tmp_path, keys)
    write_version(lists / version_filename(2), 2, hosts(2000), private_key_pem=keys[0])
    version, before = bl.version, state_files(tmp_path)
    # Shorter than a fresh interpreter takes to import the loader: it is stopped mid-way.
    bl.cfg = msgspec.structs.replace(bl.cfg, compile_timeout_s=0.001)
    assert await bl.reload_dir() is None
    kept_the_last_good(bl, workers, version, before)
    assert "longer than 0.001 s" in bl.last_errors[-1]


async def test_a_compile_beside_serving_starts_in_the_idle_class_and_leaves_it(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """A compile beside serving workers takes only CPU time they leave (SCHED_IDLE) for its
    first `compile_idle_s`, then goes on at its nice value: a node whose cores serving keeps
    busy still takes the version."""
    classes: dict[int, list[int]] = {}

    def note(loading: Loading) -> None:
        with contextlib.suppress(OSError):
            classes.setdefault(loading.pid, []).append(os.sched_getscheduler(loading.pid))

    for idle_s, expected in ((60.0, os.SCHED_IDLE), (0.001, os.SCHED_OTHER)):
        bl, workers, lists = started(tmp_path / str(idle_s), keys, compile_idle_s=idle_s)
        write_version(lists / version_filename(2), 2, hosts(3000), private_key_pem=keys[0])
        classes.clear()
        bl.on_progress = note
        assert await bl.reload_dir() is not None
        assert bl.file_sequence == 2 and bl.known("n2999")
        (seen,) = classes.values()
        assert set(seen) == {expected}, seen


async def test_a_compile_that_may_not_leave_the_idle_class_is_run_again(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Leaving SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE that allows it: without, the
    job still in the idle class at `compile_idle_s` is stopped and run again at its nice
    value, so a busy node still takes the version."""
    from proxy.blocklist import loader

    monkeypatch.setattr(loader, "_leave_idle", lambda _pid: False)
    bl, workers, lists = started(tmp_path, keys, compile_idle_s=0.05)
    write_version(lists / version_filename(2), 2, hosts(3000), private_key_pem=keys[0])
    pids: dict[int, int] = {}

    def note(loading: Loading) -> None:
        with contextlib.suppress(OSError):
            pids[loading.pid] = os.sched_getscheduler(loading.pid)

    bl.on_progress = note
    assert await bl.reload_dir() is not None
    assert bl.file_sequence == 2 and bl.known("n2999") and not bl.known("u")
    assert list(pids.values())[-1] == os.SCHED_OTHER  # the job that finished
    assert "run again at nice +10" in caplog.text
    assert workers.sent[-1][0] == "blocklist.load"


def test_leaving_the_idle_class_moves_every_thread_of_the_job_and_its_children() -> None:
    """`_leave_idle`: the job's threads and the processes it forked (parallel readers)."""
    import subprocess
    import sys

    from proxy.blocklist.loader import _leave_idle, _threads_below

    code = (
        "import os, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "kid = os.fork()\n"
        "if kid == 0: time.sleep(30); os._exit(0)\n"
        "print(kid, flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        kid = int(proc.stdout.readline())
        tids = _threads_below(proc.pid)
        assert proc.pid in tids and kid in tids and len(tids) >= 3
        for tid in tids:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        assert _leave_idle(proc.pid)
        assert {os.sched_getscheduler(t) for t in tids} == {os.SCHED_OTHER}
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(kid, signal.SIGKILL)


def test_a_start_whose_compile_fails_is_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    bl, _workers, lists = node(tmp_path, keys, compile_timeout_s=0.001)
    write_version(lists / version_filename(1), 1, FIRST, private_key_pem=keys[0])
    with pytest.raises(StartupRefused, match="could not be compiled: .*longer than"):
        bl.load_initial()
    assert not any(p.suffix == ".map" for p in (tmp_path / "state").iterdir())


async def test_the_msgpack_format_is_compiled_by_the_child_too(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    bl, workers, lists = node(tmp_path, keys, compiled_format="msgpack")
    write_version(lists / version_filename(1), 1, FIRST, private_key_pem=keys[0])
    bl.load_initial()
    await bl.push([{"id": "p", "type": "host", "value": "pushed.example"}])
    write_version(lists / version_filename(2), 2, hosts(3000), private_key_pem=keys[0])
    result = await bl.reload_dir()
    assert result is not None and workers.sent[-1][0] == "blocklist.load"
    args = bl.load_args()
    snap = await load_compiled(Path(args["path"]), args["version"], time.time())
    assert len(snap) == 3001 and snap.check("pushed.example", "/", None) is not None
    assert bl.known("n7") and bl.known("p") and not bl.known("u")
    assert bl.counts()["host"] == 3001


def test_progress_reaches_the_supervisor(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """The child reports each phase's start and end at least; the supervisor keeps the job's
    state (`loading`) while it runs and drops it after."""
    bl, _workers, lists = node(tmp_path, keys)
    write_version(lists / version_filename(1), 1, hosts(70000), private_key_pem=keys[0])
    seen: list[dict[str, Any]] = []
    bl.on_progress = lambda loading: seen.append(loading.as_dict())
    bl.load_initial()
    assert bl.loading is None
    phases = {s["phase"] for s in seen}
    assert phases == {"read", "compile"}
    last = seen[-1]
    assert last["phase"] == "compile" and last["entries_done"] == last["entries_total"] == 70000
    assert all(s["pid"] == last["pid"] and s["what"] == "file" for s in seen)
    reads = [s for s in seen if s["phase"] == "read" and s["entries_total"] == 70000]
    assert reads and reads[-1]["entries_done"] == 70000


async def test_feed_versions_large_and_small_go_through_the_file_layer(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """A feed's versions (apply_version): a large full one and a large delta are compiled by
    the child; a small delta stays a change over the file layer's table, and the next
    refresh folds it into a new one."""

    def version(seq: int, adds: list[Entry], **kw: Any) -> Any:
        data = render_version(seq, adds, private_key_pem=keys[0], **kw)
        return parse_version(data, "feed", keys[1])

    bl, workers, _lists = node(
        tmp_path, keys, allow_empty=True, compile_quiet_s=0.0, overlay_max_fraction=0.001
    )
    bl.load_initial()
    await bl.apply_version(version(1, hosts(3000)))
    assert workers.sent[-1][0] == "blocklist.load" and bl.file_sequence == 1
    assert bl.counts()["host"] == 3000 and bl.known("n2999")
    removed = [f"n{i}" for i in range(2000)]
    await bl.apply_version(version(2, [], base=1, removes=removed))
    assert workers.sent[-1][0] == "blocklist.load" and bl.counts()["host"] == 1000
    assert not bl.known("n0") and bl.known("n2000") and bl._file_changes == {}
    assert {e.id for e in enforced(bl).entries_by_id.values()} == {
        f"n{i}" for i in range(2000, 3000)
    }
    table = bl.file_table
    await bl.apply_version(version(3, hosts(3, "m"), base=2, removes=["n2000"]))
    op, args = workers.sent[-1]
    assert op == "blocklist.delta" and args["remove"] == ["n2000"] and len(args["add"]) == 3
    assert bl.file_table is table and set(bl._file_changes) == {"n2000", "m0", "m1", "m2"}
    assert bl.known("m1") and not bl.known("n2000") and bl.counts()["host"] == 1002
    await bl.push(
        [{"id": f"p{i}", "type": "url", "value": f"http://p.example/{i}"} for i in range(1001)]
    )
    assert bl._refresh is not None
    await bl._refresh  # past the fold threshold: recompiled, the feed's changes folded in
    assert bl.file_table is not table and bl._file_changes == {} and bl.folds == 1
    assert bl.known("m1") and not bl.known("n2000") and bl.counts()["host"] == 1002
    assert len(enforced(bl)) == 1002 + 1001


async def test_an_unwritable_state_dir_keeps_the_last_good_version(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """The state directory gone from under the node (root ignores permission bits, so a path
    that fails stands for an unwritable one): the child cannot write, the supervisor keeps
    enforcing from the table it has mapped."""
    bl, workers, lists = started(tmp_path, keys)
    version = bl.version
    write_version(lists / version_filename(2), 2, hosts(3000), private_key_pem=keys[0])
    (tmp_path / "state").rename(tmp_path / "elsewhere")
    assert await bl.reload_dir() is None
    assert bl.version == version and workers.sent == [] and bl.file_sequence == 1
    assert bl.reload_failures == 1 and "No such file or directory" in bl.last_errors[-1]
    assert bl.known("u") and not bl.known("n1")  # answered from the mapped table
    (tmp_path / "elsewhere").rename(tmp_path / "state")
    assert await bl.reload_dir() is not None and bl.known("n1")


async def test_a_table_cut_short_after_the_child_checked_it_is_not_used(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """What the child names is opened again (header and size) before a worker is told."""
    bl, _workers, lists = started(tmp_path, keys)
    write_version(lists / version_filename(2), 2, hosts(3000), private_key_pem=keys[0])
    job = bl._job(bl.version + 1, "dir")
    summary = run(job, lambda _p: None)
    assert summary.node_written
    out = Path(job.node_out)
    out.write_bytes(out.read_bytes()[:-100])  # the file and its link to the file layer's
    with pytest.raises(CompileFailed, match="truncated"):
        bl._check_outputs(job, summary)
