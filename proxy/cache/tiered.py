"""The one cache facade of a worker: the memory tier in front, the optional shared tier behind.

Callers never ask which tiers exist. Lookups read memory synchronously (the hit path) and the
tier behind asynchronously (`get_behind`, which answers None when there is none); stores,
removals and purges reach every tier. The shared tier learns of a purge by primary key: a
prefix or host purge deletes the keys this worker holds, the rest expire on their TTL.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.cache.entry import Entry, PrimaryKey, VariantKey
from proxy.cache.memory import ItemKey, MemoryTier, TierStats
from proxy.cache.shared import SharedTier, VariantOf


class TieredCache:
    def __init__(self, memory: MemoryTier, shared: SharedTier | None = None) -> None:
        self.memory = memory
        self.shared = shared

    # -- lookup -------------------------------------------------------------------------------

    def vary_fields(self, primary: PrimaryKey) -> tuple[str, ...] | None:
        """Field names the stored responses for `primary` vary on; None when none is held."""
        return self.memory.vary_fields(primary)

    def get(self, key: ItemKey) -> Entry | None:
        return self.memory.get(key[0], key[1])

    async def get_behind(self, primary: PrimaryKey, variant_of: VariantOf) -> Entry | None:
        """The tier behind memory (one lookup, bounded by its timeout); None without one."""
        if self.shared is None:
            return None
        return await self.shared.get(primary, variant_of)

    def touch(self, entry: Entry) -> None:
        self.memory.touch(entry)

    @property
    def max_object_bytes(self) -> int:
        return min(self.memory.max_object_bytes, self.memory.max_bytes)

    # -- store --------------------------------------------------------------------------------

    def put(self, entry: Entry) -> bool:
        """Store in every tier; False when the entry fits none (too large)."""
        stored = self.memory.put(entry)
        if stored and self.shared is not None:
            self.shared.put(entry)
        return stored

    def adopt(self, entry: Entry) -> bool:
        """An entry read from the tier behind: into memory only (it is already behind)."""
        return self.memory.put(entry)

    # -- remove and purge ---------------------------------------------------------------------

    def forget_behind(self, primary: PrimaryKey) -> None:
        if self.shared is not None:
            self.shared.delete_soon(primary)

    def remove(self, entry: Entry) -> int:
        self.forget_behind(entry.primary)
        return self.memory.remove(entry)

    def purge_primary(self, primary: PrimaryKey) -> int:
        self.forget_behind(primary)
        return self.memory.purge_primary(primary)

    def purge_digest(self, digest: bytes) -> int:
        """By body digest (the tier behind refuses and deletes a listed digest on lookup)."""
        return self.memory.purge_digest(digest)

    def purge_where(self, hosts: list[str] | None, pred: Callable[[Entry], bool]) -> int:
        def purge(e: Entry) -> bool:
            if pred(e):
                self.forget_behind(e.primary)
                return True
            return False

        return self.memory.purge_where(hosts, purge)

    def purge_host(self, host: str) -> int:
        return self.purge_where([host], lambda e: True)

    def purge_prefix(self, host: str, path: str) -> int:
        under = path.rstrip("/") + "/"
        return self.purge_where(
            [host], lambda e: e.target.path == path or e.target.path.startswith(under)
        )

    def with_url_key(self, url_key: str) -> list[Entry]:
        return self.memory.with_url_key(url_key)

    def entries(self) -> list[Entry]:
        return self.memory.entries()

    def stats(self) -> TierStats:
        return self.memory.stats()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()

    async def flush(self) -> bool:
        """Wait for queued writes to the tier behind (tests and shutdown)."""
        return True if self.shared is None else await self.shared.flush()

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()


__all__ = ["ItemKey", "TieredCache", "VariantKey"]
