"""The compiled, immutable blocklist a worker enforces.

A version of the list compiles into a `Snapshot` aside from the one in use; the worker then
swaps one reference (`state.blocklist = new`), so no request ever sees half a list. Every lookup
is a handful of probes keyed by match keys, walking the *request's* host labels and path
segments, so its cost is bounded by the request and does not grow with the list.

`Snapshot` is what the request path sees; two implementations answer identically (a
differential test holds them to it): `DictSnapshot` here, Python dicts built in each process
(small lists, tests, and the in-memory overlay of the other), and
`proxy.blocklist.mapped.MappedSnapshot`, a file compiled once per version and mapped by every
worker (the node's default at any size).

Several entries may share one key (two notices for the same URL). The index keeps the first as
the one reported, and the others aside so that removing one id leaves the key blocked while any
entry for it remains.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from proxy.blocklist.keys import (
    MatchKeys,
    QueryPairs,
    exact_url_key,
    match_keys,
)
from proxy.blocklist.model import Entry, EntryType, InvalidEntry, compile_entry
from proxy.blocklist.querytrie import path_keys, walk
from proxy.blocklist.shards import SHARDS, ShardedDict, shard_index

# Url entries with a query, as a flattened trie (proxy.blocklist.querytrie): node key ->
# (entries filed strictly below the node, the entries whose query is exactly the node's).
_QueryNode = tuple[int, tuple[Entry, ...]]
_QueryIndex = ShardedDict[bytes, _QueryNode]
_NO_NODE: _QueryNode = (0, ())
_NEVER = float("inf")


class TargetLike(Protocol):
    """The part of `proxy.rfc.target.Target` the blocklist reads."""

    @property
    def host(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str | None: ...


class SnapshotBuilder:
    """Mutable indexes; `compile` and `with_changes` fill one and freeze it into a Snapshot.

    Also public for loading a large version in steps: a worker feeds entries the supervisor
    already compiled (`add_compiled`) a chunk at a time, yielding to its event loop between
    chunks, then freezes the result and swaps it in."""

    def __init__(self, base: DictSnapshot | None = None) -> None:
        # Sharded, copy-on-write tables (proxy.blocklist.shards): a builder based on a snapshot
        # shares its shards and copies only those a change touches.
        if base is None:
            self.by_id: ShardedDict[str, Entry] = ShardedDict()
            self.index: dict[EntryType, ShardedDict[Any, Entry]] = {
                t: ShardedDict() for t in EntryType
            }
            self.urlq: _QueryIndex = ShardedDict()
            self.extra: ShardedDict[tuple[EntryType, Any], tuple[Entry, ...]] = ShardedDict()
            self.counts: dict[EntryType, int] = dict.fromkeys(EntryType, 0)
            # id -> expires_at, and the earliest time in each shard: a change touches one
            # shard, never a list of every expiring entry (issue 19)
            self.expiring: ShardedDict[str, float] = ShardedDict()
            self.expiry_floor: list[float] = [_NEVER] * SHARDS
            self.prefix_depth = 0
        else:
            self.by_id = ShardedDict(base._by_id)
            self.index = {t: ShardedDict(d) for t, d in base._index.items()}
            self.urlq = ShardedDict(base._urlq)
            self.extra = ShardedDict(base._extra)
            self.counts = dict(base._counts)
            self.expiring = ShardedDict(base._expiring)
            self.expiry_floor = list(base._expiry_floor)
            self.prefix_depth = base._prefix_depth

    def add(self, entry: Entry, now: float) -> None:
        etype, key, query = compile_entry(entry)
        self.add_compiled(entry, etype, key, query, now)

    def add_compiled(
        self,
        entry: Entry,
        etype: EntryType,
        key: str | bytes,
        query: QueryPairs | None,
        now: float,
    ) -> None:
        """Add an entry whose match key `compile_entry` already computed (elsewhere)."""
        if entry.expires_at is not None:
            if entry.expires_at <= now:
                return
            self.expiring[entry.id] = entry.expires_at
            i = shard_index(entry.id)
            self.expiry_floor[i] = min(self.expiry_floor[i], entry.expires_at)
        self.by_id[entry.id] = entry
        self.counts[etype] += 1
        if query is not None:
            assert isinstance(key, str)
            self._file_query(key, query, entry)
            return
        if etype is EntryType.PREFIX:
            assert isinstance(key, str)
            # segments below the root: "host/" is 0, "host/a" is 1, "host/a/b" is 2
            depth = key.count("/") if not key.endswith("/") else 0
            self.prefix_depth = max(self.prefix_depth, depth)
        index = self.index[etype]
        if key in index:
            self.extra[(etype, key)] = self.extra.get((etype, key), ()) + (entry,)
        else:
            index[key] = entry

    def remove(self, entry_id: str) -> None:
        entry = self.by_id.pop(entry_id, None)
        if entry is None:
            return
        etype, key, query = compile_entry(entry)
        self.counts[etype] -= 1
        if entry.expires_at is not None:
            self._unexpire(entry_id)
        if query is not None:
            assert isinstance(key, str)
            self._unfile_query(key, query, entry_id)
            return
        index = self.index[etype]
        others = self.extra.pop((etype, key), ())
        if index.get(key) is entry:
            if others:
                index[key] = others[0]
                others = others[1:]
            else:
                del index[key]
        else:
            others = tuple(e for e in others if e.id != entry_id)
        if others:
            self.extra[(etype, key)] = others

    def _file_query(self, key: str, query: QueryPairs, entry: Entry) -> None:
        """Count the entry on every node of its query's path; list it on the last."""
        urlq = self.urlq
        *above, last = path_keys(key, query)
        for node in above:
            below, here = urlq.get(node, _NO_NODE)
            urlq[node] = (below + 1, here)
        below, here = urlq.get(last, _NO_NODE)
        urlq[last] = (below, (*here, entry))

    def _unfile_query(self, key: str, query: QueryPairs, entry_id: str) -> None:
        urlq = self.urlq
        *above, last = path_keys(key, query)
        changes: list[tuple[bytes, int, str | None]] = [(node, -1, None) for node in above]
        changes.append((last, 0, entry_id))
        for node, delta, gone in changes:
            below, here = urlq.get(node, _NO_NODE)
            below += delta
            if gone is not None:
                here = tuple(e for e in here if e.id != gone)
            if below > 0 or here:
                urlq[node] = (below, here)
            else:
                urlq.pop(node, None)

    def _unexpire(self, entry_id: str) -> None:
        """Forget an expiry; the shard's floor is recomputed when it was this one's (that
        shard was just copied for the write, so the walk costs no more than the copy)."""
        when = self.expiring.pop(entry_id, None)
        i = shard_index(entry_id)
        if when is not None and when <= self.expiry_floor[i]:
            self.expiry_floor[i] = min(self.expiring.shards()[i].values(), default=_NEVER)

    def expire(self, now: float) -> None:
        """Drop entries lapsed at `now`: only the shards whose earliest expiry has passed
        are looked at."""
        for i, floor in enumerate(self.expiry_floor):
            if floor <= now:
                shard = self.expiring.shards()[i]
                lapsed = [eid for eid, when in shard.items() if when <= now]
                self.expiry_floor[i] = -_NEVER  # one recomputation below, not one per removal
                for entry_id in lapsed:
                    self.remove(entry_id)
                rest = self.expiring.shards()[i].values()
                self.expiry_floor[i] = min(rest, default=_NEVER)

    def freeze(self, version: int) -> DictSnapshot:
        return DictSnapshot(_token=_TOKEN, version=version, builder=self)


_TOKEN = object()


class Snapshot(ABC):
    """One blocklist version as the request path sees it. Immutable: a change makes a new one
    (`with_changes`), swapped in by one assignment."""

    __slots__ = ()
    version: int

    @classmethod
    def compile(cls, entries: Iterable[Entry], version: int, now: float) -> DictSnapshot:
        """Compile a full entry set in memory. Raises `InvalidEntry` (a ValueError) on the
        first bad entry or a repeated id; entries already expired at `now` are left out."""
        builder = SnapshotBuilder()
        for entry in entries:
            if entry.id in builder.by_id:
                raise InvalidEntry(entry.id, "duplicate id")
            builder.add(entry, now)
        return builder.freeze(version)

    @abstractmethod
    def with_changes(
        self, add: Iterable[Entry], remove_ids: Iterable[str], version: int, now: float
    ) -> Snapshot:
        """A new snapshot: `remove_ids` removed (unknown ids ignored), then `add` added (an id
        already present is replaced), then entries expired at `now` dropped. Raises
        `InvalidEntry` without touching this snapshot."""

    @abstractmethod
    def check(
        self, host: str, path: str, query: str | None, *, case_sensitive: bool = False
    ) -> Entry | None:
        """The entry blocking this request target, if any: host entries (host and parent
        domains), then prefix entries (shortest first), then url entries. `case_sensitive`
        is the site's `case_sensitive_paths`: then `/A` and `/a` are different resources."""

    @abstractmethod
    def check_keys(self, k: MatchKeys, *, case_sensitive: bool = False) -> Entry | None:
        """`check` for match keys computed earlier."""

    @abstractmethod
    def check_digest(self, digest: bytes) -> Entry | None:
        """The sha256 entry listing this body digest (32 bytes), if any."""

    def check_target(self, target: TargetLike, *, case_sensitive: bool = False) -> Entry | None:
        """`check` for a `proxy.rfc.target.Target` (or anything with host, path, query)."""
        return self.check(target.host, target.path, target.query, case_sensitive=case_sensitive)

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def counts(self) -> dict[EntryType, int]:
        """Entries by type (a fresh dict; every type present)."""

    @property
    @abstractmethod
    def entries_by_id(self) -> Mapping[str, Entry]:
        """All entries by id (read-only; may cost O(entries) to build)."""

    @property
    @abstractmethod
    def next_expiry(self) -> float | None:
        """When the earliest expiring entry lapses; rebuild with `with_changes((), (), v, now)`
        then, since `check` does not look at the clock."""

    def added_since(self, older: Snapshot) -> list[Entry]:
        """Entries in this snapshot that `older` lacks or held with other fields: what a
        purge must look for. O(len(self))."""
        before = older.entries_by_id
        return [e for eid, e in self.entries_by_id.items() if before.get(eid) != e]

    @abstractmethod
    def exclusive_shards(self, successor: Snapshot) -> list[dict[Any, Any]]:
        """The in-memory tables of this snapshot that `successor` does not share: what
        retiring this one frees. A worker clears them one at a time instead of freeing a
        million entries in one go when the last reference drops."""

    @abstractmethod
    def dict_part(self) -> DictSnapshot | None:
        """The in-memory index this snapshot keeps (all of it, or the overlay), if any."""


class DictSnapshot(Snapshot):
    """A blocklist version as Python dicts, built in the process that uses it."""

    __slots__ = (
        "version",
        "_by_id",
        "_index",
        "_hosts",
        "_prefixes",
        "_urls",
        "_digests",
        "_urlq",
        "_extra",
        "_counts",
        "_expiring",
        "_expiry_floor",
        "_next_expiry",
        "_request_side",
        "_prefix_depth",
    )

    version: int
    _by_id: ShardedDict[str, Entry]
    _index: dict[EntryType, ShardedDict[Any, Entry]]
    _hosts: ShardedDict[str, Entry]
    _prefixes: ShardedDict[str, Entry]
    _urls: ShardedDict[str, Entry]
    _digests: ShardedDict[bytes, Entry]
    _urlq: _QueryIndex
    _extra: ShardedDict[tuple[EntryType, Any], tuple[Entry, ...]]
    _counts: dict[EntryType, int]
    _expiring: ShardedDict[str, float]
    _expiry_floor: tuple[float, ...]
    _next_expiry: float | None
    _request_side: bool
    _prefix_depth: int

    def __init__(self, *, _token: object, version: int, builder: SnapshotBuilder) -> None:
        if _token is not _TOKEN:
            raise TypeError("build a DictSnapshot with Snapshot.compile or .with_changes")
        init = object.__setattr__
        init(self, "version", version)
        init(self, "_by_id", builder.by_id)
        init(self, "_index", builder.index)
        init(self, "_hosts", builder.index[EntryType.HOST])
        init(self, "_prefixes", builder.index[EntryType.PREFIX])
        init(self, "_urls", builder.index[EntryType.URL])
        init(self, "_digests", builder.index[EntryType.SHA256])
        init(self, "_urlq", builder.urlq)
        init(self, "_extra", builder.extra)
        init(self, "_counts", builder.counts)
        init(self, "_expiring", builder.expiring)
        init(self, "_expiry_floor", tuple(builder.expiry_floor))
        earliest = min(builder.expiry_floor)
        init(self, "_next_expiry", None if earliest == _NEVER else earliest)
        init(
            self,
            "_request_side",
            bool(builder.index[EntryType.HOST] or builder.index[EntryType.PREFIX])
            or bool(builder.index[EntryType.URL] or builder.urlq),
        )
        init(self, "_prefix_depth", builder.prefix_depth)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Snapshot is immutable")

    def with_changes(
        self, add: Iterable[Entry], remove_ids: Iterable[str], version: int, now: float
    ) -> DictSnapshot:
        """See `Snapshot.with_changes`. Copies only the shards a change touches."""
        adds = list(add)
        for entry in adds:
            compile_entry(entry)
        builder = SnapshotBuilder(self)
        for entry_id in remove_ids:
            builder.remove(entry_id)
        for entry in adds:
            builder.remove(entry.id)
            builder.add(entry, now)
        builder.expire(now)
        return builder.freeze(version)

    # -- lookups (the request path) -------------------------------------------------------

    def check(
        self, host: str, path: str, query: str | None, *, case_sensitive: bool = False
    ) -> Entry | None:
        if not self._request_side:
            return None
        return self.check_keys(match_keys(host, path, query), case_sensitive=case_sensitive)

    def check_keys(self, k: MatchKeys, *, case_sensitive: bool = False) -> Entry | None:
        """`check` for match keys computed earlier (a stored object keeps those of its
        target, so purging the cache against a new version recomputes none).

        Entries are indexed by their case-folded key only. A case-sensitive check probes the
        same folded keys (an exact match is always a folded match, since folding is a function
        of the string) and confirms a hit against the entry's unfolded key, recomputed from its
        value on demand (`keys.exact_url_key`, memoised): no per-entry memory, and the lookup
        cost still depends only on the request (plus the entries sharing one folded key)."""
        if not self._request_side:
            return None
        hosts = self._hosts
        if hosts:
            for h in k.host_suffixes:
                entry = hosts.get(h)
                if entry is not None:
                    return entry
        prefixes = self._prefixes
        if prefixes:
            key = k.url_key
            for depth, end in enumerate(k.prefix_ends[: self._prefix_depth + 1]):
                entry = prefixes.get(key[:end])
                if entry is not None:
                    if not case_sensitive:
                        return entry
                    found = self._exact(
                        EntryType.PREFIX, key[:end], entry, exact_prefix_key(k, depth)
                    )
                    if found is not None:
                        return found
        entry = self._urls.get(k.url_key)
        if entry is not None:
            if not case_sensitive:
                return entry
            found = self._exact(EntryType.URL, k.url_key, entry, k.host + k.exact_path)
            if found is not None:
                return found
        if self._urlq and k.query:
            want = k.host + k.exact_path if case_sensitive else None
            urlq = self._urlq

            def visit(node: bytes) -> tuple[Entry | None, bool]:
                below, here = urlq.get(node, _NO_NODE)
                for listed in here:
                    if want is None or exact_url_key(listed.value) == want:
                        return listed, below > 0
                return None, below > 0

            return walk(k.url_key, k.query, visit)
        return None

    def _exact(self, etype: EntryType, key: str, first: Entry, want: str) -> Entry | None:
        """The entry under folded `key` whose unfolded key is `want`, if any."""
        for entry in (first, *self._extra.get((etype, key), ())):
            if exact_url_key(entry.value) == want:
                return entry
        return None

    def check_digest(self, digest: bytes) -> Entry | None:
        return self._digests.get(digest)

    def entries_for(self, etype: EntryType, key: str | bytes) -> tuple[Entry, ...]:
        """Every entry indexed under (type, key) without a query, the reported one first."""
        first = self._index[etype].get(key)
        if first is None:
            return ()
        return (first, *self._extra.get((etype, key), ()))

    def query_node(self, node: bytes) -> tuple[int, tuple[Entry, ...]]:
        """A query trie node (`proxy.blocklist.querytrie`): the entries filed strictly below
        it, and those whose query is exactly its pairs, in list order."""
        return self._urlq.get(node, _NO_NODE)

    @property
    def has_queries(self) -> bool:
        return bool(self._urlq)

    @property
    def prefix_depth(self) -> int:
        return self._prefix_depth

    def dict_part(self) -> DictSnapshot:
        return self

    # -- inspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def counts(self) -> dict[EntryType, int]:
        return dict(self._counts)

    @property
    def entries_by_id(self) -> Mapping[str, Entry]:
        return MappingProxyType(self._by_id)

    @property
    def next_expiry(self) -> float | None:
        return self._next_expiry

    def exclusive_shards(self, successor: Snapshot) -> list[dict[Any, Any]]:
        other = successor.dict_part() or EMPTY_SNAPSHOT
        pairs: list[tuple[ShardedDict[Any, Any], ShardedDict[Any, Any]]] = [
            (self._by_id, other._by_id),
            (self._urlq, other._urlq),
            (self._extra, other._extra),
            (self._expiring, other._expiring),
            *((self._index[t], other._index[t]) for t in EntryType),
        ]
        out: list[dict[Any, Any]] = []
        for mine, theirs in pairs:
            out.extend(mine.exclusive_shards(theirs))
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{t.value}={n}" for t, n in self._counts.items())
        return f"<DictSnapshot version={self.version} {counts}>"


def exact_prefix_key(k: MatchKeys, depth: int) -> str:
    """The unfolded prefix key at `depth` segments (`k.prefix_ends` indexes the folded one,
    whose offsets differ where folding changes a length, e.g. "ß" to "ss")."""
    if depth == 0:
        return k.host + "/"
    segments = k.exact_path.split("/", depth + 1)
    return k.host + "/".join(segments[: depth + 1])


EMPTY_SNAPSHOT: DictSnapshot = Snapshot.compile((), version=0, now=0.0)
