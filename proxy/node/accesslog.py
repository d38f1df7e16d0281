"""The access log: one line per (sampled) request, JSON or text, written in batches off the
hot path.

`record()` is all a request pays: a sampling draw (only when sampling), one row added to a
flat list (the request and its context: every field is read from them later; a memo hit's,
`record_hit`, plain values and its entry's fields worked out once per entry),
and a timer armed on the first record of a batch. Every `FLUSH_INTERVAL_S` the batch is
formatted (msgspec for JSON), `FORMAT_CHUNK_ROWS` rows a loop turn so that requests are answered
between chunks, and handed to a writer thread, which appends the whole batch to a file with one
`os.writev` (pipes: see below). So a slow disk or a full stdout pipe never stalls the event
loop: the buffer fills, and records beyond `max_buffered` are dropped and counted (`dropped`,
and the `edgeproxy_access_log_dropped_total` counter when given the worker's stats).

Why one `writev` and not a write per chunk: a 0.2-s batch at ~30k logged hits a second is ~25
chunks, and each system call of the writer thread is a round trip for the GIL (released for the
call, taken back after it, from the loop's thread when that one is running Python). One call a
batch also puts a worker's whole batch into the file in one piece (O_APPEND).

Several workers may share one destination: files are opened with O_APPEND (each batch lands
whole, lines never interleave), and on pipes writes are cut at line boundaries into chunks of at
most PIPE_BUF bytes, which POSIX writes atomically. A file renamed away (logrotate without
copytruncate) is noticed at the next batch and reopened by path, like Python's WatchedFileHandler.

Fields: time (RFC 3339 UTC, when the request head arrived), worker, client (address), site ("-"
when no site was admitted), host (the canonical authority; for a request admit refused, such as
a 421, the Host field as sent, which is what explains it), method, target (the canonical forward
form, or the raw target when admit refused it), protocol (`HTTP/1.1`, `HTTP/1.0`), tls, status,
result, bytes (body bytes sent), duration_ms, request_id, user_agent, referer, content_type (of
the answer), key (the cache key: authority and path, then the Vary values), and when they apply
origin_ms, blocked_id, blocked_type, no_store.

The text form (`[log] access_log_format = "text"`) is the combined log format that log
shippers already parse, with the rest as key=value pairs after it:
`client - - [time] "METHOD target PROTOCOL" status bytes "referer" "user agent" host=… …`.
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
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.rfc.response import content_type_of

if TYPE_CHECKING:
    from proxy.cache.entry import Entry
    from proxy.context import RequestCtx
    from proxy.front.api import FrontRequest
    from proxy.front.request_id import RequestIds
    from proxy.metrics import WorkerStats

FLUSH_INTERVAL_S = 0.2
MAX_BUFFERED = 65536  # records held: waiting, or in the batch being formatted
# Rows formatted per loop turn (~2 µs each): a batch is formatted a chunk at a time, requests
# answered between chunks, so the log never holds the loop for more than about half a ms.
FORMAT_CHUNK_ROWS = 256
# Distinct sets of request field lines whose User-Agent and Referer are kept (`_client_fields`):
# at most this many lines of at most the strict head's 2 KiB each; emptied whole when full; 0:
# none kept.
CLIENT_FIELDS_MAX_ENTRIES = 1024
# Formatted bytes waiting for the writer thread: beyond them a batch is not formatted (its
# records wait, bounded by `max_buffered`).
MAX_PENDING_BYTES = 16 << 20
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
# A time's milliseconds and zone as written (".042Z"), looked up: an f-string's `:03d` cost a
# row a third of a µs.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


class AccessRecord(msgspec.Struct, omit_defaults=True, gc=False):
    """One line's fields. Never tracked by the collector (`gc=False`: it holds strings and
    numbers only, so it can be in no cycle): a batch makes one per row, and tracked they
    counted towards young collections like any container."""

    time: str
    worker: int
    client: str
    site: str
    method: str
    target: str
    protocol: str
    tls: bool
    status: int
    result: str
    bytes: int
    duration_ms: float
    host: str = ""
    request_id: str = ""
    user_agent: str = ""
    referer: str = ""
    content_type: str = ""
    key: str = ""
    origin_ms: float | None = None
    blocked_id: str = ""
    blocked_type: str = ""
    no_store: str = ""


# What `record` keeps: (request, its context, site index, status, result, body bytes sent,
# elapsed seconds). Everything else is read from the first two when the batch is formatted,
# off the request's path.
_Row = tuple["FrontRequest", "RequestCtx", int, int, str, int, float]
# A memo hit's fields that depend on its entry alone: site, host, target, key, content type.
_Fields = tuple[str, str, str, str, str]
# What `record_hit` keeps, plain values only, in 14 slots: received at (float), client,
# method, raw target, version, tls, request id field, Host as sent, user agent, referer, the
# entry's fields (`_Fields`), status, bytes, elapsed seconds.
# Rows are kept flat, `_SLOTS` list slots each: a memo hit's 14 values, or a context row
# (`_Row`, one tuple: its first slot tells them apart) and padding. A tuple per hit, alive for up to `flush_interval_s`, was a
# container the collector tracked until a young collection untracked it, so each logged hit
# moved the young generation one step towards a collection (measured in process: 385 young
# and 35 middle collections for 300,000 logged hits, ~0.3 µs a hit; 102 and 9 without the
# log); values added to a list in place leave it where it was.
_SLOTS = 14
_PAD = (None,) * (_SLOTS - 1)


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
        format_chunk_rows: int = FORMAT_CHUNK_ROWS,
        text: bool = False,
        request_ids: RequestIds | None = None,
        client_fields_max_entries: int = CLIENT_FIELDS_MAX_ENTRIES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"access log sample must be within 0..1, got {sample}")
        self.dest = dest
        self.sample = sample
        self._sampling = sample < 1.0
        self.site_names = site_names
        self.worker = worker
        self.stats = stats
        self.text = text
        self.request_ids = request_ids
        self.max_buffered = max_buffered
        self.flush_interval_s = flush_interval_s
        self.format_chunk_rows = format_chunk_rows
        self.max_pending_bytes = max_pending_bytes
        self.dropped = 0
        self.written = 0  # lines handed to the OS
        self.write_errors = 0
        self.lost = 0  # lines a failed write took with it
        self._rows: list[Any] = []  # flat: `_SLOTS` slots a record
        # Slots of `_rows` formatted already (a batch formatted in chunks): they count towards
        # `max_buffered` until its last chunk, as the list is emptied only then.
        self._done = 0
        self._max_slots = max_buffered * _SLOTS
        self._timer: asyncio.Handle | None = None  # the next batch's, or its next chunk's
        # Formatted chunks and their line counts, waiting for the writer thread.
        self._pending: collections.deque[tuple[bytes, int]] = collections.deque()
        # Each counter has one writer (the loop thread, or whoever holds _lock): no lost updates.
        self._queued_bytes = 0
        self._written_bytes = 0
        self._writing = False
        self._lock = threading.Lock()  # one writer at a time, and close() after it
        self._encoder = msgspec.json.Encoder()
        # Memo hits' fields that depend on the stored entry alone (`_entry_fields`), by the
        # entry's id while it lives: its weak reference's callback takes them out when it dies,
        # before the id can be another's. A plain dict's `get` is a third of a
        # WeakKeyDictionary's (a Python method that makes a weak reference per call), which
        # each hit of a Zipf tail paid.
        self._per_entry: dict[int, tuple[weakref.ref[Entry], _Fields]] = {}
        # User-Agent and Referer by the request's field lines as sent (`_client_fields`).
        self._clients: dict[bytes, tuple[str, str]] = {}
        self._clients_max = client_fields_max_entries
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
        if len(rows) >= self._max_slots:
            self._drop(1)
            return
        row = (ctx.request, ctx, ctx.site_index, ctx.status, ctx.result, ctx.bytes_sent)
        rows.append((*row, elapsed_s))
        rows += _PAD
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._tick)

    def record_hit(
        self,
        request: FrontRequest,
        entry: Entry,
        site_index: int,
        status: int,
        nbytes: int,
        elapsed_s: float,
    ) -> None:
        """`record` for the hot hit path, which has no RequestCtx to hand (building one just to
        log it would scan the header list again). Its row holds only strings, bytes and
        numbers, no request or entry: rows wait up to `flush_interval_s`, and objects the
        collector tracks, kept that long at tens of thousands of hits a second, made
        collections of every generation (pauses of 10-25 ms, measured); the row's values go
        into the flat list in place (`_SLOTS`), so it leaves the collector nothing to walk."""
        if self._sampling and random.random() >= self.sample:
            return
        rows = self._rows
        if len(rows) >= self._max_slots:
            self._drop(1)
            return
        held = self._per_entry.get(id(entry))
        fixed = held[1] if held is not None else self._fields_of(entry, site_index)
        ua, referer = self._client_fields(request)
        r = request
        rows += (
            r.received_at, r.client_ip, r.method, r.raw_target, r.http_version, r.tls,
            r.id_field, r.host, ua, referer, fixed, status, nbytes, elapsed_s,
        )  # fmt: skip
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._tick)

    def _client_fields(self, request: FrontRequest) -> tuple[str, str]:
        """User-Agent and Referer, as sent, looked up by the head's field lines when the strict
        matcher kept them (`field_lines`): a client sends the same lines request after request,
        and a dict lookup costs a fraction of the search and decoding (which was a third of
        what logging added to a hit, measured in process). Lines that differ, or a head llhttp
        parsed, are read as before."""
        lines = request.field_lines
        if not lines or not self._clients_max:
            return _client_fields(request)
        clients = self._clients
        found = clients.get(lines)
        if found is None:
            found = _client_fields(request)
            if len(clients) >= self._clients_max:
                clients.clear()
            clients[lines] = found
        return found

    def _fields_of(self, entry: Entry, site: int) -> _Fields:
        fixed = self._entry_fields(entry, site)
        per_entry, key = self._per_entry, id(entry)
        per_entry[key] = (weakref.ref(entry, lambda _: per_entry.pop(key, None)), fixed)
        return fixed

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.stats is not None:
            self.stats.access_log_dropped += n

    # -- batching -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        rows, done = self._rows, self._done
        if self._queued_bytes - self._written_bytes < self.max_pending_bytes:
            stop = done + self.format_chunk_rows * _SLOTS
            if len(rows) > stop:
                # The rest in the next loop turns: a whole batch at once (thousands of rows
                # at tens of thousands of hits a second) held the loop for milliseconds.
                self._format(rows[done:stop])
                self._done = stop
                self._timer = asyncio.get_running_loop().call_soon(self._tick)
                return  # the writer thread is woken once the whole batch is formatted
            self._format_rows()
        elif len(rows) > done:
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
        rows, done = self._rows, self._done
        self._rows, self._done = [], 0
        if len(rows) > done:
            self._format(rows[done:] if done else rows)

    def _format(self, rows: list[Any]) -> None:
        data = self.format(rows)
        self._queued_bytes += len(data)
        self._pending.append((data, len(rows) // _SLOTS))

    def format(self, rows: list[Any]) -> bytes:
        """The lines of `rows`, flat (`_SLOTS` slots a record)."""
        records = self.records(rows)
        if self.text:
            return "".join(_text_line(r) for r in records).encode("utf-8", "backslashreplace")
        return self._encoder.encode_lines(records)

    def records(self, rows: list[Any]) -> list[AccessRecord]:
        """A batch's records, in one loop: a memo hit's row (most of them) is unpacked here,
        with the time's second and the id's reader at hand, instead of through calls per row
        (they were half of a hit row's 2 µs)."""
        out: list[AccessRecord] = []
        append = out.append
        worker = self.worker
        ids = self.request_ids
        id_value = ids.value if ids is not None else None
        last_second, second_text = self._second, self._second_text
        for (
            at, client, method, raw_target, version, tls, id_field, sent_host, ua, referer,
            fixed, status, nbytes, elapsed,
        ) in zip(*(iter(rows),) * _SLOTS, strict=False):  # fmt: skip
            if type(at) is tuple:  # a context row, and padding
                append(self.to_record(at))
                continue
            site_name, host, target_text, key, ctype = fixed
            second = int(at)
            if second != last_second:
                self._new_second(second)
                last_second, second_text = second, self._second_text
            append(AccessRecord(
                second_text + _MILLIS[int((at - second) * 1000)], worker, client, site_name,
                method, target_text or raw_target.decode("utf-8", "backslashreplace"),
                "HTTP/" + version, tls, status, "hit", nbytes, round(elapsed * 1000.0, 3),
                host or _sent_host(sent_host), id_value(id_field) if id_value else "", ua,
                referer, ctype, key,
            ))  # fmt: skip
        return out

    def to_record(self, row: _Row) -> AccessRecord:
        """A row `record` kept: its fields read from the request and its context."""
        req, ctx, site, status, result, nbytes, elapsed = row
        names = self.site_names
        ids = self.request_ids
        ua, referer = self._client_fields(req)
        target, entry = ctx.target, ctx.entry
        key = _key_text(*ctx.key) if ctx.key is not None else ""
        ctype = content_type_of(entry.headers) if entry is not None else ctx.content_type
        if not ctype and ctx.outcome is not None:
            ctype = content_type_of(ctx.outcome.headers)
        origin_s = ctx.origin_s
        return AccessRecord(
            time=self._rfc3339(req.received_at),
            worker=self.worker,
            client=req.client_ip,
            site=names[site] if 0 <= site < len(names) else "-",
            host=target.authority or _sent_host(req.host),
            method=ctx.method,
            target=(target.raw_path_query or req.raw_target).decode("utf-8", "backslashreplace"),
            protocol="HTTP/" + req.http_version,
            tls=req.tls,
            status=status,
            result=str(result),
            bytes=nbytes,
            duration_ms=round(elapsed * 1000.0, 3),
            request_id=ids.value(req.id_field) if ids is not None else "",
            user_agent=ua,
            referer=referer,
            content_type=ctype.decode("latin-1") if isinstance(ctype, bytes) else ctype,
            key=key,
            origin_ms=round(origin_s * 1000.0, 3) if origin_s else None,
            blocked_id=ctx.blocked_id,
            blocked_type=ctx.blocked_type,
            no_store=str(ctx.no_store or ""),
        )

    def _entry_fields(self, entry: Entry, site: int) -> _Fields:
        """What every memo hit on `entry` logs alike (site, host, target, key, content type),
        worked out once per stored entry while it lives (`_per_entry`)."""
        names = self.site_names
        target = entry.target
        return (
            names[site] if 0 <= site < len(names) else "-",
            target.authority,
            target.raw_path_query.decode("utf-8", "backslashreplace"),
            _key_text(entry.primary, entry.variant),
            content_type_of(entry.headers).decode("latin-1"),
        )

    def _rfc3339(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._new_second(second)
        return self._second_text + _MILLIS[int((at - second) * 1000)]

    def _new_second(self, second: int) -> None:
        self._second = second
        self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))

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
            pending = self._pending
            while pending:
                chunks: list[bytes] = []
                lines = 0
                while pending and len(chunks) < _IOV_MAX:  # all that is formatted, as a rule
                    data, n = pending.popleft()
                    chunks.append(data)
                    lines += n
                self._written_bytes += sum(map(len, chunks))
                try:
                    self._write(chunks)
                except OSError:
                    self.write_errors += 1
                    self.lost += lines
                    continue
                self.written += lines

    def _write(self, chunks: list[bytes]) -> None:
        if not self._is_pipe:
            _writev_all(self._fd, chunks)
            return
        for data in chunks:
            if len(data) <= PIPE_BUF:
                _write_all(self._fd, data)
                continue
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


def _sent_host(host: bytes | None) -> str:
    """The Host field as sent: what explains a request admit refused (421 …)."""
    return host.decode("latin-1") if host is not None else ""


def _client_fields(request: FrontRequest) -> tuple[str, str]:
    """User-Agent and Referer, as sent (the first non-empty of each; read from a strict head's
    field lines without its header list)."""
    ua, referer = request.values(b"user-agent", b"referer")
    return ua.decode("latin-1") if ua else "", referer.decode("latin-1") if referer else ""


def _key_text(primary: tuple[str, bytes], variant: tuple[str, ...]) -> str:
    """The cache key as one string: authority and raw path, then each Vary value after `|`."""
    text = primary[0] + primary[1].decode("utf-8", "backslashreplace")
    return text + "".join("|" + v for v in variant) if variant else text


def _quoted(value: str, unsafe: str = '"\\') -> str:
    """A value for the text form with `unsafe` characters and non-printable ones escaped as
    \\xHH (as nginx does), so a client's User-Agent or Host cannot forge a line or a field."""
    if value.isprintable() and not any(c in value for c in unsafe):
        return value
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
        if not c.isprintable() or c in unsafe
        else c
        for c in value
    )


_BARE = '"\\ '  # a key=value value without quotes: no space either


def _text_line(r: AccessRecord) -> str:
    """Combined log format, then key=value pairs (values with a space or quote are quoted)."""
    line = (
        f'{r.client or "-"} - - [{r.time}] "{_quoted(r.method)} {_quoted(r.target)} {r.protocol}"'
        f' {r.status} {r.bytes} "{_quoted(r.referer) or "-"}" "{_quoted(r.user_agent) or "-"}"'
        f" host={_quoted(r.host, _BARE) or '-'} site={r.site} result={r.result}"
        f" request_id={_quoted(r.request_id, _BARE) or '-'}"
        f' content_type="{_quoted(r.content_type)}"'
        f' key="{_quoted(r.key)}" duration_ms={r.duration_ms} tls={"on" if r.tls else "off"}'
        f" worker={r.worker}"
    )
    if r.origin_ms is not None:
        line += f" origin_ms={r.origin_ms}"
    if r.blocked_id:
        line += f' blocked_id="{_quoted(r.blocked_id)}" blocked_type={r.blocked_type}'
    if r.no_store:
        line += f" no_store={r.no_store}"
    return line + "\n"


def _writev_all(fd: int, chunks: list[bytes]) -> None:
    """All of `chunks`, in order, in as few `writev` calls as the kernel takes (one, but for
    a full disk or a signal)."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
