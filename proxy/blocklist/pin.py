"""The probe sections of the table workers map, locked in memory by the supervisor (issue 12).

Every probe of a mapped table (`MappedTable.find`: a request's miss-path check, a push's
`index_of`) reads the directory, the hashes and a record offset: ~20 bytes a key, 4.9 GB at
100M entries, spread over random pages. When the page cache lets one of them go, the probe
waits for the disk: a push at 100M entries took a major fault of 3-10 ms in each worker
(benchmarks/README.md, "Pushes without the disk"). A table larger than memory (29 GB at 100M
here), a node tier streaming cache objects through the page cache, or any other file traffic
makes that the normal case, not the exception.

`mlock` keeps those pages resident whatever else the machine reads: the supervisor maps the
probe sections of the table workers map and locks them (the page cache's pages, shared with
every worker's mapping: no copy, the file's own memory). Pinning is best effort: a refused
lock (`RLIMIT_MEMLOCK`, 8 MiB by default for a user without `CAP_IPC_LOCK`) is logged with
what it would take and counted, and the node goes on with the page cache's judgement, as it
did before. `blocklist.pin_probe_sections = false` turns it off.

Hand-written over `ctypes`: Python's `mmap` has no `mlock`, and a read-only `mmap` object does
not give its address. A lock takes as long as reading the pages it has to fault in (seconds at
100M from a cold disk), so it runs in a thread of its own, never on the supervisor's loop, and
the previous table's pages are let go only once the new one's are held.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import os
import threading
from pathlib import Path

from proxy.blocklist.table import MappedTable, TableError

log = logging.getLogger("edgeproxy.blocklist")

# Added to the nice value of the thread that locks a table's probe sections: `mlock` faults
# every page in (4.9 GB at 100M entries), which must not compete with serving during a swap.
PIN_NICE = 10
_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        )
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


class Pin:
    """Bytes [start, end) of a file, mapped and locked in memory until `release`."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.path = path
        if _LIBC is None:
            raise OSError("no mlock on this platform")
        offset = start - start % mmap.ALLOCATIONGRANULARITY
        self.size = end - offset
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            addr = _LIBC.mmap(None, self.size, _PROT_READ, _MAP_SHARED, fd, offset)
        finally:
            os.close(fd)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap: {os.strerror(err)}")
        if _LIBC.mlock(addr, self.size) != 0:
            err = ctypes.get_errno()
            _LIBC.munmap(addr, self.size)
            raise OSError(err, f"mlock of {self.size:,} bytes: {os.strerror(err)}")
        self._addr: int | None = addr

    def release(self) -> None:
        """Unlock and unmap (once)."""
        if self._addr is not None and _LIBC is not None:
            _LIBC.munmap(self._addr, self.size)
        self._addr = None


class Pinner:
    """The supervisor's pin of the current table's probe sections: `pin(path)` for each
    table that becomes the one workers map (in a thread; the old pin goes once the new one
    holds, or when it cannot be taken)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.pinned_bytes = 0  # what is locked now
        self.failures = 0  # tables whose probe sections could not be locked
        self._pin: Pin | None = None
        self._wanted: Path | None = None
        self._lock = threading.Lock()  # one pin at a time, in the order asked
        self._thread: threading.Thread | None = None  # the pin last asked for

    def pin(self, path: Path) -> threading.Thread | None:
        """Lock `path`'s probe sections in a thread of its own (returned; None when off)."""
        if not self.enabled:
            return None
        self._wanted = path
        thread = threading.Thread(target=self._pin_now, args=(path,), name="blocklist-pin")
        thread.daemon = True
        thread.start()
        self._thread = thread
        return thread

    async def settled(self) -> None:
        """Once the pin last asked for is taken or refused."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join)

    def holds(self, path: Path | None) -> bool:
        """`path`'s probe sections are locked now."""
        pin = self._pin
        return pin is not None and path is not None and pin.path == path

    def _pin_now(self, path: Path) -> None:
        try:  # faulting gigabytes in takes what serving leaves of the CPU, as the checks do
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + PIN_NICE)
        except (OSError, AttributeError):
            pass  # not Linux, or not allowed: at the supervisor's priority
        with self._lock:
            if self._wanted != path:
                return  # a newer table was asked for meanwhile
            new: Pin | None = None
            try:
                new = Pin(path, *MappedTable(path).probe_span)
            except (OSError, TableError) as e:
                self.failures += 1
                log.warning(
                    "blocklist table %s: its probe sections are not locked in memory (%s); "
                    "probes may wait for the disk when the page cache lets them go. Raise the "
                    "memory-lock limit (RLIMIT_MEMLOCK, systemd LimitMEMLOCK=) or set "
                    "blocklist.pin_probe_sections = false",
                    path,
                    e,
                )
            old, self._pin = self._pin, new
            self.pinned_bytes = new.size if new is not None else 0
            if old is not None:
                old.release()

    def close(self) -> None:
        with self._lock:
            self._wanted = None
            if self._pin is not None:
                self._pin.release()
            self._pin, self.pinned_bytes = None, 0
