"""Follow a directory of blocklist versions and call back when it may have changed.

Three sources wake the watcher: native file events (watchfiles, on the *directory*, so a file
replaced by rename is seen), a slow stat poll (for filesystems that do not deliver events, and as
a safety net for missed ones), and `trigger()` (wired to SIGHUP). Wakes are debounced and the
callback never runs concurrently with itself; it is expected to be idempotent (loading the same
newest version twice is a no-op), so a spurious wake costs one directory scan.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import watchfiles

log = logging.getLogger(__name__)

_Signature = frozenset[tuple[str, int, int, int]]


class DirectoryWatcher:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        on_change: Callable[[], Awaitable[None]],
        *,
        suffix: str = ".jsonl",
        poll_interval_s: float = 30.0,
        debounce_s: float = 0.2,
        native: bool = True,
    ) -> None:
        """`poll_interval_s` <= 0 disables polling; `native=False` disables file events."""
        self.directory = Path(directory)
        self.suffix = suffix
        self.poll_interval_s = poll_interval_s
        self.debounce_s = debounce_s
        self.native = native
        self.runs = 0  # completed on_change calls (for status and tests)
        self.failures = 0  # on_change calls that raised
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None
        self._signature: _Signature = frozenset()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("watcher already started")
        self._loop = asyncio.get_running_loop()
        self._signature = self._scan()
        self._runner = asyncio.create_task(self._run(), name="blocklist-watch-run")
        if self.native:
            self._tasks.append(asyncio.create_task(self._native(), name="blocklist-watch-native"))
        if self.poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll(), name="blocklist-watch-poll"))

    async def stop(self) -> None:
        """Stop watching; an on_change already running is allowed to finish."""
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self._runner is not None:
            await self._runner
            self._runner = None

    async def __aenter__(self) -> DirectoryWatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def trigger(self) -> None:
        """Ask for a check now (SIGHUP). Safe to call from any thread or a signal handler
        installed with loop.add_signal_handler."""
        loop = self._loop
        if loop is None:
            self._wake.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # -- sources --------------------------------------------------------------------------

    def _interesting(self, name: str) -> bool:
        return name.endswith(self.suffix) and not name.startswith(".")

    async def _native(self) -> None:
        def keep(_change: watchfiles.Change, path: str) -> bool:
            return self._interesting(os.path.basename(path))

        try:
            async for _changes in watchfiles.awatch(
                self.directory,
                watch_filter=keep,
                stop_event=self._stop_event,
                debounce=max(1, int(self.debounce_s * 1000)),
                step=50,
                recursive=False,
            ):
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the poll keeps working; say why events stopped
            log.warning(
                "blocklist watcher: file events unavailable for %s: %s", self.directory, exc
            )

    def _scan(self) -> _Signature:
        try:
            with os.scandir(self.directory) as it:
                items = []
                for e in it:
                    if not self._interesting(e.name):
                        continue
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    items.append((e.name, st.st_mtime_ns, st.st_size, st.st_ino))
                return frozenset(items)
        except OSError:
            return frozenset()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            if self._scan() != self._signature:
                self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self._stopping:
                return
            await asyncio.sleep(self.debounce_s)
            if self._stopping:
                return
            self._wake.clear()
            self._signature = self._scan()
            try:
                await self._on_change()
            except Exception:
                self.failures += 1
                log.exception("blocklist watcher: on_change failed for %s", self.directory)
            self.runs += 1
