"""The byte-bounded memory tier: LRU over entries sized in bytes, with indexes by
primary key, host, body digest and the blocklist's keys (url key, host key and its parent
domains, url keys in order for prefixes) so purges (operator or blocklist) never scan the
whole cache. Each index costs O(1) per store, lookup and removal however many entries share an
index key (`proxy.cache.index`, issue 19), so a purge costs what it purges. The one exception
is the ordered set of the url keys' directories (a prefix purge's range), O(log n) comparisons
per new directory (sortedcontainers), never a scan.

Fewer indexes than index keys (issue 18: the side indexes were a third of a cold miss's store).
A primary key's items are filed by primary only when they carry Vary values: an item without
is the one item key `(primary, ())`, looked up directly. Items are not filed by blocklist host
key: a host key is a function of the target's host (`match_keys`), so the host keys map to the
hosts stored under them (one entry per new host, not per item) and the items come from the
host index. The ordered index holds directories, not url keys: a new url key in a known
directory is one dict insert (`_by_dir`) where it was a SortedList insertion (~0.6 µs of Python
a store in timeit, more among a miss's other work), for about 40 bytes more per url key.

Vary: a primary key maps to the field names its latest response varied on; each variant is its
own LRU item keyed by (primary, normalised values).

The LRU itself is one OrderedDict (oldest first) and a dict of the sizes stored: a store, an
eviction and a hit's touch are a few dict operations in C. cachetools' LRUCache, used before,
spent about 2 µs of Python per store in its layers of `__setitem__` (three containers, a
method call per step) and a Python `__getitem__` per touch (issue 18).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sortedcontainers import SortedList

from proxy.blocklist.keys import MatchKeys, match_keys
from proxy.cache.entry import Entry, PrimaryKey, VariantKey
from proxy.cache.index import KeyIndex

ItemKey = tuple[PrimaryKey, VariantKey]


@dataclass(slots=True)
class TierStats:
    objects: int
    bytes: int
    max_bytes: int
    evictions: int
    purged: int


class _IndexedLRU:
    """Item key -> entry, bounded by the entries' sizes in bytes, least recently used first out;
    every deletion (eviction, purge, replacement) is told to `on_delete`, so the side indexes
    stay true."""

    __slots__ = ("maxsize", "currsize", "_items", "_sizes", "_on_delete")

    def __init__(self, maxsize: int, on_delete: Callable[[ItemKey, Entry], None]) -> None:
        self.maxsize = maxsize
        self.currsize = 0
        self._items: OrderedDict[ItemKey, Entry] = OrderedDict()
        # The size each entry was admitted with: what its removal gives back, whatever
        # happens to the entry's `size` later.
        self._sizes: dict[ItemKey, int] = {}
        self._on_delete = on_delete

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: ItemKey) -> Entry | None:
        """The entry, now the most recently used; None when absent."""
        entry = self._items.get(key)
        if entry is not None:
            self._items.move_to_end(key)
        return entry

    def peek(self, key: ItemKey) -> Entry:
        """The entry, its place in the LRU order unchanged (purges and listings are no use)."""
        return self._items[key]

    def touch(self, key: ItemKey) -> None:
        try:
            self._items.move_to_end(key)
        except KeyError:
            pass

    def add(self, key: ItemKey, entry: Entry, size: int) -> None:
        """Admit `entry` (absent, and `size` at most `maxsize`: the tier checks both first),
        evicting the least recently used until it fits."""
        items = self._items
        sizes = self._sizes
        limit = self.maxsize - size
        while self.currsize > limit:
            old_key, old = items.popitem(last=False)
            self.currsize -= sizes.pop(old_key)
            self._on_delete(old_key, old)
        items[key] = entry
        sizes[key] = size
        self.currsize += size

    def delete(self, key: ItemKey) -> None:
        entry = self._items.pop(key)
        self.currsize -= self._sizes.pop(key)
        self._on_delete(key, entry)

    def keys(self) -> list[ItemKey]:
        return list(self._items)

    def items(self) -> list[tuple[ItemKey, Entry]]:
        return list(self._items.items())


def _dir_of(url_key: str) -> str:
    """A url key's directory: up to its last "/" ("host/a/b" -> "host/a", "host/a" -> "host")."""
    return url_key[: url_key.rfind("/")]


def _keys_of(entry: Entry) -> MatchKeys:
    """The entry's blocklist match keys: computed at store for responses fetched here, once
    on adoption for those read from the tiers behind (their records do not carry them)."""
    k = entry.keys
    if k is None:
        t = entry.target
        k = entry.keys = match_keys(t.host, t.path, t.query)
    return k


class MemoryTier:
    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes = max(1, max_bytes)
        self.max_object_bytes = max_object_bytes
        self._lru = _IndexedLRU(self.max_bytes, self._forget)
        self._vary: dict[PrimaryKey, tuple[str, ...]] = {}
        # Items with Vary values by primary key; the one item of a primary without Vary is
        # `(primary, ())` (`_primary_items`).
        self._by_primary: KeyIndex[PrimaryKey, ItemKey] = KeyIndex()
        self._by_host: KeyIndex[str, ItemKey] = KeyIndex()
        self._by_digest: KeyIndex[bytes, ItemKey] = KeyIndex()
        # By blocklist url key (entry.keys): a pushed url entry purges without a scan.
        self._by_url_key: KeyIndex[str, ItemKey] = KeyIndex()
        # A pushed host or prefix entry, likewise (issue 19: they scanned every entry): the
        # hosts stored under each blocklist host key (their items: `_by_host`), the host keys
        # stored under each parent domain, the url keys in each directory (`_dir_of`), and
        # the directories in order (a prefix's matches are the url keys of one range of them).
        self._hosts_of_key: KeyIndex[str, tuple[str]] = KeyIndex()
        self._host_keys_under: KeyIndex[str, tuple[str]] = KeyIndex()
        self._by_dir: KeyIndex[str, str] = KeyIndex()
        self._dirs: SortedList = SortedList()
        self._purging = False
        self.evictions = 0
        self.purged = 0

    # -- lookup -------------------------------------------------------------------------------

    def vary_fields(self, primary: PrimaryKey) -> tuple[str, ...] | None:
        """Field names the stored responses for `primary` vary on; None when nothing stored."""
        return self._vary.get(primary)

    def get(self, primary: PrimaryKey, variant: VariantKey) -> Entry | None:
        return self._lru.get((primary, variant))

    # -- store --------------------------------------------------------------------------------

    def fits(self, size: int) -> bool:
        return size <= self.max_object_bytes and size <= self.max_bytes

    def put(self, entry: Entry) -> bool:
        """Admit an entry; False when it is too large for this tier."""
        if not self.fits(entry.size):
            return False
        primary = entry.primary
        old_fields = self._vary.get(primary)
        if old_fields is not None and old_fields != entry.vary_fields:
            # The resource's Vary changed: older variants were keyed on other fields.
            self.purge_primary(primary)
        key = (primary, entry.variant)
        lru = self._lru
        if key in lru._items:
            self._purging = True
            try:
                lru.delete(key)
            finally:
                self._purging = False
        lru.add(key, entry, entry.size)
        self._vary[primary] = entry.vary_fields
        if entry.variant:
            self._by_primary.add(primary, key)
        self._by_digest.add(entry.sha256, key)
        k = entry.keys
        if k is None:
            k = _keys_of(entry)
        url = k.url_key
        if self._by_url_key.add(url, key):  # a new url key
            d = url[: url.rfind("/")]  # _dir_of
            if self._by_dir.add(d, url):  # a new directory
                self._dirs.add(d)
        host = entry.target.host
        if self._by_host.add(host, key):  # a new host: filed under its host key
            self._index_host(k, host)
        return True

    def _index_host(self, k: MatchKeys, host: str) -> None:
        if self._hosts_of_key.add(k.host, (host,)):  # a new host key
            for suffix in k.host_suffixes:
                self._host_keys_under.add(suffix, (k.host,))

    def _unindex_host(self, k: MatchKeys, host: str) -> None:
        self._hosts_of_key.discard(k.host, (host,))
        if k.host not in self._hosts_of_key:
            for suffix in k.host_suffixes:
                self._host_keys_under.discard(suffix, (k.host,))

    def _primary_items(self, primary: PrimaryKey) -> list[ItemKey]:
        """The item keys stored under `primary`: those filed by primary, and its item without
        Vary values (a resource has one or the other: a change of Vary purges the others)."""
        items = self._by_primary.members(primary)
        plain: ItemKey = (primary, ())
        if plain in self._lru:
            items.append(plain)
        return items

    def touch(self, entry: Entry) -> None:
        """Mark a hit for LRU order (the hot path finds entries without `get`)."""
        self._lru.touch((entry.primary, entry.variant))

    def _forget(self, key: ItemKey, entry: Entry) -> None:
        entry.alive = False
        if not self._purging:
            self.evictions += 1
        primary, variant = key
        if variant:
            self._by_primary.discard(primary, key)
        self._by_digest.discard(entry.sha256, key)
        k = _keys_of(entry)
        url = k.url_key
        self._by_url_key.discard(url, key)
        if url not in self._by_url_key:
            d = _dir_of(url)
            self._by_dir.discard(d, url)
            if d not in self._by_dir:
                self._dirs.discard(d)
        host = entry.target.host
        self._by_host.discard(host, key)
        if host not in self._by_host:
            self._unindex_host(k, host)
        if primary not in self._by_primary and (primary, ()) not in self._lru._items:
            self._vary.pop(primary, None)

    # -- purge --------------------------------------------------------------------------------

    def _purge_keys(self, keys: Iterable[ItemKey]) -> int:
        """Purge `keys`: a copy, never a live index (each deletion updates the indexes)."""
        n = 0
        lru = self._lru
        self._purging = True
        try:
            for key in keys:
                if key in lru:
                    lru.delete(key)
                    n += 1
        finally:
            self._purging = False
        self.purged += n
        return n

    def remove(self, entry: Entry) -> int:
        return self._purge_keys([(entry.primary, entry.variant)])

    def purge_entries(self, entries: Iterable[Entry]) -> int:
        return self._purge_keys([(e.primary, e.variant) for e in entries])

    def purge_primary(self, primary: PrimaryKey) -> int:
        return self._purge_keys(self._primary_items(primary))

    def purge_host(self, host: str) -> int:
        return self._purge_keys(self._by_host.members(host))

    def with_url_key(self, url_key: str) -> list[Entry]:
        """Stored entries whose target has this blocklist url key (any query)."""
        lru = self._lru
        return [lru.peek(k) for k in self._by_url_key.members(url_key) if k in lru]

    def under_host_key(self, host_key: str) -> list[Entry]:
        """Stored entries whose blocklist host key is `host_key` or one of its subdomains
        (what a host entry lists)."""
        return self._entries_at(
            [
                k
                for (key,) in self._host_keys_under.members(host_key)
                for k in self._of_host_key(key)
            ]
        )

    def _of_host_key(self, host_key: str) -> list[ItemKey]:
        """The item keys whose blocklist host key is `host_key`."""
        return [
            k
            for (host,) in self._hosts_of_key.members(host_key)
            for k in self._by_host.members(host)
        ]

    def under_prefix_key(self, prefix_key: str) -> list[Entry]:
        """Stored entries a prefix entry with this key lists: "host/" all of that host key,
        "host/a" the url key itself and every one below "host/a/" (a range of the ordered
        url keys: "0" follows "/")."""
        host, _, path = prefix_key.partition("/")
        if not path:
            return self._entries_at(self._of_host_key(host))
        # A url key is below "host/a/" exactly when its directory is "host/a" or below it.
        dirs = [prefix_key, *self._dirs.irange(prefix_key + "/", prefix_key + "0", (True, False))]
        url_keys = [prefix_key, *(u for d in dirs for u in self._by_dir.members(d))]
        return self._entries_at([k for u in url_keys for k in self._by_url_key.members(u)])

    def _entries_at(self, keys: list[ItemKey]) -> list[Entry]:
        lru = self._lru
        return [lru.peek(k) for k in keys if k in lru]

    def purge_digest(self, digest: bytes) -> int:
        return self._purge_keys(self._by_digest.members(digest))

    def purge_where(self, hosts: Iterable[str] | None, pred: Callable[[Entry], bool]) -> int:
        """Purge entries (of `hosts`, or all) for which `pred` holds."""
        if hosts is None:
            candidates = list(self._lru.items())
        else:
            candidates = []
            for host in hosts:
                for key in self._by_host.members(host):
                    candidates.append((key, self._lru.peek(key)))
        return self._purge_keys(k for k, e in candidates if pred(e))

    def hosts(self) -> list[str]:
        return list(self._by_host)

    def digests(self) -> set[bytes]:
        return set(self._by_digest)

    def index_sizes(self) -> dict[str, tuple[int, int]]:
        """Per side index: (index keys, item keys filed). What tests check the indexes by; the
        second number costs a walk of the index keys."""
        sizes = {
            name: (len(index), index.count())
            for name, index in (
                ("primary", self._by_primary),
                ("host", self._by_host),
                ("digest", self._by_digest),
                ("url_key", self._by_url_key),
                ("hosts_of_key", self._hosts_of_key),
                ("host_keys_under", self._host_keys_under),
            )
        }
        sizes["url_key_dirs"] = (len(self._by_dir), self._by_dir.count())
        sizes["dirs_ordered"] = (len(self._dirs), len(self._dirs))
        sizes["vary"] = (len(self._vary), len(self._vary))
        return sizes

    def entries(self) -> list[Entry]:
        return [entry for _, entry in self._lru.items()]

    def stats(self) -> TierStats:
        return TierStats(
            objects=len(self._lru),
            bytes=int(self._lru.currsize),
            max_bytes=self.max_bytes,
            evictions=self.evictions,
            purged=self.purged,
        )
