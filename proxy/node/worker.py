"""One worker process: the front, the pipeline, its memory tier and origin pool, and the
control channel to the supervisor. Started by the supervisor as `python -m proxy.node.worker FD N`
with the config (msgspec JSON) on stdin.

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
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist.compiled import load_compiled
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.memory import MemoryTier
from proxy.cache.shared import SharedTier
from proxy.config import Config, parse_hostport
from proxy.context import SPECIAL_FIELDS
from proxy.front.limits import FrontLimits
from proxy.front.server import FrontServer
from proxy.metrics import WorkerStats
from proxy.node.control import read_frame, write_frame
from proxy.origin import OriginPool
from proxy.pipeline import Pipeline
from proxy.rfc.target import BadTarget, canonical_target
from proxy.sites import SiteTable

log = logging.getLogger("edgeproxy.node.worker")


def front_limits(cfg: Config) -> FrontLimits:
    return FrontLimits(**{f.name: getattr(cfg.limits, f.name) for f in dc_fields(FrontLimits)})


def listen_socket(addr: str) -> socket.socket:
    host, port = parse_hostport(addr, what="listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Worker:
    def __init__(self, cfg: Config, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.sites = SiteTable(cfg)
        self.stats = WorkerStats(self.sites.names)
        share = max(1, cfg.cache.memory_cache_bytes // cfg.worker_count())
        self.memory = MemoryTier(share, min(cfg.cache.max_object_bytes, share))
        self.origin = OriginPool(cfg.origin)
        access = None
        if cfg.log.access_log:
            from proxy.node.accesslog import AccessLog

            access = AccessLog(
                cfg.log.access_log,
                cfg.log.access_log_sample,
                self.sites.names,
                index,
                stats=self.stats,
            )
        self.access_log = access
        # Shared by this node's workers (and a fleet's nodes) behind each memory tier.
        self.shared = (
            SharedTier.from_config(cfg.cache, self.stats) if cfg.cache.shared_tier_url else None
        )
        self.pipeline = Pipeline(
            cfg,
            self.sites,
            self.memory,
            self.origin,
            self.stats,
            access_log=access,
            shared=self.shared,
        )
        self.server = FrontServer(
            self.pipeline,
            front_limits(cfg),
            server_name=cfg.via_name.encode(),
            flag_headers=SPECIAL_FIELDS,
            # Hot cache hits answered before any request object (not with an access log:
            # its records need the request).
            fast_answer=self.pipeline.fast_answer if access is None else None,
            # RFC 9211 on every response, also the front's own refusals.
            error_headers=[(b"Cache-Status", cfg.via_name.encode() + b"; detail=refused")],
        )
        self.server.on_handler_error = self._handler_error
        self.applied_at = 0.0
        self.server_started = False
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self._purges: set[asyncio.Future[object]] = set()  # purges and releases under way
        self._expiry: asyncio.TimerHandle | None = None

    def _handler_error(self, *_: object) -> None:
        self.stats.handler_errors += 1

    # -- control ops --------------------------------------------------------------------------

    async def op_blocklist_load(self, args: dict[str, Any]) -> dict[str, Any]:
        """A full version, compiled by the supervisor; built aside in steps, then swapped."""
        pause = float(args.get("pause_s", 0.0)) if self.server_started else 0.0
        snap = await load_compiled(
            Path(args["path"]), int(args["version"]), time.time(), pause_s=pause
        )
        return self._apply(snap)

    async def op_blocklist_delta(self, args: dict[str, Any]) -> dict[str, Any]:
        version = int(args["version"])
        adds = msgspec.convert(args.get("add", []), type=list[BlockEntry])
        removes = list(args.get("remove", []))
        current = self.pipeline.blocklist
        snap = current.with_changes(adds, removes, version, time.time())  # shards: cheap
        return self._apply(snap, adds=adds)

    def _apply(self, snap: Snapshot, adds: list[BlockEntry] | None = None) -> dict[str, Any]:
        old = self.pipeline.blocklist
        self.pipeline.apply_blocklist(snap)
        self.applied_at = time.time()
        if adds is None:
            self._background(self.pipeline.purge_listed(snap))
        elif adds:
            self._background(self.pipeline.purge_added(adds, snap))
        self._background(_release(old.exclusive_shards(snap)))
        self._schedule_expiry(snap)
        return {"version": snap.version, "applied_at": self.applied_at, "pid": os.getpid()}

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
        self.pipeline.apply_blocklist(fresh)
        self._background(_release(current.exclusive_shards(fresh)))
        self._schedule_expiry(fresh)

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._purges.add(task)
        task.add_done_callback(self._purges.discard)

    async def op_purge(self, args: dict[str, Any]) -> dict[str, Any]:
        n = 0
        try:
            if args.get("url"):
                n = self.pipeline.purge(url=_target(args["url"]))
            elif args.get("prefix"):
                n = self.pipeline.purge(prefix=_target(args["prefix"]))
            elif args.get("host"):
                n = self.pipeline.purge(host=str(args["host"]).lower().rstrip("."))
        except BadTarget as e:
            raise ValueError(f"not a valid URL: {e.reason}") from e
        return {"purged": n}

    async def op_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        mem = self.memory.stats()
        self.stats.note_front(self.server.rejected)
        return {
            "pid": os.getpid(),
            "worker": self.index,
            "stats": self.stats.snapshot(),
            "cache": {
                "objects": mem.objects,
                "bytes": mem.bytes,
                "max_bytes": mem.max_bytes,
                "evictions": mem.evictions,
                "purged": mem.purged,
            },
            "connections": self.server.open_connections,
            "blocklist": {
                "version": self.pipeline.blocklist.version,
                "applied_at": self.applied_at,
                "counts": {str(k): v for k, v in self.pipeline.blocklist.counts.items()},
            },
            "coalescing_waiters": self.pipeline.coalescer.waiters,
            "origin_requests": self.origin.requests,
            "started_at": self.started_at,
        }

    async def op_listen(self, args: dict[str, Any]) -> dict[str, Any]:
        sock = listen_socket(self.cfg.listen)
        await self.server.start(sock=sock)
        self.server_started = True
        return {"port": self.server.port}

    async def op_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid()}

    # -- lifecycle ----------------------------------------------------------------------------

    async def serve_control(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        write_frame(writer, {"op": "ready", "result": {"pid": os.getpid(), "worker": self.index}})
        await writer.drain()
        try:
            while True:
                msg = await read_frame(reader)
                asyncio.ensure_future(self._dispatch(msg, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            # The supervisor is gone: stop serving rather than run unsupervised.
            self.stopping.set()

    async def _dispatch(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = str(msg.get("op", "")).replace(".", "_")
        handler = getattr(self, f"op_{op}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown op {msg.get('op')!r}")
            result = await handler(msg.get("args") or {})
            reply = {"id": msg.get("id"), "ok": True, "result": result}
        except Exception as e:  # noqa: BLE001 - reported to the supervisor, worker keeps serving
            log.warning("control op %s failed: %s", msg.get("op"), e)
            reply = {"id": msg.get("id"), "ok": False, "error": f"{type(e).__name__}: {e}"}
        try:
            write_frame(writer, reply)
            await writer.drain()
        except ConnectionError:
            self.stopping.set()

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
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        await self.origin.start()
        if self.shared is not None:
            await self.shared.start()
        control = asyncio.ensure_future(self.serve_control(fd))
        try:
            await self.stopping.wait()
        finally:
            if gc_task is not None:
                gc_task.cancel()
            await self.server.drain_and_close(self.cfg.drain_timeout_s)
            control.cancel()
            if self.shared is not None:
                await self.shared.close()
            await self.origin.close()
            if self.access_log is not None:
                self.access_log.close()


async def _release(shards: list[dict[Any, Any]]) -> None:
    """Free a retired snapshot's tables one shard at a time (a million entries freed at once
    held the loop for 0.4 s, measured)."""
    for shard in shards:
        shard.clear()
        await asyncio.sleep(0)


def _target(url: str) -> Any:
    from yarl import URL

    u = URL(url)
    if not u.host:
        raise BadTarget(400, "URL needs a host")
    path = u.raw_path_qs or "/"
    return canonical_target(path.encode(), u.raw_authority.encode())


def main() -> None:
    fd, index = int(sys.argv[1]), int(sys.argv[2])
    cfg = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
    logging.basicConfig(
        level=os.environ.get("EDGEPROXY_LOG_LEVEL", "WARNING"),
        format=f"%(asctime)s worker[{index}] %(levelname)s %(name)s: %(message)s",
    )
    worker = Worker(cfg, index)
    try:
        import uvloop

        uvloop.run(worker.run(fd))
    except ImportError:
        asyncio.run(worker.run(fd))


if __name__ == "__main__":
    main()
