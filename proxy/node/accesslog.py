"""The access log: one line per (sampled) request, JSON or text, written in batches off the
hot path.

`record()` is all a request pays: a sampling draw (only when sampling), one tuple appended to a
list (holding the request and its context: every field is read from them later), and a timer
armed on the first record of a batch. A memo hit (`record_hit`, the hot path) appends its whole
line instead, made by one bytes format from a template (one per method, version, TLS, status
and site: `_HitTemplate`), with the entry's fields quoted once per entry and the per-request
values (time, client, bytes, duration, request id, user agent, referer) filled in, the quoted
forms of clients, user agents and referers remembered. Every `FLUSH_INTERVAL_S` the batch is
formatted (msgspec for JSON), `FORMAT_CHUNK_ROWS` rows a loop turn so that requests are answered
between chunks, and handed to a writer thread, which appends it with one `os.write`
per chunk. So a slow disk or a full stdout pipe never stalls the event loop: the buffer fills,
and records beyond `max_buffered` are dropped and counted (`dropped`, and the
`edgeproxy_access_log_dropped_total` counter when given the worker's stats).

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
import operator
import os
import random
import re
import select
import stat
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from proxy.cache.entry import Entry
    from proxy.context import RequestCtx
    from proxy.front.api import FrontRequest
    from proxy.front.request_id import RequestIds
    from proxy.metrics import WorkerStats

FLUSH_INTERVAL_S = 0.2
MAX_BUFFERED = 65536  # records waiting to be formatted
# Rows formatted per loop turn (~2 µs each): a batch is formatted a chunk at a time, requests
# answered between chunks, so the log never holds the loop for more than about half a ms.
FORMAT_CHUNK_ROWS = 256
MAX_PENDING_BYTES = 16 << 20  # formatted bytes waiting for the writer thread
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)


class AccessRecord(msgspec.Struct, omit_defaults=True):
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
# off the request's path. A memo hit's row is its line, already formatted (`record_hit`).
_Row = tuple["FrontRequest", "RequestCtx", int, int, str, int, float]

# A memo hit's line: the template's format and the getter that puts `record_hit`'s values
# (second, millisecond, bytes, duration ms, request id, client, user agent, referer, and the
# entry's target, host, content type and key) in the template's order. Empty: no template.
_HitTemplate = tuple[bytes, "operator.itemgetter[Any]"] | tuple[()]
_ARGS = {
    "time": (0, 1), "bytes": (2,), "duration_ms": (3,), "request_id": (4,),
    "client": (5,), "user_agent": (6,), "referer": (7,),
    "target": (8,), "host": (9,), "content_type": (10,), "key": (11,),
}  # fmt: skip
# One template per (method, version, TLS, status, site): a handful. An entry's own fields are
# quoted once per entry (`_EntryParts`), so a hit on an entry seen once costs little more.
_EntryParts = tuple[bytes, bytes, bytes, bytes] | None
_PLAIN_ID = re.compile(rb"[A-Za-z0-9._:+/=@-]+").fullmatch
# Quoted clients, and (user agent, referer) pairs, remembered: a flood of distinct ones
# empties a table rather than growing it.
_CLIENTS_MAX = 4096
_AGENTS_MAX = 1024


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
        self.dropped = 0
        self.written = 0  # lines handed to the OS
        self.write_errors = 0
        self.lost = 0  # lines a failed write took with it
        self._rows: list[_Row | bytes] = []
        self._timer: asyncio.Handle | None = None  # the next batch's, or its next chunk's
        self._pending: collections.deque[bytes] = collections.deque()
        # Each counter has one writer (the loop thread, or whoever holds _lock): no lost updates.
        self._queued_bytes = 0
        self._written_bytes = 0
        self._writing = False
        self._lock = threading.Lock()  # one writer at a time, and close() after it
        self._encoder = msgspec.json.Encoder()
        # Memo hits' line templates, by (method, version, TLS, status, site), and each stored
        # entry's quoted fields (weakly: an evicted entry takes them along; None: an entry
        # without a host or target, whose hits' lines are made whole); the last entry's at hand.
        self._templates: dict[tuple[str, str, bool, int, int], _HitTemplate] = {}
        self._entries: weakref.WeakKeyDictionary[Entry, _EntryParts] = weakref.WeakKeyDictionary()
        self._last_entry: Entry | None = None
        self._last_parts: _EntryParts = None
        # Slot markers: letters and digits (both forms carry them unquoted), with a random part
        # no stored target or key holds.
        tag = os.urandom(6).hex()
        self._markers = {name: f"Z{tag}{name.replace('_', '')}Z" for name in _ARGS}
        # A client's, and a (user agent, referer) pair's, parts of a hit's line, as this form
        # quotes them.
        self._clients: dict[str, bytes] = {}
        self._agents: dict[tuple[bytes, ...], tuple[bytes, bytes]] = {}
        self._id_start = len(request_ids.name) + 2 if request_ids is not None else 0
        self._second = -1
        self._second_text = ""
        self._second_bytes = b""
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
        row = (ctx.request, ctx, ctx.site_index, ctx.status, ctx.result, ctx.bytes_sent)
        rows.append((*row, elapsed_s))
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
        log it would scan the header list again). Its row is its line, formatted now from a
        template (`_hit_template`) and the entry's quoted fields (`_entry_parts`): bytes,
        which the collector never tracks (rows wait up to `flush_interval_s`, and objects it
        tracks, kept that long at tens of thousands of hits a second, made collections of
        every generation: pauses of 10-25 ms, measured), and no second pass over the row
        when the batch is written."""
        if self._sampling and random.random() >= self.sample:
            return
        rows = self._rows
        if len(rows) >= self.max_buffered:
            self._drop(1)
            return
        r = request
        fixed = self._last_parts if entry is self._last_entry else self._entry_parts(entry)
        variant = (r.method, r.http_version, r.tls, status, site_index)
        template = self._templates.get(variant)
        if template is None:
            template = self._templates[variant] = self._hit_template(*variant)
        id_value = r.id_field[self._id_start : -2]
        if fixed is None or not template or (self._id_start and _PLAIN_ID(id_value) is None):
            rows.append(
                self._line(self._hit_record(r, entry, site_index, status, nbytes, elapsed_s))
            )
        else:
            client = self._clients.get(r.client_ip)
            if client is None:
                client = self._remember_client(r.client_ip)
            sent = r.values(b"user-agent", b"referer")
            agent = self._agents.get(sent)
            if agent is None:
                agent = self._remember_agent(sent)
            at = r.received_at
            second = int(at)
            if second != self._second:
                self._rfc3339(at)
            fmt, order = template
            # `round(…, 3)` formats (%r) as msgspec's JSON and the text form both write a
            # duration: Python's shortest repr, for any duration under 10^16 ms.
            ms, duration = int((at - second) * 1000), round(elapsed_s * 1000.0, 3)
            args = (self._second_bytes, ms, nbytes, duration, id_value, client, *agent, *fixed)
            rows.append(fmt % order(args))
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval_s, self._tick)

    def _entry_parts(self, entry: Entry) -> _EntryParts:
        """The entry's target, host, content type and key as this form quotes them, worked out
        once per entry."""
        try:
            parts = self._entries[entry]
        except KeyError:
            _site, host, target, key, ctype = self._entry_fields(entry, -1)
            if not host or not target:
                parts = None
            elif self.text:
                parts = (
                    _quoted(target).encode("utf-8", "backslashreplace"),
                    _quoted(host, _BARE).encode("utf-8", "backslashreplace"),
                    _quoted(ctype).encode("utf-8", "backslashreplace"),
                    _quoted(key).encode("utf-8", "backslashreplace"),
                )
            else:
                encode = self._encoder.encode
                parts = (
                    encode(target),
                    encode(host),
                    b',"content_type":' + encode(ctype) if ctype else b"",
                    b',"key":' + encode(key) if key else b"",
                )
            self._entries[entry] = parts
        self._last_entry, self._last_parts = entry, parts
        return parts

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.stats is not None:
            self.stats.access_log_dropped += n

    # -- batching -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        if self._queued_bytes - self._written_bytes < MAX_PENDING_BYTES:
            rows = self._rows
            if len(rows) > self.format_chunk_rows:
                # The rest in the next loop turns: a whole batch at once (thousands of rows
                # at tens of thousands of hits a second) held the loop for milliseconds.
                n = self.format_chunk_rows
                self._rows = rows[n:]
                self._format(rows[:n])
                self._timer = asyncio.get_running_loop().call_soon(self._tick)
            else:
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
            self._format(rows)

    def _format(self, rows: list[_Row | bytes]) -> None:
        data = self.format(rows)
        self._queued_bytes += len(data)
        self._pending.append(data)

    def format(self, rows: list[_Row | bytes]) -> bytes:
        line = self._line
        return b"".join(
            row if type(row) is bytes else line(self.to_record(row))  # type: ignore[arg-type]
            for row in rows
        )

    def _line(self, record: AccessRecord) -> bytes:
        if self.text:
            return _text_line(record).encode("utf-8", "backslashreplace")
        return self._encoder.encode(record) + b"\n"

    def to_record(self, row: _Row) -> AccessRecord:
        req, ctx, site, status, result, nbytes, elapsed = row
        names = self.site_names
        ids = self.request_ids
        ua, referer = _client_fields(req)
        target, entry = ctx.target, ctx.entry
        key = _key_text(*ctx.key) if ctx.key is not None else ""
        ctype = _content_type(entry.headers) if entry is not None else ctx.content_type
        if not ctype and ctx.outcome is not None:
            ctype = _content_type(ctx.outcome.headers)
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

    def _hit_record(
        self, r: FrontRequest, entry: Entry, site: int, status: int, nbytes: int, elapsed_s: float
    ) -> AccessRecord:
        """A memo hit's record, field by field: what its template is made from, and the way
        for an entry without the host or target a template fixes."""
        site_name, host, target_text, key, ctype = self._entry_fields(entry, site)
        ua, referer = r.values(b"user-agent", b"referer")
        ids = self.request_ids
        return AccessRecord(
            self._rfc3339(r.received_at), self.worker, r.client_ip, site_name, r.method,
            target_text or r.raw_target.decode("utf-8", "backslashreplace"),
            "HTTP/" + r.http_version, r.tls, status, "hit", nbytes, round(elapsed_s * 1000.0, 3),
            host or _sent_host(r.host), ids.value(r.id_field) if ids is not None else "",
            ua.decode("latin-1"), referer.decode("latin-1"), ctype, key,
        )  # fmt: skip

    def _hit_template(
        self, method: str, version: str, tls: bool, status: int, site: int
    ) -> _HitTemplate:
        """The line of a hit with each per-request and per-entry value a `%` slot: made by the
        line's own formatting (`_line`) from a record holding slot markers, so the template
        cannot drift from the line `record` writes. Empty when a marker is not found once."""
        names = self.site_names
        m = self._markers
        record = AccessRecord(
            m["time"], self.worker, m["client"], names[site] if 0 <= site < len(names) else "-",
            method, m["target"], "HTTP/" + version, tls, status, "hit", m["bytes"],  # type: ignore[arg-type]
            m["duration_ms"], m["host"], m["request_id"] if self.request_ids is not None else "",  # type: ignore[arg-type]
            m["user_agent"], m["referer"], m["content_type"], m["key"],
        )  # fmt: skip
        line = self._line(record).replace(b"%", b"%%")
        slots: list[tuple[int, bytes, bytes, tuple[int, ...]]] = []
        for name, marker in m.items():
            if name == "request_id" and self.request_ids is None:
                continue
            found = self._slot_text(name, marker.encode("ascii"))
            if line.count(found) != 1:
                return ()
            slots.append((line.index(found), found, _FORMATS.get(name, b"%s"), _ARGS[name]))
        slots.sort()
        for _at, found, fmt, _args in slots:
            line = line.replace(found, fmt)
        return line, operator.itemgetter(*(i for *_, args in slots for i in args))

    def _slot_text(self, name: str, marker: bytes) -> bytes:
        """What a slot's marker became in the line: the text form writes values as they are
        (in quotes it adds itself); JSON quotes strings, and leaves a user agent, referer,
        content type or key out, with its name, when empty. A request id's and the time's slots are inside their
        quotes (`record_hit` fills in the id as it is: letters, digits and `._:+/=@-`, as
        every id proxy/front/request_id.py makes or keeps, which neither form escapes)."""
        if self.text or name in ("time", "request_id"):
            return marker
        if name in ("user_agent", "referer", "content_type", "key"):
            return b',"%s":"%s"' % (name.encode("ascii"), marker)
        return b'"%s"' % marker

    def _remember_client(self, client: str) -> bytes:
        """A client's part of a hit's line, kept for its next hits."""
        if self.text:
            part = (client or "-").encode("utf-8", "backslashreplace")
        else:
            part = self._encoder.encode(client)
        if len(self._clients) >= _CLIENTS_MAX:
            self._clients.clear()
        self._clients[client] = part
        return part

    def _remember_agent(self, sent: tuple[bytes, ...]) -> tuple[bytes, bytes]:
        """A user agent's and referer's parts of a hit's line, kept for the next hits that
        send the same pair."""
        ua, referer = (v.decode("latin-1") for v in sent)
        if self.text:
            parts = (
                (_quoted(ua) or "-").encode("utf-8", "backslashreplace"),
                (_quoted(referer) or "-").encode("utf-8", "backslashreplace"),
            )
        else:
            encode = self._encoder.encode
            parts = (
                b',"user_agent":' + encode(ua) if ua else b"",
                b',"referer":' + encode(referer) if referer else b"",
            )
        if len(self._agents) >= _AGENTS_MAX:
            self._agents.clear()
        self._agents[sent] = parts
        return parts

    def _entry_fields(self, entry: Entry, site: int) -> tuple[str, str, str, str, str]:
        """What every memo hit on `entry` logs alike (site, host, target, key, content type),
        worked out once per stored entry while it lives (`_per_entry`, weakly keyed)."""
        names = self.site_names
        target = entry.target
        return (
            names[site] if 0 <= site < len(names) else "-",
            target.authority,
            target.raw_path_query.decode("utf-8", "backslashreplace"),
            _key_text(entry.primary, entry.variant),
            _content_type(entry.headers).decode("latin-1"),
        )

    def _rfc3339(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second_bytes = self._second_text.encode("ascii")
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


def _sent_host(host: bytes | None) -> str:
    """The Host field as sent: what explains a request admit refused (421 …)."""
    return host.decode("latin-1") if host is not None else ""


def _client_fields(request: FrontRequest) -> tuple[str, str]:
    """User-Agent and Referer, as sent (the first non-empty of each)."""
    ua, referer = request.values(b"user-agent", b"referer")
    return ua.decode("latin-1"), referer.decode("latin-1")


def _content_type(headers: Any) -> bytes:
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return bytes(value)
    return b""


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
# What each slot of a hit's template becomes: `%` formats for `record_hit`'s values.
_FORMATS = {"time": b"%s.%03dZ", "bytes": b"%d", "duration_ms": b"%r"}  # the others: %s


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
