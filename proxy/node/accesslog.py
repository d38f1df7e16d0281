"""The access log: one JSON line per (sampled) request, written in batches off the hot path.

`record()` is all a request pays: a sampling draw (only when sampling), one tuple appended to a
list, and a timer armed on the first record of a batch. Every `FLUSH_INTERVAL_S` the batch is
formatted with msgspec and handed to a writer thread, which appends it with one `os.write` per
chunk. So a slow disk or a full stdout pipe never stalls the event loop: the buffer fills, and
records beyond `max_buffered` are dropped and counted (`dropped`, and the
`edgeproxy_access_log_dropped_total` counter when given the worker's stats).

Several workers may share one destination: files are opened with O_APPEND (each batch lands
whole, lines never interleave), and on pipes writes are cut at line boundaries into chunks of at
most PIPE_BUF bytes, which POSIX writes atomically. A file renamed away (logrotate without
copytruncate) is noticed at the next batch and reopened by path, like Python's WatchedFileHandler.

Fields: time (RFC 3339 UTC, when the request head arrived), worker, site ("-" when no site was
admitted), host, method, target (the canonical forward form, or the raw target when admit refused
it), status, result, bytes (body bytes sent), duration_ms, and when they apply origin_ms,
blocked_id, blocked_type, no_store.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import os
import random
import select
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from proxy.context import RequestCtx
    from proxy.front.api import FrontRequest
    from proxy.metrics import WorkerStats
    from proxy.rfc.target import Target

FLUSH_INTERVAL_S = 0.2
MAX_BUFFERED = 65536  # records waiting to be formatted
MAX_PENDING_BYTES = 16 << 20  # formatted bytes waiting for the writer thread
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


class AccessRecord(msgspec.Struct, omit_defaults=True):
    time: str
    worker: int
    site: str
    method: str
    target: str
    status: int
    result: str
    bytes: int
    duration_ms: float
    host: str = ""
    origin_ms: float | None = None
    blocked_id: str = ""
    blocked_type: str = ""
    no_store: str = ""


# What `record` keeps: (received_at, site_index, host, method, target bytes, status, result,
# bytes_sent, elapsed_s, origin_s, blocked_id, blocked_type, no_store).
_Row = tuple[float, int, str, str, bytes, int, str, int, float, float, str, str, str]


class AccessLog:
    def __init__(
        self,
        dest: str,
        sample: float,
        site_names: list[str],
        worker: int,
        *,
        stats: WorkerStats | None = None,
        max_buffered: int = MAX_BUFFERED,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"access log sample must be within 0..1, got {sample}")
        self.dest = dest
        self.sample = sample
        self._sampling = sample < 1.0
        self.site_names = site_names
        self.worker = worker
        self.stats = stats
        self.max_buffered = max_buffered
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self.written = 0  # lines handed to the OS
        self.write_errors = 0
        self.lost = 0  # lines a failed write took with it
        self._rows: list[_Row] = []
        self._timer: asyncio.TimerHandle | None = None
        self._pending: collections.deque[bytes] = collections.deque()
        # Each counter has one writer (the loop thread, or whoever holds _lock): no lost updates.
        self._queued_bytes = 0
        self._written_bytes = 0
        self._writing = False
        self._lock = threading.Lock()  # one writer at a time, and close() after it
        self._encoder = msgspec.json.Encoder()
        self._second = -1
        self._second_text = ""
        self._closed = False
        self._fd = -1
        self._ino: tuple[int, int] | None = None
        self._is_pipe = False
        self._open()
        atexit.register(self.close)

    # -- the hot path -------------------------------------------------------------------------

    def record(self, ctx: RequestCtx, elapsed_s: float) -> None:
        if self._sampling and random.random() >= self.sample:
            return
        rows = self._rows
        if len(rows) >= self.max_buffered:
            self._drop(1)
            return
        target = ctx.target
        rows.append(
            (
                ctx.request.received_at,
                ctx.site_index,
                target.authority,
                ctx.method,
                target.raw_path_query or ctx.request.raw_target,  # refused: as received
                ctx.status,
                ctx.result,
                ctx.bytes_sent,
                elapsed_s,
                ctx.origin_s,
                ctx.blocked_id,
                ctx.blocked_type,
                ctx.no_store or "",
            )
        )
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._tick)

    def record_hit(
        self,
        request: FrontRequest,
        target: Target,
        site_index: int,
        status: int,
        nbytes: int,
        elapsed_s: float,
    ) -> None:
        """`record` for the hot hit path, which has no RequestCtx to hand (building one just to
        log it would scan the header list again)."""
        if self._sampling and random.random() >= self.sample:
            return
        rows = self._rows
        if len(rows) >= self.max_buffered:
            self._drop(1)
            return
        rows.append(
            (
                request.received_at,
                site_index,
                target.authority,
                request.method,
                target.raw_path_query,
                status,
                "hit",
                nbytes,
                elapsed_s,
                0.0,
                "",
                "",
                "",
            )
        )
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._tick)

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.stats is not None:
            self.stats.access_log_dropped += n

    # -- batching -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        if self._queued_bytes - self._written_bytes < MAX_PENDING_BYTES:
            self._format_rows()
        elif self._rows:
            # The writer is behind; keep the rows (bounded by max_buffered) and try again.
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._tick)
        self._start_drain()

    def _start_drain(self) -> None:
        if self._pending and not self._writing and not self._closed:
            self._writing = True
            fut = asyncio.get_running_loop().run_in_executor(None, self._drain)
            fut.add_done_callback(self._drained)

    def _drained(self, fut: asyncio.Future[None]) -> None:
        self._writing = False
        if not fut.cancelled():
            fut.exception()  # _drain counts its own errors; nothing else is expected here
        self._start_drain()  # a batch formatted while the thread was finishing

    def _format_rows(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            data = self.format(rows)
            self._queued_bytes += len(data)
            self._pending.append(data)

    def format(self, rows: list[_Row]) -> bytes:
        names = self.site_names
        out = []
        for (
            at,
            site,
            host,
            method,
            target,
            status,
            result,
            nbytes,
            elapsed,
            origin_s,
            blocked_id,
            blocked_type,
            no_store,
        ) in rows:
            out.append(
                AccessRecord(
                    time=self._rfc3339(at),
                    worker=self.worker,
                    site=names[site] if 0 <= site < len(names) else "-",
                    host=host,
                    method=method,
                    target=target.decode("utf-8", "backslashreplace"),
                    status=status,
                    result=str(result),
                    bytes=nbytes,
                    duration_ms=round(elapsed * 1000.0, 3),
                    origin_ms=round(origin_s * 1000.0, 3) if origin_s else None,
                    blocked_id=blocked_id,
                    blocked_type=blocked_type,
                    no_store=str(no_store),
                )
            )
        return self._encoder.encode_lines(out)

    def _rfc3339(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((at - second) * 1000):03d}Z"

    # -- writing (in a thread, or at close) ---------------------------------------------------

    def _open(self) -> None:
        if self.dest == "-":
            self._fd = 1
            try:
                self._is_pipe = stat.S_ISFIFO(os.fstat(1).st_mode)
            except OSError:
                self._is_pipe = False
            return
        self._fd = os.open(self.dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(self._fd)
        self._ino = (st.st_dev, st.st_ino)
        self._is_pipe = stat.S_ISFIFO(st.st_mode)

    def _reopen_if_rotated(self) -> None:
        if self._ino is None:
            return
        try:
            st = os.stat(self.dest)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if current != self._ino:
            old = self._fd
            self._open()  # if this raises, the old descriptor stays in use
            os.close(old)

    def _drain(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            try:
                self._reopen_if_rotated()
            except OSError:
                self.write_errors += 1
            while self._pending:
                data = self._pending.popleft()
                self._written_bytes += len(data)
                try:
                    self._write(data)
                except OSError:
                    self.write_errors += 1
                    self.lost += data.count(b"\n")
                    continue
                self.written += data.count(b"\n")

    def _write(self, data: bytes) -> None:
        if not self._is_pipe or len(data) <= PIPE_BUF:
            _write_all(self._fd, data)
            return
        start = 0
        while start < len(data):
            end = start + PIPE_BUF
            if end < len(data):
                cut = data.rfind(b"\n", start, end)
                end = cut + 1 if cut >= start else data.index(b"\n", end) + 1
            _write_all(self._fd, data[start:end])
            start = end

    def flush(self) -> None:
        """Format and write everything recorded so far, in the calling thread."""
        self._format_rows()
        self._drain()

    def close(self) -> None:
        """Flush and close. Safe to call twice; also runs at interpreter exit."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._timer is not None:
            try:
                self._timer.cancel()
            except RuntimeError:
                pass  # the loop is already closed
            self._timer = None
        self.flush()
        with self._lock:
            if self._fd > 2:
                os.close(self._fd)
            self._fd = -1

    def snapshot(self) -> dict[str, Any]:
        return {
            "dropped": self.dropped,
            "written": self.written,
            "write_errors": self.write_errors,
            "lost": self.lost,
        }


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
