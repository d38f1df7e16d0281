"""The one cache facade of a worker: the memory tier in front, then the node tier (shared by
the node's workers, persistent), then the optional shared tier (Redis, Memcached).

Callers never ask which tiers exist. Lookups read memory, then the node tier, synchronously
(the hit path: a node-tier read is a few microseconds of memory-mapped LMDB); a node-tier hit
is finished for this worker (`finish`: site, parsed Cache-Control, match keys) and answers with
`detail=node`. It is adopted into memory only when read again within about one memory tier's
worth of node-tier reads, a large one more often (`proxy.cache.admission`: 1 + size / 32 KiB
reads); an entry not adopted is not `alive`, so the memo never keeps it and no purge has to
find it. The memo keeps a `NodeRef` instead and answers the next request for it through
`get_hot`: a read of the node tier by item key, proven as every read is the first time and then
checked to be the same record by its seal (`NodeTier.get_hot`), nothing parsed or finished (the
memo's own fast path). The shared tier is read asynchronously (`get_behind`, None when there is
none). Stores, removals and purges reach every tier. The shared tier learns of a purge by
primary key, and of a host or prefix purge through its host index (Redis: what any node stored;
Memcached has none, so there only the keys this worker holds); the node tier purges by its own
indexes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import replace

from proxy.blocklist.keys import MatchKeys
from proxy.cache.admission import ADOPT_BYTES_PER_READ, Doorkeeper
from proxy.cache.entry import Entry, PrimaryKey, VariantKey
from proxy.cache.memory import ItemKey, MemoryTier, TierStats
from proxy.cache.node import NodeTier, Proven, item_key
from proxy.cache.shared import SharedTier, VariantOf
from proxy.rfc.target import Target

NODE_DETAIL = b"; detail=node"

Finish = Callable[[Entry], Entry | None]  # None: this worker cannot serve it (no such site)


class NodeRef:
    """What the memo keeps of a node-tier answer memory did not adopt: no body, no headers.
    The worker's proof of the record, if any, is the node tier's (`NodeTier.get_hot`, bounded
    by `cache.node_proof_cache_bytes`); the reference reaches it weakly, so a hit finds it
    without a lookup among every proof (a dict of up to ~28,000 records whose probe missed
    the CPU caches: `_Py_dict_lookup` was 4% of a node-tier round's samples against 0.3% of
    an L1 round's, perf), and a proof the node tier let go is freed as if none held it."""

    __slots__ = ("ikey", "target", "site_index", "proof")

    def __init__(self, ikey: bytes, target: Target, site_index: int) -> None:
        self.ikey = ikey  # the node tier's item key (no Vary)
        self.target = target  # canonical, as admit parsed it
        self.site_index = site_index
        self.proof: weakref.ref[Proven] | None = None


class TieredCache:
    def __init__(
        self,
        memory: MemoryTier,
        shared: SharedTier | None = None,
        node: NodeTier | None = None,
        finish: Finish | None = None,
        adopt_bytes_per_read: int = ADOPT_BYTES_PER_READ,
    ) -> None:
        self.memory = memory
        self.shared = shared
        self.node: NodeTier | None = None
        self._finish: Finish = lambda e: e
        self._node_vary: tuple[PrimaryKey, tuple[str, ...] | None] | None = None
        self.doorkeeper = Doorkeeper(memory.max_bytes, adopt_bytes_per_read)
        if node is not None:
            self.attach_node(node, finish or self._finish)

    def attach_node(self, node: NodeTier, finish: Finish) -> None:
        """Put the node tier behind memory (`build_worker`, once the worker's parts exist)."""
        self.node = node
        self._finish = finish

    # -- lookup -------------------------------------------------------------------------------

    def vary_fields(self, primary: PrimaryKey) -> tuple[str, ...] | None:
        """Field names the stored responses for `primary` vary on; None when none is held."""
        fields = self.memory.vary_fields(primary)
        if fields is None and self.node is not None:
            fields = self.node.vary_fields(primary)
            self._node_vary = (primary, fields)  # `get` follows for the same primary
        return fields

    def get(self, key: ItemKey, target: Target | None = None) -> Entry | None:
        """The entry stored for `key`, memory first. `target`: the canonical target of the
        key's primary when the caller holds it (lookup: admit parsed it), so a node-tier read
        does not parse it again."""
        primary, variant = key
        entry = self.memory.get(primary, variant)
        if entry is not None:
            if entry.tier_detail:
                entry.tier_detail = b""  # answered from memory from now on
            return entry
        node = self.node
        if node is None:
            return None
        fields = self.memory.vary_fields(primary)
        if fields is None:
            last = self._node_vary
            fields = last[1] if last is not None and last[0] == primary else None
            if fields is None:
                fields = node.vary_fields(primary)
                if fields is None:
                    return None
        found = node.get(primary, variant, fields, target)
        if found is None:
            return None
        return self._from_node(key, found, self.doorkeeper.seen_again(key, found.size))

    def _from_node(self, key: ItemKey, found: Entry, adopt: bool) -> Entry | None:
        """Finish a node-tier read for this worker; into memory when `adopt` and it fits,
        else not `alive` (the memo must not keep it, purges of memory would not find it)."""
        entry = self._finish(found)
        if entry is None:
            return None
        entry.tier_detail = NODE_DETAIL
        if not (adopt and self.memory.put(entry)):
            entry.alive = False
        return entry

    def node_ref(self, entry: Entry) -> NodeRef | None:
        """What the memo may keep of an answer the node tier gave that memory did not adopt
        (None for anything else: the memo keeps live memory entries themselves)."""
        if self.node is None or entry.alive or entry.vary_fields or not entry.tier_detail:
            return None
        return NodeRef(item_key(entry.primary, (), ()), entry.target, entry.site_index)

    def get_hot(self, ref: NodeRef) -> Entry | None:
        """The memo's node-tier hit: the item `ref` names, read and proven as every read is
        on this worker's first hit, and on later ones only checked to be the record proven
        then (`NodeTier.get_hot`); None when the node tier no longer holds it. Not finished:
        no parsed Cache-Control or match keys, so only a plain fresh hit may be answered
        from it (`lookup.fresh_plain`). Read again within the doorkeeper's window it is
        adopted as `get` adopts (a copy: the proven entry stays the node tier's), finished
        and `alive`, and the memo keeps that entry from then on (one memory cannot hold is
        answered from the proof still). The entry returned holds this read's body only
        until the next hot hit."""
        node = self.node
        if node is None:
            return None
        held = ref.proof
        proof = held() if held is not None else None
        p = node.get_hot(ref.ikey, ref.target, proof)
        if p is None:
            return None
        if p is not proof:
            ref.proof = weakref.ref(p)
        found = p.entry
        found.site_index = ref.site_index
        found.tier_detail = NODE_DETAIL
        found.alive = False
        key = (found.primary, found.variant)
        if self.doorkeeper.seen_again(key, found.size):
            adopted = self._from_node(key, replace(found, alive=True), True)
            if adopted is None or adopted.alive:
                node.forget_proof(ref.ikey)  # the memo keeps the adopted entry from now on
                return adopted
        return found

    async def get_behind(self, primary: PrimaryKey, variant_of: VariantOf) -> Entry | None:
        """The tier behind memory (one lookup, bounded by its timeout); None without one."""
        if self.shared is None:
            return None
        return await self.shared.get(primary, variant_of)

    def touch(self, entry: Entry) -> None:
        self.memory.touch(entry)
        if self.node is not None:
            self.node.touch(entry)

    @property
    def max_object_bytes(self) -> int:
        return min(self.memory.max_object_bytes, self.memory.max_bytes)

    # -- store --------------------------------------------------------------------------------

    def put(self, entry: Entry) -> bool:
        """Store in every tier; False when the entry fits none (too large)."""
        stored = self.memory.put(entry)
        if self.node is not None:
            stored = self.node.put(entry) or stored
        if stored and self.shared is not None:
            self.shared.put(entry)
        return stored

    def adopt(self, entry: Entry) -> bool:
        """An entry read from the shared tier: into memory, and into the node tier so the
        node's other workers find it without asking the shared tier again."""
        stored = self.memory.put(entry)
        if self.node is not None:
            stored = self.node.put(entry) or stored
        return stored

    # -- remove and purge ---------------------------------------------------------------------

    def forget_behind(self, primary: PrimaryKey) -> None:
        if self.shared is not None:
            self.shared.delete_soon(primary)

    def remove(self, entry: Entry) -> int:
        self.forget_behind(entry.primary)
        n = self.memory.remove(entry)
        if self.node is not None:
            n = max(n, self.node.remove(entry))
        return n

    def purge_primary(self, primary: PrimaryKey) -> int:
        self.forget_behind(primary)
        n = self.memory.purge_primary(primary)
        if self.node is not None:
            n = max(n, self.node.purge_primary(primary))
        return n

    def purge_digest(self, digest: bytes) -> int:
        """By body digest (the shared tier refuses and deletes a listed digest on lookup)."""
        n = self.memory.purge_digest(digest)
        if self.node is not None:
            n = max(n, self.node.purge_digest(digest))
        return n

    def purge_where(self, hosts: list[str] | None, pred: Callable[[Entry], bool]) -> int:
        """Memory entries `pred` selects (and their shared-tier keys). The node tier is not
        walked by predicate: its purges go by index (`purge_host`, `purge_prefix`, …)."""

        def purge(e: Entry) -> bool:
            if pred(e):
                self.forget_behind(e.primary)
                return True
            return False

        return self.memory.purge_where(hosts, purge)

    def purge_host(self, host: str) -> int:
        if self.shared is not None:
            self.shared.purge_soon(host)
        n = self.purge_where([host], lambda e: True)
        if self.node is not None:
            n = max(n, self.node.purge_host(host))
        return n

    def purge_prefix(self, host: str, path: str) -> int:
        if self.shared is not None:
            self.shared.purge_soon(host, path)
        under = path.rstrip("/") + "/"
        n = self.purge_where(
            [host], lambda e: e.target.path == path or e.target.path.startswith(under)
        )
        if self.node is not None:
            n = max(n, self.node.purge_prefix(host, path))
        return n

    def purge_url_key_behind(self, url_key: str, listed: Callable[[MatchKeys], bool]) -> int:
        """Blocklist url entries in the tiers behind memory (memory: `with_url_key`)."""
        return 0 if self.node is None else self.node.purge_url_key(url_key, listed)

    async def purge_listed_behind(
        self, listed: Callable[[MatchKeys, bytes], bool], slice_s: float
    ) -> int:
        """Every object behind memory that a blocklist version lists (memory: `entries`), the
        loop given back every `slice_s`."""
        return 0 if self.node is None else await self.node.purge_listed(listed, slice_s=slice_s)

    def purge_host_key(self, host_key: str) -> int:
        """A new blocklist host entry: objects of that host key or its subdomains, by index
        in every tier (issue 19: no walk of the cache)."""
        behind = self.node.purge_host_key if self.node is not None else None
        return self._purge_found(self.memory.under_host_key(host_key), behind, host_key)

    def purge_prefix_key(self, prefix_key: str) -> int:
        """A new blocklist prefix entry: objects under it, by index in every tier."""
        behind = self.node.purge_prefix_key if self.node is not None else None
        return self._purge_found(self.memory.under_prefix_key(prefix_key), behind, prefix_key)

    def _purge_found(
        self, found: list[Entry], behind: Callable[[str], int] | None, key: str
    ) -> int:
        for e in found:
            self.forget_behind(e.primary)
        n = self.memory.purge_entries(found)
        return max(n, behind(key)) if behind is not None else n

    def with_url_key(self, url_key: str) -> list[Entry]:
        return self.memory.with_url_key(url_key)

    def entries(self) -> list[Entry]:
        return self.memory.entries()

    def stats(self) -> TierStats:
        return self.memory.stats()

    def node_usage(self) -> tuple[int, int, int]:
        """The node tier's (objects, bytes, max bytes); zeros without one."""
        if self.node is None:
            return 0, 0, 0
        objects, nbytes = self.node.usage()
        return objects, nbytes, self.node.max_bytes

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()

    async def flush(self) -> bool:
        """Write what is queued for the tiers behind (tests and shutdown)."""
        if self.node is not None:
            self.node.flush()
        return True if self.shared is None else await self.shared.flush()

    async def close(self) -> None:
        if self.node is not None:
            self.node.close()
        if self.shared is not None:
            await self.shared.close()


__all__ = ["ItemKey", "TieredCache", "VariantKey"]
