"""A node following the fleet's takedown feed (proxy/fleet/feed.py), in the supervisor.

The follower reads the versions stream with a blocking XREAD from where its enforced version
stands, and treats each entry as a file dropped into a directory: the entry's bytes are
verified with the blocklist's own reader (`format.parse_version`, the same checks a file gets),
written into the node's fleet directory (`<state_dir>/fleet`) and applied by
`NodeBlocklist.apply_version`, which shares the directory watcher's checks and distribution
(`_file_changed`) but takes the verified delta as it is instead of re-reading and re-verifying
the directory's whole chain; workers get a delta or a full version exactly as from a file drop
and the node's answer time is the proof. The directory is what a restart enforces, with or
without Redis.

Order is checked on the signed headers, not on the stream: a version is applied only when it
is full or rests on the enforced sequence; an old one is skipped (never applied twice); one
past a gap (its base was trimmed, or Redis lost it) makes the node bootstrap from the feed's
newest full version. A forged, unsigned or foreign-key entry is refused, counted and logged,
and the last good version keeps enforcing. Any Redis fault (down, killed, restarted empty,
slow, partitioned) ends the session: the node keeps serving and enforcing, says it is behind,
and reconnects with backoff; acknowledgements made meanwhile are sent once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.blocklist import format as blformat
from proxy.config import Config
from proxy.fleet import feed
from proxy.fleet.feed import Keys
from proxy.fleet.url import parse_redis_url

if TYPE_CHECKING:
    from proxy.blocklist.node import NodeBlocklist

log = logging.getLogger("edgeproxy.fleet")


def fleet_node_config(cfg: Config, state_dir: Path) -> Config:
    """The config the node's blocklist runs on: its file layer follows `<state_dir>/fleet`,
    where the follower writes each verified version."""
    directory = state_dir / "fleet"
    directory.mkdir(parents=True, exist_ok=True)
    return msgspec.structs.replace(
        cfg, blocklist=msgspec.structs.replace(cfg.blocklist, dir=str(directory))
    )


def node_name(cfg: Config) -> str:
    return cfg.fleet.node_name or socket.gethostname()


@dataclass(frozen=True, slots=True)
class FleetStatus:
    connected: bool
    version: int  # the fleet version this node enforces (0: none yet)
    head: int  # the newest version the feed had when last asked
    versions_behind: int
    seconds_behind: float  # since this node last knew it enforced the feed's newest version
    disconnected_s: float  # how long Redis has been unreachable (0 when connected)


class Follower:
    def __init__(
        self, cfg: Config, blocklist: NodeBlocklist, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.blocklist = blocklist
        self.directory = Path(blocklist.cfg.dir)
        self.clock = clock
        self._configure(cfg)
        self.connected = False
        self.head = 0
        now = clock()
        self.current_at = now  # when this node last knew it was at the feed's head
        self.disconnected_since: float | None = now
        self.refused = 0
        self.reconnects = 0
        self.rebootstraps = 0
        self.applied = 0  # versions applied from the feed
        self.last_error = ""
        self._unacked: dict[int, float] = {}
        self._acked = 0  # the newest version acknowledged
        self._task: asyncio.Task[None] | None = None
        # Held while a version is applied and acknowledged: a reload's new [fleet] waits for
        # it instead of cutting an apply in half.
        self._applying = asyncio.Lock()

    def _configure(self, cfg: Config) -> None:
        """Take `cfg`'s feed settings, all or (OSError: the key cannot be read) none."""
        public_key = Path(cfg.blocklist.public_key).read_bytes()
        u = parse_redis_url(cfg.fleet.redis_url)
        self.cfg = cfg.fleet
        self.name = node_name(cfg)
        self.keys = Keys(self.cfg.key_prefix)
        self.public_key = public_key
        self.where = f"{u.scheme}://{u.host}:{u.port}{u.path}"  # never the password

    @property
    def version(self) -> int:
        return self.blocklist.file_sequence or 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Before the node loads its list: when the feed answers within the connect timeout
        and holds a newer full version than the fleet directory, write it there, so a new
        node starts enforcing it. Redis down: the node starts on what the directory holds."""
        local = max(
            (s for p in blformat.list_versions(self.directory) if (s := blformat.peek_sequence(p))),
            default=0,
        )
        r = feed.connect(self.cfg)
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_s + self.cfg.read_timeout_s):
                full = await feed.read_full(r, self.keys)
        except Exception as e:  # noqa: BLE001 - any fault: start on the local versions
            log.warning(
                "fleet feed %s unreachable at start (%s); enforcing the local version %d",
                self.where,
                e,
                local,
            )
            return
        finally:
            await r.aclose()
        if full is None or full.seq <= local:
            return
        try:
            v = blformat.parse_version(full.data, self._source(full.id), self.public_key)
        except blformat.BlocklistError as e:
            self._refuse(str(e))
            return
        await asyncio.to_thread(self._write, v, full.data)

    def start(self) -> None:
        """Once every worker enforces the start-up version: that is acknowledged first."""
        if self.version:
            self._unacked[self.version] = self.blocklist.applied_at
        self._task = asyncio.create_task(self._run(), name="fleet-follower")

    async def stop(self, *, between_versions: bool = False) -> None:
        """End the session (the node's shutdown: at once); `between_versions`: never in the
        middle of applying one, which finishes first."""
        if self._task is not None:
            async with self._applying if between_versions else contextlib.nullcontext():
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def refollow(self, cfg: Config) -> None:
        """A SIGHUP's new `[fleet]` (or `blocklist.public_key`): end the session with the old
        feed cleanly, then follow the new one from the version this node enforces, which
        stays enforced throughout (nothing is unapplied; the new feed's older versions are
        skipped, a newer full version is bootstrapped from). The node's acknowledgement of that
        version goes to the new feed first, under its (possibly new) name; counters go on."""
        await self.stop(between_versions=True)
        before = self.where, self.name, self.keys
        try:
            self._configure(cfg)
        except OSError as e:  # the public key went away since the config was checked
            log.error("fleet: new settings not taken (%s); following %s as before", e, before[0])
            self.start()
            return
        self.connected, self.disconnected_since, self.head = False, self.clock(), 0
        if (self.where, self.keys) != (before[0], before[2]):
            # Another feed: acknowledgements still owed to the old one are not its business;
            # the one for the enforced version (start) covers every version before it.
            self._unacked.clear()
            self._acked = 0
        log.info(
            "fleet: following %s as node %r from version %d (was %s as %r)",
            self.where,
            self.name,
            self.version,
            *before[:2],
        )
        self.start()

    # -- the session loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.cfg.backoff_initial_s
        while True:
            r = feed.connect(self.cfg)
            try:
                await self._follow(r)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - every Redis fault ends the session
                if self.connected:
                    delay = self.cfg.backoff_initial_s
                self._lost(e)
            finally:
                try:
                    await r.aclose()
                except Exception:  # noqa: BLE001 - a broken connection may fail to close
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.backoff_max_s)

    async def _follow(self, r: Any) -> None:
        await r.ping()
        if self.disconnected_since is not None and self.reconnects == 0 and self.applied == 0:
            log.info("fleet feed %s: following as node %r", self.where, self.name)
        elif self.disconnected_since is not None:
            log.info("fleet feed %s: reconnected; catching up from %d", self.where, self.version)
        self.connected, self.disconnected_since = True, None
        if self.version > self._acked and self.version not in self._unacked:
            # Taken while a worker failed (the session ended before its ack): every worker
            # that serves enforces it by now (a restarted one loads it before it listens).
            self._unacked[self.version] = self.clock()
        await self._flush_acks(r)
        last_id = await self._bootstrap(r) or "0-0"
        block_ms = max(1, int(self.cfg.block_s * 1000))
        first = True
        while True:
            self.head, _ = await feed.read_head(r, self.keys)
            if first and self.head < self.version:
                log.warning(
                    "fleet feed %s: its newest version %d is older than the enforced %d "
                    "(another feed, or one restarted empty): keeping %d, applying only newer "
                    "versions",
                    self.where,
                    self.head,
                    self.version,
                    self.version,
                )
            first = False
            if self.version >= self.head:
                self.current_at = self.clock()
            got = await r.xread({self.keys.stream: last_id}, block=block_ms, count=100)
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    last_id = feed._s(entry_id)
                    restart = await self._take(r, last_id, fields)
                    if restart is not None:
                        last_id = restart
                        break

    async def _bootstrap(self, r: Any) -> str | None:
        """Apply the feed's full version when it is newer than the enforced one; the stream id
        to read on from (the full version's: everything after it is in the stream)."""
        full = await feed.read_full(r, self.keys)
        if full is None:
            return None
        if full.seq > self.version:
            try:
                v = blformat.parse_version(full.data, self._source(full.id), self.public_key)
            except blformat.BlocklistError as e:
                self._refuse(str(e))
                return full.id
            if self.version:
                self.rebootstraps += 1
                log.warning(
                    "fleet: bootstrapping from full version %d (enforcing %d)",
                    v.sequence,
                    self.version,
                )
            await self._apply(r, v, full.data)
        return full.id

    async def _take(self, r: Any, entry_id: str, fields: dict[bytes, bytes]) -> str | None:
        """One stream entry; a stream id to restart reading from after a bootstrap."""
        data = fields.get(b"data", b"")
        try:
            v = blformat.parse_version(bytes(data), self._source(entry_id), self.public_key)
        except blformat.BlocklistError as e:
            self._refuse(str(e))
            return None
        enforced = self.version
        if v.sequence <= enforced:
            return None  # already enforced (a replay after a reconnect or a re-seed)
        if v.base is None or v.base == enforced:
            await self._apply(r, v, bytes(data))
            return None
        if v.base < enforced:
            self._refuse(
                f"{self._source(entry_id)}: version {v.sequence} rests on {v.base}, not on the "
                f"enforced {enforced}; refused"
            )
            return None
        log.warning(
            "fleet: version %d rests on %d but this node enforces %d (trimmed or lost): "
            "bootstrapping",
            v.sequence,
            v.base,
            enforced,
        )
        restart = await self._bootstrap(r)
        if self.version < v.base:
            self._refuse(
                f"{self._source(entry_id)}: versions {enforced + 1}..{v.base} are not in the "
                "feed and no newer full version is; keeping the enforced list"
            )
            return None
        return restart

    async def _apply(self, r: Any, v: blformat.Version, data: bytes) -> None:
        async with self._applying:
            await self._apply_and_ack(r, v, data)

    async def _apply_and_ack(self, r: Any, v: blformat.Version, data: bytes) -> None:
        """Enforce it and keep its file (what a restart starts on, Redis or not) at once,
        then acknowledge: an ack never names a version a restart could forget."""
        kept = asyncio.ensure_future(asyncio.to_thread(self._write, v, data))
        try:
            result = await self.blocklist.apply_version(v)
        except blformat.BlocklistError as e:
            await self._discard(kept)
            self._refuse(str(e))
            return
        except BaseException:
            if self.blocklist.file_sequence == v.sequence:
                # Taken, but a worker failed to apply it (it is restarted on the node's current
                # version): keep the file, so a restart enforces what the workers now do.
                with contextlib.suppress(OSError):
                    await kept
            else:
                await self._discard(kept)
            raise
        if result is None or self.blocklist.file_sequence != v.sequence:
            await self._discard(kept)
            errors = "; ".join(self.blocklist.last_errors) or "not applied"
            self._refuse(f"version {v.sequence} verified but not applied: {errors}")
            raise RuntimeError(f"version {v.sequence} not applied")  # retried after backoff
        enforced_at = self.blocklist.applied_at
        try:
            await kept
        except OSError as e:  # enforced, but not acknowledged: a restart would forget it
            log.error("fleet: version %d enforced but not kept on disk: %s", v.sequence, e)
            return
        self.applied += 1
        if v.base is None:
            await asyncio.to_thread(self._prune, v.sequence)
        self._unacked[v.sequence] = enforced_at
        log.info(
            "fleet: version %d enforced by every worker (node version %d)",
            v.sequence,
            self.blocklist.version,
        )
        await self._flush_acks(r)

    async def _flush_acks(self, r: Any) -> None:
        for seq, at in sorted(self._unacked.items()):
            await feed.record_ack(r, self.keys, self.name, seq, at, self.cfg.ack_ttl_s)
            del self._unacked[seq]
            self._acked = max(self._acked, seq)

    # -- files --------------------------------------------------------------------------------

    def _write(self, v: blformat.Version, data: bytes) -> Path:
        path = self.directory / blformat.version_filename(v.sequence)
        blformat.write_atomic(path, data)
        return path

    @staticmethod
    async def _discard(kept: asyncio.Future[Path]) -> None:
        """A version not enforced must not be what a restart loads."""
        try:
            path = await kept
        except OSError:
            return
        path.unlink(missing_ok=True)

    def _prune(self, full_seq: int) -> None:
        """Versions before a full one are never needed again."""
        for path in blformat.list_versions(self.directory):
            seq = blformat.peek_sequence(path)
            if seq is not None and seq < full_seq:
                path.unlink(missing_ok=True)

    # -- faults and status --------------------------------------------------------------------

    def _source(self, entry_id: str) -> str:
        return f"{self.where}/{self.keys.stream}#{entry_id}"

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self.blocklist.reload_failures += 1
        self.blocklist.last_errors = [reason]
        self.last_error = reason
        log.error("fleet: version refused, keeping version %d: %s", self.version, reason)

    def _lost(self, e: BaseException) -> None:
        if self.connected:
            self.reconnects += 1
            log.error(
                "fleet feed %s lost (%s: %s); enforcing version %d, reconnecting",
                self.where,
                type(e).__name__,
                e,
                self.version,
            )
        self.connected = False
        self.last_error = f"{type(e).__name__}: {e}"
        if self.disconnected_since is None:
            self.disconnected_since = self.clock()

    def status(self, now: float | None = None) -> FleetStatus:
        now = self.clock() if now is None else now
        behind = max(0, self.head - self.version)
        current = self.connected and behind == 0
        return FleetStatus(
            connected=self.connected,
            version=self.version,
            head=self.head,
            versions_behind=behind,
            seconds_behind=0.0 if current else max(0.0, now - self.current_at),
            disconnected_s=0.0
            if self.disconnected_since is None
            else max(0.0, now - self.disconnected_since),
        )

    def status_json(self) -> dict[str, Any]:
        """For the admin API's /status: where the node stands in the feed."""
        return {
            "node": self.name,
            "redis": self.where,
            **dataclasses.asdict(self.status()),
            "refused": self.refused,
            "reconnects": self.reconnects,
            "rebootstraps": self.rebootstraps,
            "applied": self.applied,
            "last_error": self.last_error,
        }

    def problems(self, now: float | None = None) -> list[str]:
        """What /readyz says, once a fault has lasted `ready_grace_s`."""
        s = self.status(now)
        grace = self.cfg.ready_grace_s
        out = []
        if not s.connected and s.disconnected_s >= grace:
            out.append(
                f"fleet feed {self.where} unreachable for {s.disconnected_s:.0f} s "
                f"(enforcing fleet version {s.version}; {self.last_error})"
            )
        if s.versions_behind and s.seconds_behind >= grace:
            out.append(
                f"{s.versions_behind} fleet versions behind the feed's {s.head} "
                f"for {s.seconds_behind:.0f} s (enforcing {s.version})"
            )
        return out

    def families(self) -> Iterator[Any]:
        """Prometheus families for the admin listener's /metrics."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.status()
        yield GaugeMetricFamily(
            "edgeproxy_fleet_connected",
            "1 while the fleet feed (Redis) answers",
            value=int(s.connected),
        )
        yield GaugeMetricFamily(
            "edgeproxy_fleet_version", "Fleet version this node enforces", value=s.version
        )
        yield GaugeMetricFamily(
            "edgeproxy_fleet_head_version",
            "Newest version the feed held when last read",
            value=s.head,
        )
        yield GaugeMetricFamily(
            "edgeproxy_fleet_versions_behind",
            "Feed versions not yet enforced",
            value=s.versions_behind,
        )
        yield GaugeMetricFamily(
            "edgeproxy_fleet_seconds_behind",
            "Seconds since this node last knew it enforced the feed's newest version",
            value=s.seconds_behind,
        )
        for name, doc, value in (
            (
                "edgeproxy_fleet_refused",
                "Feed entries refused (unsigned, forged, out of order)",
                self.refused,
            ),
            (
                "edgeproxy_fleet_reconnects",
                "Sessions with the feed lost and retried",
                self.reconnects,
            ),
            (
                "edgeproxy_fleet_rebootstraps",
                "Bootstraps from the full version past a gap",
                self.rebootstraps,
            ),
            ("edgeproxy_fleet_applied", "Versions applied from the feed", self.applied),
        ):
            yield CounterMetricFamily(name, doc, value=value)
