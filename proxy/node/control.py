"""The supervisor ↔ worker control channel: length-prefixed msgspec JSON frames over a Unix
socketpair, carrying typed messages.

Every message is a msgspec Struct tagged by its `op` field, and each end decodes a frame once,
into a tagged union (`Request` for the worker, `Reply` for the supervisor): an unknown op or a
missing field fails at the decoder, never as a `KeyError` deep inside a handler, and the worker
dispatches on the message's type rather than on a string. The supervisor sends a request with an
`id`; the worker answers with a reply carrying the same id (or `Failed` with the error text).
Many requests may be in flight; the only unprompted message is `Ready`.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any, Literal, TypeVar

import msgspec

from proxy.blocklist.model import Entry
from proxy.blocklist.table import Seal
from proxy.config import Config
from proxy.node.tail import TailReport
from proxy.rfc.target import BadTarget, Target, canonical_target

_LEN = struct.Struct("!I")
MAX_FRAME_BYTES = 64 << 20


class Message(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True):
    id: int = 0


# -- requests: supervisor → worker -------------------------------------------------------------


class BlocklistLoad(Message, tag="blocklist.load"):
    """A full version, compiled by the supervisor into `path`."""

    path: str
    version: int
    pause_s: float = 0.0
    format: Literal["msgpack", "mapped"] = "msgpack"
    # Entries the mapped file lacks (pushes over a signer's shipped table): the overlay the
    # worker swaps the file in with, so it enforces the whole version from the first request.
    add: list[Entry] = []
    # The version in the mapped file's header when it is not `version`: a signer's table the
    # node hard-linked in keeps its signer's (`blocklist.table_install = "link"`).
    stamp: int | None = None
    # The seal of the file as the supervisor saw it once every byte had been checked (by the
    # job that wrote it, or at start): a worker that opens the same seal does not check it
    # again (`proxy.blocklist.table.Seal`). None: the worker checks it whole.
    seal: Seal | None = None
    # The supervisor holds the file's probe sections locked in memory
    # (`proxy.blocklist.pin`): the worker need not read them again to keep them cached.
    pinned: bool = False


class BlocklistDelta(Message, tag="blocklist.delta"):
    version: int
    add: list[Entry] = []
    remove: list[str] = []


class Purge(Message, tag="purge"):
    """Exactly one of the three is set (the admin API checks that)."""

    url: str = ""
    prefix: str = ""
    host: str = ""


def purge_target(url: str) -> Target:
    """A purge's URL or prefix as the cache keys it (the canonical target a request for it
    gets). Raises ValueError saying why not: the supervisor checks before asking any worker,
    so a bad URL is the caller's mistake (400), not a worker failure."""
    from yarl import URL

    try:
        u = URL(url)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not a valid URL: {e}") from e
    if not u.absolute or not u.host:
        raise ValueError(f"not a valid URL: {url!r} needs a scheme and a host")
    path = u.raw_path_qs or "/"
    try:
        return canonical_target(path.encode(), u.raw_authority.encode())
    except BadTarget as e:
        raise ValueError(f"not a valid URL: {e.reason}") from e


class StatsRequest(Message, tag="stats"):
    pass


class Listen(Message, tag="listen"):
    # The node's TLS session ticket key (hex), the same for every worker it starts, so a
    # ticket from one worker resumes on another; empty: no TLS listener.
    ticket_key: str = ""


class Ping(Message, tag="ping"):
    pass


class TlsReload(Message, tag="tls.reload"):
    """Re-read the TLS certificates and keys: new handshakes get them, open connections keep
    theirs. The worker keeps its current ones if any fails to load."""


class Retire(Message, tag="retire"):
    """Stop accepting connections now (answered once the listening socket is closed), then
    drain and exit: a reload is complete only when no old worker can take a new client."""


class ConfigApply(Message, tag="config.apply"):
    """A reload this worker takes without restarting (proxy/node/reload.py says when): run on
    `config` from now on, keeping connections and the cache, less the objects of
    `drop_sites`. Refused (the supervisor then restarts the worker) if the sites' names differ."""

    config: Config
    drop_sites: list[str] = []


class DropSites(Message, tag="cache.drop_sites"):
    """Purge every cached object (memory and node tier) of these sites, by this worker's
    site table: the reload that restarts workers changed their cache-relevant settings."""

    sites: list[str]


class GateReload(Message, tag="gate.reload"):
    """Take the roster directory's newest good site roster now (proxy/gate.py); answered with
    `Applied` carrying the roster sequence the worker holds afterwards."""


Request = (
    BlocklistLoad
    | BlocklistDelta
    | Purge
    | StatsRequest
    | Listen
    | Ping
    | TlsReload
    | Retire
    | ConfigApply
    | DropSites
    | GateReload
)

# -- replies: worker → supervisor --------------------------------------------------------------


class Ready(Message, tag="ready"):
    pid: int
    worker: int


class Applied(Message, tag="applied"):
    version: int
    applied_at: float
    pid: int


class Purged(Message, tag="purged"):
    purged: int


class CacheReport(msgspec.Struct, forbid_unknown_fields=True):
    objects: int
    bytes: int
    max_bytes: int
    evictions: int
    purged: int
    # The node tier's (the node's, the same from every worker; 0 without one).
    node_objects: int = 0
    node_bytes: int = 0
    node_max_bytes: int = 0


class BlocklistReport(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    applied_at: float
    counts: dict[str, int]


class StatsReply(Message, tag="stats.reply"):
    pid: int
    worker: int
    stats: dict[str, Any]  # WorkerStats.snapshot(), keyed by site name
    cache: CacheReport
    connections: int
    blocklist: BlocklistReport
    coalescing_waiters: int
    origin_requests: int
    started_at: float
    tail: TailReport | None = None  # loop lag and GC pauses (proxy/node/tail.py)


class Listening(Message, tag="listening"):
    port: int
    tls_port: int = 0


class TlsReloaded(Message, tag="tls.reloaded"):
    fingerprint: str  # of the files now served (proxy.front.tls.Certificates.fingerprint)
    changed: bool


class Pong(Message, tag="pong"):
    pid: int


class ConfigApplied(Message, tag="config.applied"):
    pid: int
    dropped: int  # objects purged for `drop_sites`


class Failed(Message, tag="failed"):
    error: str


R = TypeVar("R", bound="Message")

Reply = (
    Ready | Applied | Purged | StatsReply | Listening | Pong | TlsReloaded | ConfigApplied | Failed
)

_enc = msgspec.json.Encoder()
request_decoder: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request)
reply_decoder: msgspec.json.Decoder[Reply] = msgspec.json.Decoder(Reply)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(_LEN.size)
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME_BYTES:
        raise ValueError(f"control frame of {n} bytes exceeds {MAX_FRAME_BYTES}")
    return await reader.readexactly(n)


def write_frame(writer: asyncio.StreamWriter, message: Message) -> None:
    body = _enc.encode(message)
    writer.write(_LEN.pack(len(body)) + body)


class ControlError(Exception):
    pass


class Channel:
    """The supervisor's end: request/response with ids, many requests in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self.ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        # The counts a worker sends unasked (id 0) as it exits, after its last request.
        self.final_stats: StatsReply | None = None
        self._task = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        err = ControlError("worker channel closed")
        try:
            while True:
                msg = reply_decoder.decode(await read_frame(self.reader))
                if isinstance(msg, Ready):
                    if not self.ready.done():
                        self.ready.set_result(msg)
                    continue
                if isinstance(msg, StatsReply) and msg.id == 0:
                    self.final_stats = msg
                    continue
                fut = self._pending.pop(msg.id, None)
                if fut is None or fut.done():
                    continue
                if isinstance(msg, Failed):
                    fut.set_exception(ControlError(msg.error))
                else:
                    fut.set_result(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (ValueError, msgspec.DecodeError) as e:
            # A worker that sends what we cannot read is not trusted with the rest either.
            err = ControlError(f"worker channel closed: unreadable frame: {e}")
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            if not self.ready.done():
                self.ready.set_exception(err)
                self.ready.exception()

    async def call(self, request: Message, reply: type[R], *, timeout_s: float) -> R:
        """Send `request` and wait for its answer, which must be a `reply`."""
        if self._task.done():
            raise ControlError("worker channel closed")
        i = next(self._ids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        try:
            write_frame(self.writer, msgspec.structs.replace(request, id=i))
            await self.writer.drain()
            async with asyncio.timeout(timeout_s):
                answer = await fut
        except ConnectionError as e:
            raise ControlError(f"worker channel closed: {e}") from e
        finally:
            self._pending.pop(i, None)
        if not isinstance(answer, reply):
            raise ControlError(
                f"expected {reply.__name__}, worker answered {type(answer).__name__}"
            )
        return answer

    async def wait_closed(self, timeout_s: float) -> None:
        """Until the worker's end is closed (its last frames read), or `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._task)
        except (TimeoutError, asyncio.CancelledError):
            pass

    def close(self) -> None:
        self._task.cancel()
        self.writer.close()
