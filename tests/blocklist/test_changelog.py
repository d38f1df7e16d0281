"""Pushes and removals logged in place between two writes of the node's state (issue 12): a
restart finds every answered change, a torn last record ends the log, records older than the
state files are skipped, and a full log falls back to writing the state whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.blocklist.changelog import Change, ChangeLog
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import NodeBlocklist
from proxy.config import BlocklistConfig, Config


def entry(i: int) -> Entry:
    return Entry(f"p{i}", EntryType.URL, f"http://a.example/{i}")


def test_changes_come_back_in_order_after_the_base(tmp_path: Path) -> None:
    path = tmp_path / "changes.log"
    log = ChangeLog(path, 1 << 16)
    assert path.stat().st_size == 1 << 16  # its blocks written once, up front
    for v in range(5, 9):
        assert log.append(Change(v, [entry(v)]))
    assert log.append(Change(9, unpushed=["p6"]))
    log.close()
    again = ChangeLog(path, 1 << 16)
    assert [c.version for c in again.replay(4)] == [5, 6, 7, 8, 9]
    assert [c.version for c in again.replay(7)] == [8, 9]  # the state files hold up to 7
    assert list(again.replay(9)) == []
    assert next(iter(again.replay(8))) == Change(9, [], ["p6"])


@pytest.mark.parametrize("damage", ["cut", "flipped byte", "zeros"])
def test_a_torn_last_record_ends_the_log(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "changes.log"
    log = ChangeLog(path, 1 << 16)
    for v in (1, 2, 3):
        log.append(Change(v, [entry(v)]))
    log.close()
    data = bytearray(path.read_bytes())
    third = data.index(b"EPC1", data.index(b"EPC1", 4) + 4)
    if damage == "cut":  # the last write reached the disk in part
        data[third + 20 :] = bytes(len(data) - third - 20)
    elif damage == "flipped byte":
        data[third + 30] ^= 0x10
    else:
        data[third : third + 16] = bytes(16)
    path.write_bytes(bytes(data))
    assert [c.version for c in ChangeLog(path, 1 << 16).replay(0)] == [1, 2]


def test_after_a_reset_new_records_overwrite_the_old_ones(tmp_path: Path) -> None:
    """The state files were written whole at version 3: records up to 3 are stale, the new
    ones (4, 5) start again at the top; a record left behind them is never replayed."""
    path = tmp_path / "changes.log"
    log = ChangeLog(path, 1 << 16)
    for v in (1, 2, 3):
        log.append(Change(v, [entry(v)]))
    log.reset()
    log.append(Change(4, [entry(4)]))
    log.append(Change(5, unpushed=["p4"]))
    log.close()
    assert [c.version for c in ChangeLog(path, 1 << 16).replay(3)] == [4, 5]


def test_a_change_that_does_not_fit_is_not_written(tmp_path: Path) -> None:
    log = ChangeLog(tmp_path / "changes.log", 512)
    assert log.append(Change(1, [entry(1)]))
    assert not log.append(Change(2, [entry(i) for i in range(50)]))
    assert [c.version for c in log.replay(0)] == [1]


def node_at(state: Path, **blocklist: Any) -> NodeBlocklist:
    cfg = msgspec.structs.replace(
        Config(), blocklist=BlocklistConfig(compile_quiet_s=3600.0, **blocklist)
    )

    async def broadcast(op: str, args: dict[str, object]) -> list[dict[str, object]]:
        return [{"applied_at": 1.0}]

    node = NodeBlocklist(cfg, state, broadcast)
    node.load_initial()
    return node


async def test_a_restart_after_pushes_finds_every_one_answered(tmp_path: Path) -> None:
    """Pushes and removals go to the log (the state files are not rewritten); a node that
    dies without writing them (no clean stop) starts with every answered change."""
    state = tmp_path / "state"
    node = node_at(state)
    pushed_file = (state / "pushed-entries.json").read_bytes()
    for i in range(30):
        await node.push([msgspec.to_builtins(entry(i))])
    assert await node.remove("p7") is not None
    assert (state / "pushed-entries.json").read_bytes() == pushed_file  # not rewritten
    version = node.version
    again = node_at(state)
    assert again.version == version + 1  # its start is a version of its own
    assert sorted(again.pushed) == sorted(f"p{i}" for i in range(30) if i != 7)
    assert b"p29" in (state / "pushed-entries.json").read_bytes()  # written whole at start
    assert await again.remove("p29") is not None
    assert set(node_at(state).pushed) == set(again.pushed)


async def test_a_full_log_or_none_writes_the_state_whole(tmp_path: Path) -> None:
    for size in (600, 0):
        state = tmp_path / f"state-{size}"
        node = node_at(state, change_log_bytes=size)
        for i in range(12):
            await node.push([msgspec.to_builtins(entry(i))])
        again = node_at(state, change_log_bytes=size)
        assert again.version == node.version + 1 and sorted(again.pushed) == sorted(node.pushed)
        assert (state / "blocklist-changes.log").exists() == (size > 0)


async def test_the_audit_head_sent_with_a_push_is_kept_with_its_change(tmp_path: Path) -> None:
    """A publisher's signed audit-log head comes with its push (the takedown service's): it is
    logged with the change, one write for both, and a restart has it."""
    state = tmp_path / "state"
    node = node_at(state)
    head = {"seq": 41, "hash": "ab" * 32, "signature": "sig"}
    await node.push([msgspec.to_builtins(entry(1))], audit_head=head)
    assert node.audit_head is not None and node.audit_head["seq"] == 41
    assert b"sig" in (state / "blocklist-changes.log").read_bytes()  # with its change
    assert await node.remove("p1", audit_head={**head, "seq": 42}) is not None
    assert node._head_mirror is not None
    await node._head_mirror  # audit-head.json follows, off the answer's path
    assert json.loads((state / "audit-head.json").read_text())["seq"] == 42
    assert await node.remove("absent", audit_head={**head, "seq": 43}) is None
    again = node_at(state)
    assert again.audit_head is not None
    assert (again.audit_head["seq"], again.audit_head["via"]) == (43, "remove")
    third = node_at(state)
    assert third.audit_head == again.audit_head


async def test_a_head_logged_with_a_change_is_on_disk_before_the_log_is_reused(
    tmp_path: Path,
) -> None:
    """The mirror of audit-head.json has not run (a crash right after the answer), then the
    state is written whole (a full log): the head goes to its file first, since a restart
    skips the records the state files hold."""
    state = tmp_path / "state"
    node = node_at(state, change_log_bytes=700)
    node._mirror_audit_head = lambda: None  # type: ignore[method-assign]
    head = {"seq": 5, "hash": "cd" * 32, "signature": "sig"}
    await node.push([msgspec.to_builtins(entry(1))], audit_head=head)
    assert not (state / "audit-head.json").exists()
    for i in range(2, 8):  # fills the log: the state is written whole
        await node.push([msgspec.to_builtins(entry(i))])
    assert json.loads((state / "audit-head.json").read_text())["seq"] == 5
    again = node_at(state)
    assert again.audit_head is not None and again.audit_head["seq"] == 5
    assert sorted(again.pushed) == [f"p{i}" for i in range(1, 8)]


async def test_a_head_only_the_log_holds_survives_a_restart(tmp_path: Path) -> None:
    """The node stops (killed) after a push's answer and before audit-head.json follows: the
    log's head, newer than the file's, is the one a restart keeps."""
    state = tmp_path / "state"
    node = node_at(state)
    node.keep_audit_head({"seq": 1, "hash": "ab" * 32, "signature": "old"}, "file:1")
    node._mirror_audit_head = lambda: None  # type: ignore[method-assign]
    head = {"seq": 2, "hash": "cd" * 32, "signature": "new"}
    await node.push([msgspec.to_builtins(entry(1))], audit_head=head)
    assert json.loads((state / "audit-head.json").read_text())["seq"] == 1
    again = node_at(state)
    assert again.audit_head is not None and again.audit_head["seq"] == 2
    assert json.loads((state / "audit-head.json").read_text())["seq"] == 2
