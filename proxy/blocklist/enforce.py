"""A worker's enforcement of the blocklist: the current snapshot, swapped in one assignment, and
the purges that follow a new version.

Enforcement starts at the swap: every later request, and every reuse of a stored body, checks
the new snapshot. Purging stored objects the version lists follows in steps that yield to the
loop, so a large cache never stalls serving; until an object is purged, the digest check at
every reuse keeps it from being delivered. Entries from the node tier come through the same
lookup, so the same check applies to them; its purges walk its own indexes
(`purge_url_key_behind`, `purge_listed_behind`), never its records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from proxy.blocklist.digest import UNJUDGED_DIGEST
from proxy.blocklist.keys import MatchKeys, match_keys
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType, compile_entry
from proxy.blocklist.snapshot import EMPTY_SNAPSHOT, Snapshot
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.metrics import WorkerStats

# `blocklist.purge_slice_s`'s default: a version's purge of stored objects gives the loop back
# after this long (a step of 2,000 objects, each its match keys and a check, took 10-20 ms)
PURGE_SLICE_S = 0.002
# objects between two looks at the clock (a look costs about what a check does)
_CLOCK_EVERY = 32


class Enforcer:
    def __init__(
        self,
        cache: TieredCache,
        stats: WorkerStats,
        on_swap: Callable[[], None] = lambda: None,
        purge_slice_s: float = PURGE_SLICE_S,
    ) -> None:
        self.cache = cache
        self.stats = stats
        self.purge_slice_s = purge_slice_s
        self.snapshot: Snapshot = EMPTY_SNAPSHOT
        self._on_swap = on_swap  # memos of earlier decisions are forgotten at every swap
        # The snapshot lists body digests: a body whose identity is unknown can no longer be
        # shown not to be listed, so none is stored or reused (`unservable`).
        self.digests_listed = False

    def apply(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.digests_listed = snapshot.counts[EntryType.SHA256] > 0
        if self.digests_listed:
            # Bodies stored unjudged while no digest was listed leave every tier in the same
            # step as the swap (by the digest index): no request sees them under this list.
            purged = self.cache.purge_digest(UNJUDGED_DIGEST)
            self.stats.purged_by_blocklist += purged
        self._on_swap()

    # -- checks at reuse ----------------------------------------------------------------------

    def listed_digest(self, digest: bytes) -> BlockEntry | None:
        return self.snapshot.check_digest(digest)

    def unservable(self, entry: Entry) -> bool:
        """A body stored unjudged (unknown coding, no digest listed then) while digests are
        listed now: it is dropped from every tier and must not be delivered; a new fetch
        refuses it (502) as the coding is still unknown. For the window between a swap and a
        purge, and for entries an in-flight fetch brought back."""
        if self.digests_listed and entry.sha256 == UNJUDGED_DIGEST:
            self.stats.purged_by_blocklist += self.cache.remove(entry)
            return True
        return False

    def refuse_stored(self, entry: Entry) -> BlockEntry | None:
        """Every reuse of a stored body is checked against the current digests; a listed one
        leaves every tier at once."""
        hit = self.snapshot.check_digest(entry.sha256)
        if hit is not None:
            self.cache.remove(entry)
            self.stats.purged_by_blocklist += 1
        return hit

    # -- purges after a new version -----------------------------------------------------------

    async def purge_listed(self, snapshot: Snapshot) -> int:
        """Drop every stored object the snapshot lists (by URL, prefix, host or digest),
        stale copies included, in slices of `purge_slice_s` with the loop given back between
        them: a large cache never holds serving up longer than one slice (the digest check at
        every reuse keeps an object not yet purged from being delivered meanwhile)."""
        purged = 0
        slice_s = self.purge_slice_s
        clock = time.perf_counter
        until = clock() + slice_s
        for n, e in enumerate(self.cache.entries(), 1):
            k = e.keys
            if k is None:
                t = e.target
                k = e.keys = match_keys(t.host, t.path, t.query)
            if snapshot.check_keys(k) or snapshot.check_digest(e.sha256):
                purged += self.cache.remove(e)
            if n % _CLOCK_EVERY == 0 and clock() > until:
                await asyncio.sleep(0)
                until = clock() + slice_s

        def listed(k: MatchKeys, digest: bytes) -> bool:
            return bool(snapshot.check_keys(k) or snapshot.check_digest(digest))

        purged += await self.cache.purge_listed_behind(listed, slice_s)
        self.stats.purged_by_blocklist += purged
        return purged

    async def purge_added(self, adds: list[BlockEntry], snapshot: Snapshot) -> int:
        """Purge what newly added entries list, each by an index of every tier: url entries
        by their match key, digests by digest, hosts by host key (and parent domains),
        prefixes by the ordered url keys. None walks the cache (issue 19: host and prefix
        entries did), so a push costs what it purges."""
        purged = 0
        for added in adds:
            etype, key, _query = compile_entry(added)
            if etype is EntryType.SHA256:
                assert isinstance(key, bytes)
                purged += self.cache.purge_digest(key)
            elif etype is EntryType.URL:
                assert isinstance(key, str)
                for e in self.cache.with_url_key(key):
                    if e.keys is not None and snapshot.check_keys(e.keys) is not None:
                        purged += self.cache.remove(e)
                purged += self.cache.purge_url_key_behind(
                    key, lambda k: snapshot.check_keys(k) is not None
                )
            elif etype is EntryType.HOST:
                assert isinstance(key, str)
                purged += self.cache.purge_host_key(key)
            else:
                assert isinstance(key, str)
                purged += self.cache.purge_prefix_key(key)
            await asyncio.sleep(0)  # a push of many entries yields between them
        self.stats.purged_by_blocklist += purged
        return purged
