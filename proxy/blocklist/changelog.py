"""The supervisor's log of pushes and removals between two writes of its state (issue 12).

A push is answered once every worker enforces it and once it is on disk, so that a restart
cannot forget what an answer named. The state files (`pushed-entries.json`, the version) were
rewritten whole for every push: temp files, fsyncs, renames and a directory fsync, a journal
commit of the filesystem each, and the whole pushed list encoded again every time. Where other
writers share the filesystem (a node tier committing, a second table being read) a commit
waits for theirs: pushes at 100M entries took p50 4 and p99 18 ms to persist on a busy
machine, the slowest part of their answer (benchmarks/README.md, "Pushes without the disk").

Here a change is one record written in place into a file whose blocks were written once when
it was made, then `fdatasync`: no size, no block allocation, no name changes, so the
filesystem's journal has nothing to commit and the sync is the data block alone (0.15 ms
against 0.8 for the two state files on this machine, idle). The state files are still
written whole at every other change (a file version, a fold) and when the log is full; each
such write empties the log (`reset`), and the next record goes to its start.

Layout: `blocklist.change_log_bytes` bytes, zeros where nothing was written; records one after
the other from offset 0, each `magic, payload length, xxh3-64 of the payload`, then the payload
(msgpack `Change`). Reading stops at the first record that is not whole: a torn last write
(a crash before its fsync returned: its push was never answered) ends the log. Records left
from before the last reset carry versions the state files already hold and are skipped; a
new record overwrites them from the start, so no older record ever follows a newer one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from proxy.blocklist.model import Entry

_MAGIC = b"EPC1"
_RECORD = struct.Struct("<4sIQ")  # magic, payload length, xxh3-64 of the payload
_ZEROS = 1 << 20  # written at a time when the file is made


class Change(msgspec.Struct, frozen=True, array_like=True):
    """What one push or removal did to the pushed entries, the node version it made, and the
    publisher's signed audit-log head that came with it (as `NodeBlocklist.audit_head` keeps
    it), if any."""

    version: int
    pushed: list[Entry] = []
    unpushed: list[str] = []
    audit_head: dict[str, Any] | None = None


class ChangeLog:
    """One log file, open for the supervisor's life. Not thread-safe: the node appends under
    its lock, one change at a time."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._at = 0  # where the next record goes
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            have = os.fstat(self._fd).st_size
            if have < size:  # blocks written once, so a record never allocates one
                for at in range(have, size, _ZEROS):
                    os.pwrite(self._fd, bytes(min(_ZEROS, size - at)), at)
                os.fsync(self._fd)
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except BaseException:
            os.close(self._fd)
            raise

    def replay(self, base_version: int) -> Iterator[Change]:
        """The changes made after `base_version` (what the state files hold), in order;
        call before the first `append`."""
        at, last = 0, base_version
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        while at + _RECORD.size <= len(data):
            magic, length, check = _RECORD.unpack_from(data, at)
            start = at + _RECORD.size
            payload = data[start : start + length]
            if (
                magic != _MAGIC
                or len(payload) != length
                or xxhash.xxh3_64_intdigest(payload) != check
            ):
                break
            try:
                change = msgspec.msgpack.decode(payload, type=Change)
            except (msgspec.DecodeError, msgspec.ValidationError):
                break
            at = start + length
            if change.version > last:
                last = change.version
                yield change

    def append(self, change: Change) -> bool:
        """Write `change` after the last record and sync it; False (nothing written) when
        it does not fit: the caller writes the state files whole and `reset`s."""
        payload = msgspec.msgpack.encode(change)
        record = _RECORD.pack(_MAGIC, len(payload), xxhash.xxh3_64_intdigest(payload)) + payload
        if self._at + len(record) > self.size:
            return False
        written = os.pwrite(self._fd, record, self._at)
        if written != len(record):
            raise OSError(f"{self.path}: short write ({written} of {len(record)} bytes)")
        os.fdatasync(self._fd)
        self._at += len(record)
        return True

    def reset(self) -> None:
        """The state files now hold every change logged: the next record goes first."""
        self._at = 0

    def close(self) -> None:
        os.close(self._fd)
