"""One worker process: the front, the pipeline, its memory tier and origin pool, and the
control channel to the supervisor. Started by the supervisor as
`python -m proxy.node.worker CONTROL_FD N LISTEN_FD [TLS_LISTEN_FD]` with the config (msgspec
JSON) on stdin; LISTEN_FD is the node's one listen socket, bound by the supervisor, and
TLS_LISTEN_FD its TLS one (`listen_tls`), where this worker terminates TLS itself.

A worker listens only after it enforces the supervisor's current blocklist version: a restarted
worker never serves a single request with an older list.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist.compiled import load_compiled
from proxy.blocklist.mapped import load_mapped
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.blocklist.table import TableError
from proxy.cache.entry import Entry
from proxy.config import Config, certificate_specs
from proxy.front.accept import ConnectionShares
from proxy.front.tls import Certificates, TlsTerminator, share_ticket_keys
from proxy.gate import build_gate
from proxy.identity import set_title, worker_title
from proxy.node.control import (
    Applied,
    BlocklistDelta,
    BlocklistLoad,
    BlocklistReport,
    CacheReport,
    ConfigApplied,
    ConfigApply,
    DropSites,
    Failed,
    GateReload,
    Listen,
    Listening,
    Message,
    Ping,
    Pong,
    Purge,
    Purged,
    Ready,
    Request,
    Retire,
    StatsReply,
    StatsRequest,
    TlsReload,
    TlsReloaded,
    purge_target,
    read_frame,
    request_decoder,
    write_frame,
)
from proxy.node.servicelog import configure as configure_log
from proxy.node.tail import TailProbe
from proxy.sites import SiteTable
from proxy.state import build_worker, front_limits, node_finisher

log = logging.getLogger("edgeproxy.node.worker")


def _frame_id(frame: bytes) -> int:
    class _Id(msgspec.Struct):
        id: int = 0

    try:
        return msgspec.json.decode(frame, type=_Id).id
    except msgspec.DecodeError:
        return 0


class Worker:
    def __init__(
        self, cfg: Config, index: int, listen_fd: int = -1, tls_fd: int = -1, shares_fd: int = -1
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.listen_fd = listen_fd
        self.tls_fd = tls_fd
        self.shares_fd = shares_fd
        # Certificates are loaded now: a worker that cannot serve them does not start.
        self.tls: TlsTerminator | None = None
        if cfg.listen_tls:
            self.tls = TlsTerminator(Certificates.compile(certificate_specs(cfg)))
        parts = build_worker(cfg, index)
        self.sites = parts.sites
        self.stats = parts.stats
        self.memory = parts.memory
        self.origin = parts.origin
        self.access_log = parts.access_log
        self.shared = parts.shared
        self.node = parts.node
        self.pipeline = parts.pipeline
        self.server = parts.server
        self.server.on_handler_error = self._handler_error
        # The go-live gate ([gate]): the newest good roster is loaded before any request.
        self.gate = build_gate(cfg)
        if self.gate is not None:
            self.gate.on_swap = self.pipeline.memo.clear
            self.pipeline.gate = self.gate
        self.applied_at = 0.0
        self.server_started = False
        self.started_at = time.time()
        self.tail = TailProbe(cfg.tail_sample_interval_s, stall_log_s=cfg.tail_stall_log_s)
        self.stopping = asyncio.Event()
        self._control_writer: asyncio.StreamWriter | None = None  # the channel to the supervisor
        self._purges: set[asyncio.Future[object]] = set()  # purges and releases under way
        self._expiry: asyncio.TimerHandle | None = None
        self._titled_version: int | None = None  # the blocklist version `ps` shows

    def _handler_error(self, *_: object) -> None:
        self.stats.handler_errors += 1

    # -- control ops --------------------------------------------------------------------------

    async def handle(self, msg: Request) -> Message:
        """One control request → its reply; the match is the whole op table."""
        match msg:
            case BlocklistLoad():
                return await self.blocklist_load(msg)
            case BlocklistDelta():
                return self.blocklist_delta(msg)
            case Purge():
                return self.purge(msg)
            case StatsRequest():
                return self.report()
            case Listen():
                return await self.listen(msg.ticket_key)
            case Ping():
                return Pong(pid=os.getpid())
            case TlsReload():
                return self.tls_reload()
            case GateReload():
                if self.gate is not None:
                    self.gate.reload()
                held = self.gate.roster.sequence if self.gate is not None else 0
                return Applied(version=held, applied_at=time.time(), pid=os.getpid())
            case Retire():
                self.server.stop_accepting()
                self.stopping.set()
                return Pong(pid=os.getpid())
            case ConfigApply():
                return await self.config_apply(msg)
            case DropSites():
                return Purged(purged=await self.drop_sites(msg.sites, self.sites))
        raise ValueError(f"no handler for {type(msg).__name__}")  # unreachable: Request is closed

    async def blocklist_load(self, msg: BlocklistLoad) -> Applied:
        """A full version, compiled by the supervisor: mapped (no rebuild; checked whole
        unless it is the file the supervisor checked, `BlocklistLoad.seal`), or
        built aside in steps (msgpack); then swapped in. A file that fails its checks is
        refused, counted and logged, and the current snapshot keeps enforcing."""
        if msg.format == "mapped":
            try:
                mapped = await load_mapped(
                    Path(msg.path),
                    msg.version,
                    time.time(),
                    stamp=msg.stamp,
                    seal=msg.seal,
                    pinned=msg.pinned,
                    check_in_child_min_bytes=self.cfg.blocklist.check_in_child_min_bytes,
                )
            except TableError as e:
                self.stats.blocklist_load_failures += 1
                log.error(
                    "blocklist version %d refused, still enforcing version %d: %s",
                    msg.version,
                    self.pipeline.blocklist.version,
                    e,
                )
                raise
            if mapped.table.is_sealed(msg.seal):  # as `load_mapped` judged it
                self.stats.blocklist_tables_sealed += 1
            else:
                self.stats.blocklist_tables_checked += 1
            snap: Snapshot = mapped
            if msg.add:
                snap = mapped.with_changes(msg.add, (), msg.version, time.time())
            return self._apply(snap)
        pause = msg.pause_s if self.server_started else 0.0
        snap = await load_compiled(Path(msg.path), msg.version, time.time(), pause_s=pause)
        return self._apply(snap)

    def blocklist_delta(self, msg: BlocklistDelta) -> Applied:
        current = self.pipeline.blocklist
        snap = current.with_changes(msg.add, msg.remove, msg.version, time.time())  # cheap
        return self._apply(snap, adds=msg.add)

    def _apply(self, snap: Snapshot, adds: list[BlockEntry] | None = None) -> Applied:
        old = self.pipeline.blocklist
        self.pipeline.enforcer.apply(snap)
        self.applied_at = time.time()
        if adds is None:
            self._background(self.pipeline.enforcer.purge_listed(snap))
        elif adds:
            self._background(self.pipeline.enforcer.purge_added(adds, snap))
        self._background(_release(old.exclusive_shards(snap)))
        self._schedule_expiry(snap)
        if snap.version != self._titled_version:  # not per delta of the same version
            self._titled_version = snap.version
            set_title(worker_title(self.index, snap.version))
        return Applied(version=snap.version, applied_at=self.applied_at, pid=os.getpid())

    def _schedule_expiry(self, snap: Snapshot) -> None:
        """Entries with `expires_at` stop matching when they lapse: the snapshot does not read
        the clock per request, so it is rebuilt without them at the earliest expiry."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        when = snap.next_expiry
        if when is None:
            return

        def lapse() -> None:
            self._expiry = None
            current = self.pipeline.blocklist
            if current is snap:
                self._apply_expired(current)

        delay = max(0.0, when - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, lapse)

    def _apply_expired(self, current: Snapshot) -> None:
        fresh = current.with_changes((), (), current.version, time.time())
        self.pipeline.enforcer.apply(fresh)
        self._background(_release(current.exclusive_shards(fresh)))
        self._schedule_expiry(fresh)

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._purges.add(task)
        task.add_done_callback(self._purges.discard)

    def purge(self, msg: Purge) -> Purged:
        n = 0
        cache = self.pipeline.cache  # every tier: the tier behind loses the keys named here
        if msg.url:
            url = purge_target(msg.url)
            n = cache.purge_primary((url.authority, url.raw_path_query))
        elif msg.prefix:
            prefix = purge_target(msg.prefix)
            n = cache.purge_prefix(prefix.host, prefix.path)
        elif msg.host:
            n = cache.purge_host(msg.host.lower().rstrip("."))
        return Purged(purged=n)

    async def config_apply(self, msg: ConfigApply) -> ConfigApplied:
        """A reload without a restart (proxy/node/reload.py): the new sites, limits and
        blocklist settings take effect for new requests (limits: new connections); the memory
        cache stays, less the objects of `drop_sites`. Raises (the worker keeps its config and
        the supervisor restarts it) when the sites' names differ."""
        cfg = msg.config
        sites = SiteTable(cfg)
        old_sites = self.sites
        self.pipeline.reconfigure(cfg, sites)  # raises before any change if names differ
        self.server.limits = front_limits(cfg)
        self.server.tls_fields = sites.tls_fields
        if self.node is not None:  # node-tier entries are finished with the new site table
            finish = node_finisher(sites)
            self.pipeline.cache.attach_node(self.node, finish)
        self.cfg, self.sites = cfg, sites
        if self.tls is not None:
            self.tls_reload()  # a site's certificate may have changed
        dropped = await self.drop_sites(msg.drop_sites, old_sites)
        log.info(
            "config applied in place (cache kept%s)",
            f"; {dropped} objects of {', '.join(msg.drop_sites)} dropped" if msg.drop_sites else "",
        )
        return ConfigApplied(pid=os.getpid(), dropped=dropped)

    async def drop_sites(self, names: list[str], old_sites: SiteTable) -> int:
        """Purge the objects of these sites from memory and the node tier: those stored under
        the site (its index) and any whose host the old or the current site table routes to
        it. Memory is purged again after the node tier's walk, which yields to the loop: an
        object a request pulled from the node tier meanwhile does not survive."""
        if not names:
            return 0
        wanted = set(names)
        indices = {s.index for s in old_sites.sites if s.name in wanted}
        current = self.sites

        def doomed_host(host: str) -> bool:
            for table in (old_sites, current):
                site = table.route(host)
                if site is not None and site.name in wanted:
                    return True
            return False

        def doomed(entry: Entry) -> bool:
            return entry.site_index in indices or doomed_host(entry.target.host)

        cache = self.pipeline.cache
        n = cache.purge_where(None, doomed)
        n += await cache.purge_listed_behind(
            lambda keys, _digest: doomed_host(keys.host),
            self.pipeline.enforcer.purge_slice_s,
        )
        n += cache.purge_where(None, doomed)
        self.pipeline.memo.clear()
        return n

    def tls_reload(self) -> TlsReloaded:
        """Compile the certificates aside (raises on a broken one: the old stay), then swap."""
        if self.tls is None:
            raise ValueError("this node has no TLS listener (listen_tls)")
        new = Certificates.compile(certificate_specs(self.cfg))
        changed = new.fingerprint != self.tls.certificates.fingerprint
        if changed:
            self.tls.swap(new)
            log.info("TLS certificates reloaded")
        return TlsReloaded(fingerprint=new.fingerprint, changed=changed)

    def report(self) -> StatsReply:
        mem = self.memory.stats()
        node_objects, node_bytes, node_max = self.pipeline.cache.node_usage()
        self.stats.note_front(self.server.rejected, self.server.timeouts)
        h1 = getattr(self.origin, "h1", None)  # the pool's http client (not a test's stand-in)
        if h1 is not None:
            self.stats.origin_heads_replayed = h1.known_heads.replayed
        snap = self.pipeline.blocklist
        return StatsReply(
            pid=os.getpid(),
            worker=self.index,
            stats=self.stats.snapshot(),
            cache=CacheReport(
                objects=mem.objects,
                bytes=mem.bytes,
                max_bytes=mem.max_bytes,
                evictions=mem.evictions,
                purged=mem.purged,
                node_objects=node_objects,
                node_bytes=node_bytes,
                node_max_bytes=node_max,
            ),
            connections=self.server.open_connections,
            blocklist=BlocklistReport(
                version=snap.version,
                applied_at=self.applied_at,
                counts={str(k): v for k, v in snap.counts.items()},
            ),
            coalescing_waiters=self.pipeline.coalescer.waiters,
            origin_requests=self.origin.requests,
            started_at=self.started_at,
            tail=self.tail.report,
        )

    async def listen(self, ticket_key: str = "") -> Listening:
        """Serve on the supervisor's listen socket (inherited fd): the node's only one, shared
        with its own workers and nobody else."""
        if self.shares_fd >= 0:
            shares = ConnectionShares(self.shares_fd, self.index, self.cfg.worker_count())
            self.server.connection_shares = shares
        sock = socket.socket(fileno=self.listen_fd)
        sock.setblocking(False)
        await self.server.start(sock=sock)
        if self.tls is not None and self.tls_fd >= 0:
            if ticket_key and not share_ticket_keys(self.tls.context, bytes.fromhex(ticket_key)):
                log.warning("TLS session tickets resume only on the worker that issued them")
            tls_sock = socket.socket(fileno=self.tls_fd)
            tls_sock.setblocking(False)
            await self.server.start(
                sock=tls_sock,
                ssl=self.tls.context,
                ssl_handshake_timeout_s=self.cfg.tls.handshake_timeout_s,
            )
        self.server_started = True
        return Listening(port=self.server.port, tls_port=self.server.tls_port)

    # -- lifecycle ----------------------------------------------------------------------------

    async def serve_control(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        self._control_writer = writer
        write_frame(writer, Ready(pid=os.getpid(), worker=self.index))
        await writer.drain()
        try:
            while True:
                frame = await read_frame(reader)
                asyncio.ensure_future(self._dispatch(frame, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            # The supervisor is gone (or speaks nonsense): stop rather than run unsupervised.
            self.stopping.set()

    async def _dispatch(self, frame: bytes, writer: asyncio.StreamWriter) -> None:
        reply: Message
        try:
            msg = request_decoder.decode(frame)
        except msgspec.DecodeError as e:
            # The id, if the frame has one, so the supervisor's caller gets the error.
            log.warning("control frame refused: %s", e)
            reply = Failed(id=_frame_id(frame), error=f"bad request: {e}")
        else:
            try:
                reply = msgspec.structs.replace(await self.handle(msg), id=msg.id)
            except Exception as e:  # noqa: BLE001 - reported to the supervisor, worker keeps serving
                log.warning("control op %s failed: %s", type(msg).__name__, e)
                reply = Failed(id=msg.id, error=f"{type(e).__name__}: {e}")
        try:
            write_frame(writer, reply)
            await writer.drain()
        except ConnectionError:
            self.stopping.set()

    async def _send_final_stats(self) -> None:
        """After the last request: the final counts, unasked (id 0), so the supervisor keeps
        what this worker counted since it was last scraped."""
        writer = self._control_writer
        if writer is None or writer.is_closing():
            return
        try:
            write_frame(writer, self.report())
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass  # the supervisor is gone: nobody to tell

    async def _gc_policy(self) -> None:
        """Keep full collections from walking the cache: survivors are frozen every
        `gc_freeze_interval_s` (after a young-generation pass, so fresh cyclic garbage is not
        frozen), and one full pass every `gc_full_collect_interval_s` reclaims what was."""
        freeze_s = self.cfg.gc_freeze_interval_s
        full_s = self.cfg.gc_full_collect_interval_s
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(freeze_s)
            if not gc.isenabled():
                continue  # a big blocklist version is loading; it freezes when it is done
            if full_s > 0 and time.monotonic() - last_full >= full_s:
                gc.unfreeze()
                gc.collect()
                last_full = time.monotonic()
            else:
                gc.collect(1)
            gc.freeze()

    async def run(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        gc_task: asyncio.Future[None] | None = None
        if self.cfg.gc_freeze_interval_s > 0:
            gc.collect()
            gc.freeze()  # the start-up heap: modules, config, compiled tables
            gc_task = asyncio.ensure_future(self._gc_policy())
        self.tail.start(loop)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        await self.origin.start()
        if self.shared is not None:
            await self.shared.start()
        control = asyncio.ensure_future(self.serve_control(fd))
        gate_task = None
        if self.gate is not None:
            gate_task = asyncio.ensure_future(self.gate.watch(self.cfg.gate.poll_interval_s))
        try:
            await self.stopping.wait()
        finally:
            self.tail.stop()
            if gc_task is not None:
                gc_task.cancel()
            if gate_task is not None:
                gate_task.cancel()
            log.info("draining %d open connections", self.server.open_connections)
            await self.server.drain_and_close(self.cfg.drain_timeout_s)
            await self._send_final_stats()
            control.cancel()
            if self.shared is not None:
                await self.shared.close()
            if self.node is not None:
                self.node.close()  # what is queued is written; the tier outlives the worker
            await self.origin.close()
            if self.access_log is not None:
                self.access_log.close()


async def _release(shards: list[dict[Any, Any]]) -> None:
    """Free a retired snapshot's tables one shard at a time (a million entries freed at once
    held the loop for 0.4 s, measured)."""
    for shard in shards:
        shard.clear()
        await asyncio.sleep(0)


def main() -> None:
    fd, index, listen_fd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    tls_fd = int(sys.argv[4]) if len(sys.argv) > 4 else -1
    shares_fd = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    set_title(f"worker {index} (starting)")
    cfg = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
    configure_log(cfg.log.format, process=f"worker[{index}]")
    worker = Worker(cfg, index, listen_fd, tls_fd, shares_fd)
    try:
        import uvloop

        uvloop.run(worker.run(fd))
    except ImportError:
        asyncio.run(worker.run(fd))


if __name__ == "__main__":
    main()
