"""The takedown service's side of the fleet: publishing its versions to the feed, and reading
every node's acknowledgement as the proof of enforcement.

The service already writes each publication as the next signed version into its file drop
(`proxy/takedown/publisher.py`, `FileDrop`); the drop stays the durable record of versions.
`FleetFeed.sync()` mirrors the drop's newest chain into the stream (only what the feed's head
lacks; all of it from the full version when Redis came back empty), and a background loop
repeats that every `resync_interval_s` so an emptied Redis is re-seeded without waiting for the
next notice.

Each fleet node is one `FleetEdge` among the publisher's edges, so the existing machinery does
the rest: one delivery row per node and publication, retries with backoff, the first failure
and an overdue acknowledgement recorded on the case, and the case's timeline listing every node
with its enforced_at. `deliver` publishes (sync), then blocks on the ack stream until that node
acknowledges the publication's version (or a later one) and returns the node's enforced_at.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.blocklist import format as blformat
from proxy.config import FleetConfig
from proxy.fleet import feed
from proxy.fleet.feed import Keys

if TYPE_CHECKING:
    from proxy.takedown.publisher import Ack, FileDrop
    from proxy.takedown.store import Store

log = logging.getLogger("edgeproxy.fleet")


class FleetFeed:
    """One Redis client and the file drop it mirrors; shared by every FleetEdge."""

    def __init__(
        self,
        cfg: FleetConfig,
        drop: FileDrop,
        *,
        ack_wait_s: float = 8.0,
        resync_interval_s: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.drop = drop
        self.keys = Keys(cfg.key_prefix)
        self.ack_wait_s = ack_wait_s
        self.resync_interval_s = resync_interval_s
        self.redis: Any = feed.connect(cfg)
        self._lock = asyncio.Lock()
        # The drop's file state and the feed's head after the last sync.
        self._synced: tuple[blformat.DirectoryState, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.store: Store | None = None

    def edges(self, names: Sequence[str]) -> list[FleetEdge]:
        return [FleetEdge(n, self) for n in names]

    def bind(self, store: Store) -> None:
        """The service's store: a delivery's version is read from its publication row."""
        self.store = store

    async def sync(self) -> list[int]:
        """Publish what the drop has and the feed lacks; the sequences published. Every node's
        delivery calls this for the same publication, and the resync loop every few seconds:
        when neither the drop's files nor the feed's head changed since the last pass, there
        is nothing to do (a listing and one HMGET), and otherwise only the versions past the
        feed's head are read and verified, not the drop's whole chain."""
        async with self._lock:
            head, _ = await feed.read_head(self.redis, self.keys)
            state = await asyncio.to_thread(blformat.directory_state, self.drop.directory)
            if (state, head) == self._synced:
                return []
            chain = await asyncio.to_thread(
                feed.newest_chain, self.drop.directory, self.drop.public_key_pem, after=head
            )
            published = await feed.publish_chain(self.redis, self.keys, chain)
            self._synced = (state, max([head, *published]))
        if published:
            log.info("fleet feed: published versions %s", published)
        return published

    def start(self) -> None:
        self._task = asyncio.create_task(self._resync(), name="fleet-feed-resync")

    async def _resync(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as e:  # noqa: BLE001 - Redis away: the next pass retries
                log.warning("fleet feed: sync failed: %s", e)
            await asyncio.sleep(self.resync_interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.redis.aclose()

    async def version_for(self, node: str) -> int:
        """The file sequence of the publication this node's delivery worker is on: its oldest
        published, unacknowledged one (the publisher delivers strictly in that order)."""
        assert self.store is not None, "FleetFeed.bind(store) first"

        def read(conn: Any) -> int:
            row = conn.execute(
                "SELECT p.file_sequence FROM deliveries d JOIN publications p"
                " ON p.id = d.publication_id WHERE d.edge = ? AND d.enforced_at IS NULL"
                " AND p.published_at IS NOT NULL ORDER BY p.id LIMIT 1",
                (node,),
            ).fetchone()
            return int(row[0] or 0) if row is not None else 0

        return int(await self.store.run(read))


class FleetEdge:
    """A fleet node as the publisher's `Edge`: delivered once it acknowledges in Redis."""

    def __init__(self, name: str, fleet: FleetFeed) -> None:
        self.name = name
        self.fleet = fleet

    async def deliver(
        self, kind: str, entries: list[dict[str, str]], audit_head: dict[str, Any] | None = None
    ) -> Ack:
        from proxy.takedown.publisher import Ack, EdgeError

        f = self.fleet
        try:
            await f.sync()
            seq = await f.version_for(self.name)
            at = await feed.wait_enforced(
                f.redis, f.keys, self.name, seq, f.ack_wait_s, block_s=f.cfg.block_s
            )
        except Exception as e:  # noqa: BLE001 - Redis faults are the edge's failure to answer
            raise EdgeError(f"fleet feed: {type(e).__name__}: {e}") from e
        if at is None:
            raise EdgeError(f"node {self.name} has not acknowledged version {seq} yet")
        return Ack(seq, at)


@dataclass(frozen=True, slots=True)
class NodeReport:
    name: str
    version: int  # 0: never acknowledged
    enforced_at: float | None
    behind: int  # versions published that it has not acknowledged
    waiting_s: float  # since the oldest of those was published
    overdue: bool


async def fleet_report(
    cfg: FleetConfig, names: Sequence[str], deadline_s: float, now: float | None = None
) -> tuple[int, list[NodeReport]]:
    """The feed's head and every node's standing (the names given, and every node that ever
    acknowledged): a node is overdue when a version it lacks was published over `deadline_s`
    ago."""
    now = time.time() if now is None else now
    keys = Keys(cfg.key_prefix)
    r = feed.connect(cfg)
    try:
        head, _ = await feed.read_head(r, keys)
        states = await feed.node_states(r, keys)
        published = {int(k): float(v) for k, v in (await r.hgetall(keys.published)).items()}
    finally:
        await r.aclose()
    out = []
    for name in sorted(set(names) | set(states)):
        st = states.get(name, {})
        version = int(st.get("version", 0))
        lacking = [at for seq, at in published.items() if seq > version]
        waiting = max(0.0, now - min(lacking)) if lacking and head > version else 0.0
        out.append(
            NodeReport(
                name,
                version,
                st.get("enforced_at"),
                max(0, head - version),
                waiting,
                head > version and waiting > deadline_s,
            )
        )
    return head, out


def fleet_feed_for(cfg: FleetConfig, directory: str | Path, private_key_pem: bytes) -> FleetFeed:
    """A FleetFeed over a file drop made the way the takedown CLI makes one."""
    from proxy.takedown.publisher import FileDrop

    return FleetFeed(cfg, FileDrop(directory, private_key_pem))
