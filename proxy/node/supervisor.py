"""The supervisor: one listen socket, N worker processes accepting on it, one admin listener,
signals.

The supervisor binds the node's listen socket itself, without SO_REUSEPORT, and hands the same
file descriptor to every worker it starts (as nginx does by default). The kernel then refuses the
address to anyone else: a second node started on the port fails at start, naming the address,
instead of silently taking a share of the traffic (with per-worker SO_REUSEPORT sockets any
process of the same user could join the group, list or no list). The socket outlives workers, so
a restarted or rolled worker serves on the same port and connections queued meanwhile wait in
the backlog rather than being reset.

- SIGTERM / SIGINT: every worker drains its in-flight requests, then exits.
- SIGHUP: re-read the config file (a broken one is refused and the running one kept), apply it
  (in place when the running workers can take it, keeping their caches; else replacing workers
  one at a time: proxy/node/reload.py decides, and drops the objects of sites whose
  cache-relevant settings changed; a new `[fleet]` restarts the feed's follower from the
  enforced version), and re-read the blocklist directory. On a node with a TLS listener
  whose config did not change, SIGHUP (and a change to a certificate or key file) reloads the
  certificates inside the running workers instead: new handshakes get the new ones, open
  connections are not touched; a certificate or key that does not load is refused, naming it,
  and the served ones stay.
- A worker that dies is restarted (with a short backoff); it listens only once it enforces the
  current blocklist version.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from proxy.blocklist.node import NodeBlocklist
from proxy.cache.node import close_clean, preallocated, prepare, reserve, tier_path
from proxy.config import (
    Config,
    ConfigError,
    certificate_specs,
    default_state_dir,
    load,
    parse_hostport,
)
from proxy.front.accept import ConnectionShares
from proxy.front.tls import TICKET_KEY_BYTES, CertificateError, Certificates
from proxy.identity import set_title
from proxy.metrics import combine
from proxy.node import reload as reload_plan
from proxy.node.control import (
    Applied,
    Channel,
    ConfigApplied,
    ConfigApply,
    ControlError,
    DropSites,
    Listen,
    Listening,
    Pong,
    Purge,
    Purged,
    Request,
    Retire,
    StatsReply,
    StatsRequest,
    TlsReload,
    TlsReloaded,
    purge_target,
)
from proxy.node.health import NodeHealth
from proxy.node.sdnotify import notify as sd_notify
from proxy.node.sdnotify import reloading as sd_reloading
from proxy.node.sdnotify import watchdog_interval_s
from proxy.node.servicelog import configure as configure_log

log = logging.getLogger("edgeproxy.node.supervisor")


@dataclass(eq=False)
class WorkerHandle:
    index: int
    proc: asyncio.subprocess.Process
    channel: Channel
    started_at: float = field(default_factory=time.time)
    listening: bool = False
    retiring: bool = False
    stopped_accepting: bool = False  # a retiring worker confirmed its listening socket closed
    applied_at: float = 0.0  # when it first enforced the node's blocklist
    config_generation: int = 0  # which of the supervisor's configs it runs

    @property
    def pid(self) -> int:
        return self.proc.pid


class ListenRefused(Exception):
    """The listen address is taken (by another node or program): the node does not start."""


LISTEN_BACKLOG = 4096


class Closable(Protocol):
    async def cleanup(self) -> None: ...


# Starts the admin listener for a node (proxy.admin.app.start_admin): given by the caller, so the
# node never imports the admin API that reads it.
AdminStarter = Callable[["Supervisor"], Awaitable[Closable]]


class Supervisor:
    """Satisfies proxy.admin.view.NodeView: the admin API sees the node through that."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: str | None = None,
        admin_token: str = "",
        start_admin: AdminStarter | None = None,
        cache_clear: bool = False,
        load_config: Callable[[str], Config] = load,
    ) -> None:
        self.cfg = cfg
        # Reads the config file at SIGHUP; `edgeproxy serve` passes one that re-applies its
        # flags (--workers, --state-dir, …), which a reload must not lose.
        self._load_config = load_config
        self.cache_clear = cache_clear  # --cache-clear: the node tier starts empty
        self.start_admin = start_admin
        self.config_path = config_path
        self.admin_token = admin_token
        self.workers: dict[int, WorkerHandle] = {}
        self.restarts = 0
        self._retired_total: dict[str, Any] | None = None  # counts of workers that exited
        # Workers replaced by a rolling restart but still draining: their counts are in
        # neither the current workers' nor the retired total until they exit.
        self._retiring: set[WorkerHandle] = set()
        self.started_at = time.time()
        self.stopping = False
        self._stopped = asyncio.Event()
        self._monitors: set[asyncio.Task[None]] = set()
        self.state_dir = Path(cfg.state_dir) if cfg.state_dir else default_state_dir()
        self.fleet: Any = None  # proxy.fleet.follower.Follower with [fleet] redis_url
        if cfg.fleet.redis_url:
            from proxy.fleet.follower import Follower, fleet_node_config

            bl_cfg = fleet_node_config(cfg, self.state_dir)
            self.blocklist = NodeBlocklist(bl_cfg, self.state_dir, self.broadcast)
            self.fleet = Follower(bl_cfg, self.blocklist)
        else:
            self.blocklist = NodeBlocklist(cfg, self.state_dir, self.broadcast)
        self.last_stats: dict[int, dict[str, Any]] = {}
        self.port = 0
        self.config_generation = 0  # bumped by every accepted SIGHUP config
        self._admin_runner: Any = None
        self._watcher: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self._listen: socket.socket | None = None
        self._listen_tls: socket.socket | None = None
        self._shares_fd = -1  # the workers' connection counts (proxy/front/accept.py)
        self.tls_port = 0
        self.tls_fingerprint = ""  # of the certificate files the workers serve
        self.tls_reload_failures = 0
        # One session ticket key for the node's lifetime, handed to every worker it starts
        # (a restarted or rolled worker too), so tickets resume on any of them.
        self._ticket_key = os.urandom(TICKET_KEY_BYTES).hex() if cfg.listen_tls else ""
        self._tls_watchers: list[Any] = []
        # The config file as last read (before flags were applied): a SIGHUP that finds the
        # same settings in it reloads certificates only, keeping workers and connections.
        self._file_cfg: Config | None = None
        if config_path and cfg.listen_tls:
            try:
                self._file_cfg = load_config(config_path)
            except ConfigError:
                self._file_cfg = None

    # -- workers ------------------------------------------------------------------------------

    async def _spawn(self, index: int) -> WorkerHandle:
        assert self._listen is not None, "start() binds the listen socket first"
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_fd = self._listen.fileno()
        tls_fd = self._listen_tls.fileno() if self._listen_tls is not None else -1
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "proxy.node.worker",
                str(child.fileno()),
                str(index),
                str(listen_fd),
                str(tls_fd),
                str(self._shares_fd),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(child.fileno(), listen_fd, self._shares_fd)
                + ((tls_fd,) if tls_fd >= 0 else ()),
            )
        finally:
            child.close()
        assert proc.stdin is not None
        proc.stdin.write(msgspec.json.encode(self.cfg))
        await proc.stdin.drain()
        proc.stdin.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        channel = Channel(reader, writer)
        handle = WorkerHandle(index, proc, channel, config_generation=self.config_generation)
        try:
            async with asyncio.timeout(30):
                await channel.ready
            # The compiled full version, then the changes made since it was compiled: a new
            # worker enforces exactly the node's current version before it listens.
            timeout = self.cfg.admin.apply_timeout_s
            load = _request("blocklist.load", self.blocklist.load_args())
            ack = await channel.call(load, Applied, timeout_s=timeout)
            for delta in self.blocklist.deltas_since_compiled():
                ack = await channel.call(
                    _request("blocklist.delta", delta), Applied, timeout_s=timeout
                )
            await channel.call(Listen(ticket_key=self._ticket_key), Listening, timeout_s=10)
        except BaseException:
            _kill(proc)
            channel.close()
            raise
        handle.listening = True
        handle.applied_at = ack.applied_at
        log.info(
            "worker %d (pid %d) started, enforcing blocklist version %d",
            index,
            proc.pid,
            ack.version,
        )
        return handle

    async def start_worker(self, index: int) -> WorkerHandle:
        # Under the blocklist lock: no change can be distributed between this worker's load
        # and its joining the set that later changes are broadcast to.
        async with self.blocklist.lock:
            handle = await self._spawn(index)
            self.workers[index] = handle
        t = asyncio.ensure_future(self._monitor(handle))
        self._monitors.add(t)
        t.add_done_callback(self._monitors.discard)
        return handle

    async def _monitor(self, handle: WorkerHandle) -> None:
        code = await handle.proc.wait()
        # A worker that drained sends its final counts before it exits: read them, so what it
        # counted after the last scrape is not lost (counters never go backwards).
        await handle.channel.wait_closed(timeout_s=1.0)
        handle.channel.close()
        final = handle.channel.final_stats
        last = self.last_stats.pop(handle.pid, None)
        if final is not None:
            last = final.stats
        if last is not None:
            self._retired_total = combine([s for s in (self._retired_total, last) if s is not None])
        self._retiring.discard(handle)
        if self.workers.get(handle.index) is handle:
            del self.workers[handle.index]
        if self.stopping or handle.retiring:
            return
        log.error("worker %d (pid %d) exited with %s; restarting", handle.index, handle.pid, code)
        self.restarts += 1
        delay = self.cfg.worker_restart_backoff_s
        while not self.stopping:
            await asyncio.sleep(delay)
            try:
                await self.start_worker(handle.index)
                return
            except Exception as e:  # noqa: BLE001 - keep trying, with backoff
                log.error("worker %d failed to start: %s", handle.index, e)
                delay = min(delay * 2, 10.0)

    async def broadcast(self, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Send `op` (a control request's tag, with its fields) to every worker and wait for
        all answers. A worker that fails to apply a blocklist change is restarted (it then loads
        the full current version). The acks are plain data: NodeBlocklist records them."""
        request = _request(op, args)
        handles = [h for h in self.workers.values() if not h.retiring]
        timeout = self.cfg.admin.apply_timeout_s
        reply: type[Any] = Applied
        if isinstance(request, Purge | DropSites):
            reply = Purged
        elif isinstance(request, ConfigApply):
            reply = ConfigApplied
        elif isinstance(request, TlsReload):
            reply = TlsReloaded
        results: list[Any]
        if op == "blocklist.load":
            # A full version costs each worker seconds of CPU to build: one worker at a time,
            # so the others serve at full speed meanwhile (the old version enforces until all
            # have the new one, and the answer waits for the last).
            results = []
            for h in handles:
                try:
                    results.append(await h.channel.call(request, reply, timeout_s=timeout))
                except Exception as e:  # noqa: BLE001 - reported below, like gather's
                    results.append(e)
        else:
            results = await asyncio.gather(
                *(h.channel.call(request, reply, timeout_s=timeout) for h in handles),
                return_exceptions=True,
            )
        acks: list[dict[str, Any]] = []
        failed: list[str] = []
        for h, r in zip(handles, results, strict=True):
            if isinstance(r, BaseException):
                failed.append(f"worker {h.index}: {r}")
                if op.startswith("blocklist"):
                    _kill(h.proc)
            else:
                ack = msgspec.structs.asdict(r)
                del ack["id"]
                acks.append({"worker": h.index, **ack})
        if failed:
            raise ControlError("; ".join(failed))
        return acks

    async def purge(self, *, url: str = "", prefix: str = "", host: str = "") -> tuple[int, int]:
        """Purge in every worker: (objects purged, workers that answered). A URL or prefix
        the cache could not hold raises ValueError before any worker is asked."""
        for given in (url, prefix):
            if given:
                purge_target(given)
        acks = await self.broadcast("purge", {"url": url, "prefix": prefix, "host": host})
        return sum(int(a["purged"]) for a in acks), len(acks)

    @property
    def retired_stats(self) -> dict[str, Any] | None:
        """Counts of workers no longer current: those that exited, and the last known counts
        of those still draining after a rolling restart (so counters never go backwards)."""
        draining = [self.last_stats.get(h.pid) for h in self._retiring]
        return combine([s for s in (self._retired_total, *draining) if s is not None])

    async def gather_stats(self, timeout_s: float = 2.0) -> list[StatsReply]:
        """The current workers' stats. Draining workers are asked too, to keep their last
        known counts fresh for `retired_stats`, but are not among the answers."""
        current = list(self.workers.values())
        handles = current + [h for h in self._retiring if h not in current]
        results = await asyncio.gather(
            *(h.channel.call(StatsRequest(), StatsReply, timeout_s=timeout_s) for h in handles),
            return_exceptions=True,
        )
        out = []
        for h, r in zip(handles, results, strict=True):
            if isinstance(r, StatsReply):
                self.last_stats[r.pid] = r.stats
                if h in current:
                    out.append(r)
        return out

    def health(self) -> NodeHealth:
        live = [h for h in self.workers.values() if h.proc.returncode is None]
        return NodeHealth(
            wanted=self.cfg.worker_count(),
            running=len(live),
            listening=sum(1 for h in live if h.listening),
            # Also a retiring worker that may still take new clients: until it confirms, the
            # reload is not over (the old config could answer a new connection).
            behind_config=sorted(
                h.index
                for h in (*live, *self._retiring)
                if h.proc.returncode is None
                and h.config_generation != self.config_generation
                and not h.stopped_accepting
            ),
            config_generation=self.config_generation,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def _bind_listen(self) -> None:
        """Bind and listen once, for all workers (see the module docstring); the TLS listener
        the same way, when there is one."""
        self._listen = _bind(self.cfg.listen, "listen")
        if self._shares_fd < 0:
            self._shares_fd = ConnectionShares.create()
        self.port = self._listen.getsockname()[1]
        host, port = parse_hostport(self.cfg.listen, what="listen")
        if port == 0:
            self.cfg = msgspec.structs.replace(self.cfg, listen=f"{host}:{self.port}")
        if self.cfg.listen_tls:
            self._listen_tls = _bind(self.cfg.listen_tls, "listen_tls")
            self.tls_port = self._listen_tls.getsockname()[1]
            host, port = parse_hostport(self.cfg.listen_tls, what="listen_tls")
            if port == 0:
                self.cfg = msgspec.structs.replace(self.cfg, listen_tls=f"{host}:{self.tls_port}")

    async def start(self) -> None:
        set_title("supervisor")
        self._bind_listen()
        self._prepare_node_tier()
        if self.fleet is not None:
            await self.fleet.prepare()  # a new node starts on the feed's full version
        self.blocklist.load_initial()
        await asyncio.gather(*(self.start_worker(i) for i in range(self.cfg.worker_count())))
        self.blocklist.started(max(h.applied_at for h in self.workers.values()))
        if self.cfg.admin.listen:
            if self.start_admin is None:
                raise RuntimeError("admin.listen is set but no admin API was given to serve it")
            self._admin_runner = await self.start_admin(self)
        if self.cfg.blocklist.dir:
            from proxy.blocklist.watch import DirectoryWatcher

            self._watcher = DirectoryWatcher(
                self.cfg.blocklist.dir,
                self._on_blocklist_change,
                poll_interval_s=self.cfg.blocklist.poll_interval_s,
            )
            await self._watcher.start()
        if self.fleet is not None:
            self.fleet.start()
        if self.cfg.listen_tls:
            self.tls_fingerprint = Certificates.compile(certificate_specs(self.cfg)).fingerprint
            if self.cfg.tls.watch_files:
                await self._watch_tls_files()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        admin = f", admin http://{self.cfg.admin.listen}" if self.cfg.admin.listen else ""
        print(f"state dir {self.state_dir.resolve()}", flush=True)
        https = f" and https://{self.cfg.listen_tls}" if self.cfg.listen_tls else ""
        print(
            f"edgeproxy listening on http://{self.cfg.listen}{https} "
            f"with {len(self.workers)} workers{admin}",
            flush=True,
        )
        sd_notify("READY=1", self._sd_status())
        if (every_s := watchdog_interval_s()) > 0:
            self._watchdog = asyncio.ensure_future(self._ping_watchdog(every_s))

    def _prepare_node_tier(self) -> None:
        """Before any worker opens it: cleared, or moved aside and rebuilt when unusable
        (proxy/cache/node.py `prepare`). A tier that cannot even be created is logged and the
        workers run on memory alone: the cache is never a reason not to serve."""
        if self.cfg.cache.node_tier_bytes <= 0:
            return
        path = tier_path(self.cfg)
        try:
            outcome = prepare(
                path,
                self.cfg.cache.node_tier_bytes,
                clear=self.cache_clear,
                prealloc=self.cfg.cache.node_tier_preallocate,
                keep_free_bytes=self.cfg.cache.node_tier_preallocate_keep_free_bytes,
            )
        except OSError as e:
            log.error("node tier %s unusable: %s", path, e)
            return
        log.info("node tier %s: %s", path, outcome)

    def _reserve_node_tier(self) -> None:
        """Before a rolling restart: disk blocks for the map of a new, larger bound, so the
        new workers write through the map too (the old ones stop writing once another grows
        the map past their blocks: `NodeTier._remap`). Nothing when already there."""
        cache = self.cfg.cache
        path = tier_path(self.cfg)
        if cache.node_tier_bytes <= 0 or not cache.node_tier_preallocate or not path.exists():
            return
        if not preallocated(path, cache.node_tier_bytes):
            outcome = reserve(
                path, cache.node_tier_bytes, cache.node_tier_preallocate_keep_free_bytes
            )
            log.info("node tier %s: %s for the new bound", path, outcome)

    def _sd_status(self) -> str:
        return (
            f"STATUS=serving {self.cfg.listen} with {len(self.workers)} workers, "
            f"blocklist version {self.blocklist.version}"
        )

    async def _ping_watchdog(self, every_s: float) -> None:
        """WATCHDOG=1 from the event loop itself: if the loop wedges, the pings stop and
        systemd restarts the node (WatchdogSec=)."""
        while not self.stopping:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(every_s)

    async def _on_blocklist_change(self) -> None:
        try:
            await self.blocklist.reload_dir()
        except Exception as e:  # noqa: BLE001 - last good list keeps enforcing
            self.blocklist.reload_failures += 1
            log.error("blocklist reload failed: %s", e)

    def request_stop(self) -> None:
        if not self.stopping:
            log.info(
                "stopping: workers drain in-flight requests (up to %.0f s)",
                self.cfg.drain_timeout_s,
            )
            sd_notify("STOPPING=1", "STATUS=draining")
            self.stopping = True
            asyncio.ensure_future(self._stop())

    async def _stop(self) -> None:
        for h in self.workers.values():
            if h.proc.returncode is None:
                h.proc.send_signal(signal.SIGTERM)
        deadline = self.cfg.drain_timeout_s + 5
        procs = [h.proc for h in self.workers.values()]
        try:
            async with asyncio.timeout(deadline):
                await asyncio.gather(*(p.wait() for p in procs))
        except TimeoutError:
            for p in procs:
                _kill(p)
        if self._watcher is not None:
            await self._watcher.stop()
        if self.fleet is not None:
            await self.fleet.stop()
        for watcher in self._tls_watchers:
            await watcher.stop()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        for sock in (self._listen, self._listen_tls):
            if sock is not None:
                sock.close()
        if self._shares_fd >= 0:
            os.close(self._shares_fd)
            self._shares_fd = -1
        if self.cfg.cache.node_tier_bytes > 0 and all(p.returncode is not None for p in procs):
            close_clean(tier_path(self.cfg), self.cfg.cache.node_tier_bytes)
        for path in self.blocklist.compiled_files():
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def reload(self) -> None:
        """SIGHUP: new config (if valid) via a rolling restart; then the blocklist dir.
        systemd hears RELOADING=1 now and READY=1 once it is over, accepted or refused."""
        log.info("reload requested")
        sd_notify(*sd_reloading(), "STATUS=reloading")
        try:
            await self._reload()
        finally:
            if not self.stopping:
                sd_notify("READY=1", self._sd_status())

    async def _reload(self) -> None:
        if not self.config_path:
            if self.cfg.listen_tls:
                await self.reload_tls()  # flags only: the certificate files are all to re-read
        else:
            try:
                new = self._load_config(self.config_path)
            except ConfigError as e:
                log.error("config reload refused, keeping the running config: %s", e)
                if e.field.endswith("cert_file"):  # a certificate or key that does not load
                    self.tls_reload_failures += 1
                new = None
            raw = new
            if new is not None and self.cfg.listen_tls and new == self._file_cfg:
                # The same settings: only certificate files may have been replaced (a
                # renewal), which the running workers take without a restart.
                await self.reload_tls()
                new = None
            if new is not None and new.listen != self.cfg.listen:
                log.error(
                    "config reload: listen address changes need a restart; keeping %s",
                    self.cfg.listen,
                )
                new = msgspec.structs.replace(new, listen=self.cfg.listen)
            if new is not None and bool(new.listen_tls) != bool(self.cfg.listen_tls):
                log.error("config reload refused: adding or removing listen_tls needs a restart")
                new = None
            elif new is not None and new.listen_tls != self.cfg.listen_tls:
                log.error(
                    "config reload: listen_tls changes need a restart; keeping %s",
                    self.cfg.listen_tls,
                )
                new = msgspec.structs.replace(new, listen_tls=self.cfg.listen_tls)
            if new is not None:
                self._file_cfg = raw
                if new.log.format != self.cfg.log.format:
                    configure_log(new.log.format, process="supervisor")
                new = await self._apply_fleet(new)
                await self._apply_config(new)
                if new.listen_tls:  # the new workers loaded what the files hold now
                    specs = certificate_specs(new)
                    self.tls_fingerprint = Certificates.compile(specs).fingerprint
        if self._watcher is not None:
            self._watcher.trigger()

    async def _apply_config(self, new: Config) -> None:
        """In place when the workers can take `new` (their memory caches stay), else a rolling
        restart; either way the objects of sites whose cache-relevant settings changed go."""
        plan = reload_plan.plan(self.cfg, new)
        self.cfg = new
        self.config_generation += 1
        dropped = ", ".join(plan.dropped_sites) or "none"
        if plan.in_place:
            args = {"config": new, "drop_sites": list(plan.dropped_sites)}
            try:
                await self.broadcast("config.apply", args)
            except ControlError as e:
                log.error("config could not be applied in place (%s); replacing workers", e)
            else:
                for h in self.workers.values():
                    h.config_generation = self.config_generation
                log.info("config reloaded in place, caches kept (sites dropped: %s)", dropped)
                return
        else:
            log.info(
                "config reload replaces workers (changed: %s; sites dropped: %s)",
                ", ".join(plan.restart_for),
                dropped,
            )
        # The node tier outlives the workers: the old ones drop the changed sites' objects
        # before they go, the new ones again once all run (what an old one stored meanwhile).
        await self._drop_sites(plan.dropped_sites)
        self._reserve_node_tier()
        await self._rolling_restart()
        await self._drop_sites(plan.dropped_sites)

    async def _apply_fleet(self, new: Config) -> Config:
        """A new `[fleet]`: the follower ends its session and follows the new settings from
        the enforced version (the list stays enforced throughout). Turning the fleet on or
        off needs a restart: warned, and the running settings kept. The config to apply."""
        fp = reload_plan.fleet_plan(self.cfg, new)
        if fp.refused:
            assert fp.keep is not None
            log.warning(
                "config reload: %s; keeping the running [fleet] and blocklist.dir", fp.refused
            )
            return fp.keep
        if fp.refollow and self.fleet is not None:
            log.info(
                "config reload: %s changed; the fleet follower restarts", ", ".join(fp.changed)
            )
            await self.fleet.refollow(new)
        return new

    async def _drop_sites(self, sites: tuple[str, ...]) -> None:
        if not sites:
            return
        try:
            await self.broadcast("cache.drop_sites", {"sites": list(sites)})
        except ControlError as e:
            log.error("dropping the cached objects of %s failed: %s", ", ".join(sites), e)

    async def reload_tls(self) -> bool:
        """Re-read the certificate and key files; when they load and differ from the served
        ones, every worker swaps them in (new handshakes only). True when they were swapped."""
        try:
            new = Certificates.compile(certificate_specs(self.cfg))
        except CertificateError as e:
            self.tls_reload_failures += 1
            log.error(
                "TLS reload refused, keeping the certificates being served: %s (field %s)",
                e,
                e.field,
            )
            return False
        if new.fingerprint == self.tls_fingerprint:
            return False
        try:
            await self.broadcast("tls.reload", {})
        except ControlError as e:
            self.tls_reload_failures += 1
            log.error("TLS reload failed in a worker (it keeps its certificates): %s", e)
            return False
        self.tls_fingerprint = new.fingerprint
        log.info("TLS certificates reloaded in every worker")
        return True

    async def _watch_tls_files(self) -> None:
        """One watcher per directory holding a certificate or key (a renewal usually replaces
        files or symlinks in it); a wake re-reads them all, a no-op when nothing changed."""
        from proxy.blocklist.watch import DirectoryWatcher

        files = Certificates.compile(certificate_specs(self.cfg)).files
        for directory in sorted(
            {str(Path(f).resolve().parent) for f in files}
            | {str(Path(f).absolute().parent) for f in files}
        ):
            watcher = DirectoryWatcher(
                directory,
                self._on_tls_files_change,
                suffix="",
                poll_interval_s=self.cfg.tls.poll_interval_s,
            )
            await watcher.start()
            self._tls_watchers.append(watcher)

    async def _on_tls_files_change(self) -> None:
        if not self.stopping:
            await self.reload_tls()

    async def _rolling_restart(self) -> None:
        for index in sorted(self.workers):
            old = self.workers[index]
            old.retiring = True
            self._retiring.add(old)
            async with self.blocklist.lock:
                new = await self._spawn(index)
                self.workers[index] = new
            t = asyncio.ensure_future(self._monitor(new))
            self._monitors.add(t)
            t.add_done_callback(self._monitors.discard)
            try:  # no old-config worker takes a new client once this is answered
                await old.channel.call(Retire(), Pong, timeout_s=self.cfg.drain_timeout_s)
                old.stopped_accepting = True
            except (ControlError, TimeoutError) as e:
                log.warning("worker %d did not confirm it stopped accepting: %s", index, e)
            old.proc.send_signal(signal.SIGTERM)  # drains and exits (also if it never answered)
        log.info("config reloaded; workers replaced")


def _bind(address: str, what: str) -> socket.socket:
    """One listen socket. SO_REUSEADDR only lets a restart bind over connections in
    TIME_WAIT; on Linux it never lets two sockets listen on one address."""
    host, port = parse_hostport(address, what=what)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit
        s.bind((host, port))
        s.listen(LISTEN_BACKLOG)
    except OSError as e:
        s.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ListenRefused(
            f"cannot listen on {where}: {e.strerror or e} "
            "(another edgeproxy node or another program holds it)"
        ) from e
    return s


def _request(op: str, args: dict[str, Any]) -> Request:
    """A control request from its tag and fields (NodeBlocklist speaks in those), checked by
    the same decoder the worker uses."""
    return msgspec.convert({"op": op, **args}, type=Request)  # type: ignore[arg-type]


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass


async def serve(
    cfg: Config,
    *,
    config_path: str | None = None,
    admin_token: str = "",
    start_admin: AdminStarter | None = None,
    cache_clear: bool = False,
    load_config: Callable[[str], Config] = load,
) -> int:
    sup = Supervisor(
        cfg,
        config_path=config_path,
        admin_token=admin_token,
        start_admin=start_admin,
        cache_clear=cache_clear,
        load_config=load_config,
    )
    try:
        await sup.start()
    except BaseException:
        sup.request_stop()
        await sup.wait_stopped()
        raise
    await sup.wait_stopped()
    return 0
