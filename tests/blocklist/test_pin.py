"""The probe sections of the mapped table, locked in memory by the supervisor (issue 12):
held while current, let go once a newer table's are held, and a refused lock is logged and
counted without stopping anything."""

from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.blocklist import pin as pin_module
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.pin import Pin, Pinner
from proxy.blocklist.table import MappedTable, write_table

# The tables here lock at most 48 KiB at once: within RLIMIT_MEMLOCK for any user (8 MiB by
# default on current Linux and systemd, 64 KiB on older kernels; root is not bound by it).


def locked_kib() -> int:
    """This process's locked memory (VmLck), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    raise AssertionError("no VmLck in /proc/self/status")


def kib(size: int) -> int:
    """What locking `size` bytes adds to VmLck: whole pages."""
    return -(-size // 4096) * 4


def table(path: Path, n: int) -> Path:
    entries = [Entry(f"u{i}", EntryType.URL, f"http://a.example/{i}") for i in range(n)]
    write_table(path, entries, 1, time.time())
    return path


def test_a_pin_locks_exactly_the_probe_sections_until_released(tmp_path: Path) -> None:
    path = table(tmp_path / "t.map", 1_000)
    start, end = MappedTable(path).probe_span
    assert 0 < start < end < path.stat().st_size
    before = locked_kib()
    pinned = Pin(path, start, end)
    assert pinned.size >= end - start
    assert locked_kib() - before == kib(pinned.size)
    pinned.release()
    pinned.release()  # once only
    assert locked_kib() == before


def test_the_pinner_holds_the_current_table_and_lets_the_old_one_go(tmp_path: Path) -> None:
    first, second = table(tmp_path / "v1.map", 200), table(tmp_path / "v2.map", 800)
    before = locked_kib()
    pinner = Pinner(enabled=True)
    thread = pinner.pin(first)
    assert thread is not None
    thread.join(timeout=30)
    one = pinner.pinned_bytes
    assert one > 0 and locked_kib() - before == kib(one)
    thread = pinner.pin(second)
    assert thread is not None
    thread.join(timeout=30)
    two = pinner.pinned_bytes
    assert two > one and locked_kib() - before == kib(two)  # the first one let go
    pinner.close()
    assert pinner.pinned_bytes == 0 and locked_kib() == before
    assert pinner.failures == 0
    assert Pinner(enabled=False).pin(first) is None


def test_a_refused_lock_is_logged_and_counted(
    tmp_path: Path, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As a user without CAP_IPC_LOCK past RLIMIT_MEMLOCK sees it (ENOMEM from mlock)."""
    path = table(tmp_path / "v1.map", 200)
    libc = pin_module._LIBC
    assert libc is not None

    def refuse(_addr: Any, _size: Any) -> int:
        ctypes.set_errno(errno.ENOMEM)
        return -1

    pinner = Pinner(enabled=True)
    thread = pinner.pin(path)
    assert thread is not None
    thread.join(timeout=30)
    assert pinner.pinned_bytes > 0
    before = locked_kib()
    monkeypatch.setattr(libc, "mlock", refuse)
    thread = pinner.pin(table(tmp_path / "v2.map", 300))
    assert thread is not None
    thread.join(timeout=30)
    assert pinner.failures == 1 and pinner.pinned_bytes == 0
    assert locked_kib() < before  # the old table's went too: workers map it no more
    assert "are not locked in memory" in caplog.text and "RLIMIT_MEMLOCK" in caplog.text
    pinner.close()


def test_the_lock_is_taken_at_a_lower_priority(tmp_path: Path, monkeypatch: Any) -> None:
    """Faulting a large table's sections in competes with serving during a swap: the thread
    that does it has its nice value raised by PIN_NICE, the caller's is not."""
    import threading

    seen: list[int] = []
    real = pin_module.Pin

    def recording(*args: Any) -> Pin:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(*args)

    monkeypatch.setattr(pin_module, "Pin", recording)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pinner = Pinner(enabled=True)
    thread = pinner.pin(table(tmp_path / "v1.map", 200))
    assert thread is not None
    thread.join(timeout=30)
    assert seen == [min(19, mine + pin_module.PIN_NICE)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    pinner.close()
