"""The blocklist a worker enforces at any size: a compiled, memory-mapped base shared by every
worker, and a small in-memory overlay of the changes made since it was compiled.

The base (`proxy.blocklist.table`) is built once per version by the supervisor. A worker swaps
to a new one by opening the file and assigning one reference: nothing is rebuilt, and its
private memory does not grow with the list (the file's pages are the page cache's, shared by
all). Pushes, removals and expiries go to the overlay: a `DictSnapshot` of entries added since
the base, and the set of base entries hidden since (removed, replaced or expired), both
copy-on-write per shard, so a delta costs what it changes, not what the list holds. The
supervisor folds the overlay into a new base once it passes
`blocklist.overlay_max_fraction` of the base.

Answers are exactly `DictSnapshot`'s for the same history (tests/blocklist/test_mapped.py
checks that on random lists and requests): for each probe key the base's live entries come
first, in list order, then the overlay's, in the order they were added, which is the order a
dict snapshot keeps after the same removals and additions.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy.blocklist.keys import MatchKeys, exact_url_key, match_keys
from proxy.blocklist.model import Entry, EntryType, compile_entry
from proxy.blocklist.querytrie import walk
from proxy.blocklist.shards import ShardedDict
from proxy.blocklist.snapshot import (
    EMPTY_SNAPSHOT,
    DictSnapshot,
    Snapshot,
    SnapshotBuilder,
    exact_prefix_key,
)
from proxy.blocklist.table import (
    DEPTH_BITS,
    HAS_SHORT_HOST,
    HAS_URL,
    HAS_URLQ,
    LABEL_BITS,
    Kind,
    MappedTable,
    TableError,
    host_group,
)

_HOST, _PREFIX, _URL, _URLQ, _URLQ_NODE, _SHA256 = (
    Kind.HOST.value,
    Kind.PREFIX.value,
    Kind.URL.value,
    Kind.URLQ.value,
    Kind.URLQ_NODE.value,
    Kind.SHA256.value,
)
_LAST_DEPTH = DEPTH_BITS - 1
_LAST_LABEL = LABEL_BITS - 1


def _nothing(_kind: int, _key: bytes) -> tuple[int, ...]:
    return ()


_BITS: dict[int, tuple[int, ...]] = {}


def _bits(mask: int) -> tuple[int, ...]:
    """The positions of the set bits of `mask`, lowest first (few masks recur: memoised)."""
    found = _BITS.get(mask)
    if found is None:
        found = tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
        if len(_BITS) < 4096:
            _BITS[mask] = found
    return found


# Added to the nice value of the thread that checks a new table in a serving worker, as the
# compile child's (`loader.Job.nice`): the check takes what the loop leaves of the CPU.
VERIFY_NICE = 10


async def load_mapped(
    path: Path, version: int, now: float, *, stamp: int | None = None
) -> MappedSnapshot:
    """Open a compiled file, check it whole (in a thread: the checksum reads every page and
    releases the GIL), and wrap it as the snapshot of `version`. Its header must carry
    `stamp` (a linked signer's table), else `version`. Raises `TableError` for a truncated,
    corrupt or mismatched file; the caller keeps its current snapshot."""
    table = await asyncio.to_thread(MappedTable, path)
    expected = version if stamp is None else stamp
    if table.version != expected:
        raise TableError(f"{path}: holds version {table.version}, expected {expected}")
    await in_low_priority_thread(table.verify)
    return MappedSnapshot.open(table, version, now)


async def in_low_priority_thread(func: Callable[[], None], nice: int = VERIFY_NICE) -> None:
    """Run `func` in a thread of its own whose nice value is raised by `nice` (Linux keeps
    one per thread): a 10M-entry table's check is ~3 GB of reading and hashing, which at the
    loop's priority competes with serving for the same cores during a swap under load. A
    thread of the default executor is not used: a raised nice value cannot be lowered again
    without privileges."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def run() -> None:
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        except (OSError, AttributeError):
            pass  # not Linux, or not allowed: the check runs at the loop's priority
        try:
            func()
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, e)
        else:
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=run, name="blocklist-verify", daemon=True).start()
    await done


class MappedSnapshot(Snapshot):
    """A mapped base plus an overlay. Immutable; `with_changes` makes the next one."""

    __slots__ = (
        "version",
        "table",
        "_hidden",
        "_overlay",
        "_base_counts",
        "_exp_pos",
        "_next_expiry",
        "_request_side",
        "_short_hosts",
        "_prefix_depth",
        "_hosts",
        "_prefixes",
        "_urls",
        "_urlq",
        "_digests",
        "_ov_hosts",
        "_ov_prefixes",
        "_ov_urls",
        "_ov_digests",
        "_ov_urlq",
    )

    version: int
    table: MappedTable
    _hidden: ShardedDict[int, bool]
    _overlay: DictSnapshot
    _base_counts: dict[EntryType, int]
    _exp_pos: int
    _next_expiry: float | None
    _request_side: bool
    _short_hosts: bool  # the base lists hosts of one label ("example"): probed for every host
    _prefix_depth: int
    # which types exist at all (base as compiled, or overlay): probes of absent ones are skipped
    _hosts: bool
    _prefixes: bool
    _urls: bool
    _urlq: bool
    _digests: bool
    _ov_hosts: bool
    _ov_prefixes: bool
    _ov_urls: bool
    _ov_digests: bool
    _ov_urlq: bool

    def __init__(
        self,
        table: MappedTable,
        version: int,
        hidden: ShardedDict[int, bool],
        overlay: DictSnapshot,
        base_counts: dict[EntryType, int],
        exp_pos: int,
    ) -> None:
        init = object.__setattr__
        init(self, "version", version)
        init(self, "table", table)
        init(self, "_hidden", hidden)
        init(self, "_overlay", overlay)
        init(self, "_base_counts", base_counts)
        # Past the leading base expiries already hidden (removed or replaced since): each
        # snapshot would otherwise walk them again to find the next live one (issue 19).
        while exp_pos < table.expiring_count and table.expiring_at(exp_pos)[1] in hidden:
            exp_pos += 1
        init(self, "_exp_pos", exp_pos)
        built = table.counts
        ov = overlay.counts
        init(self, "_hosts", built[EntryType.HOST] > 0 or ov[EntryType.HOST] > 0)
        init(self, "_prefixes", built[EntryType.PREFIX] > 0 or ov[EntryType.PREFIX] > 0)
        init(self, "_urls", built[EntryType.URL] > 0 or ov[EntryType.URL] > 0)
        init(self, "_urlq", built[EntryType.URL] > 0 or overlay.has_queries)
        init(self, "_digests", built[EntryType.SHA256] > 0 or ov[EntryType.SHA256] > 0)
        init(self, "_ov_hosts", ov[EntryType.HOST] > 0)
        init(self, "_ov_prefixes", ov[EntryType.PREFIX] > 0)
        init(self, "_ov_urls", ov[EntryType.URL] > 0)
        init(self, "_ov_digests", ov[EntryType.SHA256] > 0)
        init(self, "_ov_urlq", overlay.has_queries)
        init(self, "_request_side", self._hosts or self._prefixes or self._urls)
        init(self, "_short_hosts", bool(table.summary("")[1] & HAS_SHORT_HOST))
        init(self, "_prefix_depth", max(table.prefix_depth, overlay.prefix_depth))
        init(self, "_next_expiry", self._earliest_expiry())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("MappedSnapshot is immutable")

    @classmethod
    def open(cls, table: MappedTable, version: int, now: float) -> MappedSnapshot:
        """The snapshot of a checked table with no changes yet, less what expired since the
        supervisor compiled it."""
        hidden: ShardedDict[int, bool] = ShardedDict()
        counts = dict(table.counts)
        pos = _expire_base(table, hidden, counts, 0, now)
        return cls(table, version, hidden, EMPTY_SNAPSHOT, counts, pos)

    def with_changes(
        self, add: Iterable[Entry], remove_ids: Iterable[str], version: int, now: float
    ) -> MappedSnapshot:
        """See `Snapshot.with_changes`: touches the overlay only, at a cost that depends on
        the change, not on the list."""
        adds = list(add)
        for entry in adds:
            compile_entry(entry)
        table = self.table
        builder = SnapshotBuilder(self._overlay)
        hidden = ShardedDict(self._hidden)
        counts = dict(self._base_counts)

        def drop(entry_id: str) -> None:
            builder.remove(entry_id)
            index = table.index_of(entry_id)
            if index >= 0 and index not in hidden:
                hidden[index] = True
                counts[table.entry(index).type] -= 1

        for entry_id in remove_ids:
            drop(entry_id)
        for entry in adds:
            drop(entry.id)
            builder.add(entry, now)
        builder.expire(now)
        pos = _expire_base(table, hidden, counts, self._exp_pos, now)
        return MappedSnapshot(table, version, hidden, builder.freeze(version), counts, pos)

    # -- lookups (the request path) -------------------------------------------------------

    def check(
        self, host: str, path: str, query: str | None, *, case_sensitive: bool = False
    ) -> Entry | None:
        if not self._request_side:
            return None
        return self.check_keys(match_keys(host, path, query), case_sensitive=case_sensitive)

    def check_keys(self, k: MatchKeys, *, case_sensitive: bool = False) -> Entry | None:
        """`DictSnapshot.check_keys`, probe for probe (host suffixes, prefixes shortest first,
        the url, then url entries with a query), except that the base is probed only where
        the summary of the request host's group (`table.host_group`, one probe) says it lists
        something: a host without entries costs that one probe, a listed one only the host
        suffixes, prefix depths and url or query entries its group has. Each probe is one
        hash and a bucket scan of the base, plus a dict probe of the overlay when it holds
        that type."""
        if not self._request_side:
            return None
        table = self.table
        find = table.find  # a miss is one hash and a bucket scan per probe, no decoding
        depths, flags, labels = table.summary(host_group(k.host))
        if self._hosts and (labels or self._ov_hosts or self._short_hosts):
            overlay = self._ov_hosts
            for h in k.host_suffixes:
                n = h.count(".") + 1
                listed = labels >> min(n, _LAST_LABEL) & 1 or (n == 1 and self._short_hosts)
                if not listed and not overlay:
                    continue
                found = find(_HOST, h.encode("utf-8", "surrogatepass")) if listed else ()
                if found or overlay:
                    entry = self._pick(found, EntryType.HOST, h, overlay)
                    if entry is not None:
                        return entry
        if self._prefixes and (depths or self._ov_prefixes):
            key = k.url_key
            ends = k.prefix_ends
            overlay = self._ov_prefixes
            top = min(len(ends), self._prefix_depth + 1)
            if overlay or top > _LAST_DEPTH:
                levels: Iterable[int] = range(top)  # the overlay's dicts at every depth
            else:
                levels = _bits(depths & ((1 << top) - 1))  # only the depths the base lists
            for depth in levels:
                listed = depths >> min(depth, _LAST_DEPTH) & 1
                if not listed and not overlay:
                    continue
                end = ends[depth]
                pk = key[:end]
                found = find(_PREFIX, pk.encode("utf-8", "surrogatepass")) if listed else ()
                if not found and not overlay:
                    continue
                if not case_sensitive:
                    entry = self._pick(found, EntryType.PREFIX, pk, overlay)
                    if entry is not None:
                        return entry
                    continue
                want = exact_prefix_key(k, depth)
                for entry in self._all(found, EntryType.PREFIX, pk):
                    if exact_url_key(entry.value) == want:
                        return entry
        if self._urls and (flags & HAS_URL or self._ov_urls):
            overlay = self._ov_urls
            found = (
                find(_URL, k.url_key.encode("utf-8", "surrogatepass")) if flags & HAS_URL else ()
            )
            if found or overlay:
                if not case_sensitive:
                    entry = self._pick(found, EntryType.URL, k.url_key, overlay)
                    if entry is not None:
                        return entry
                else:
                    want = k.host + k.exact_path
                    for entry in self._all(found, EntryType.URL, k.url_key):
                        if exact_url_key(entry.value) == want:
                            return entry
        if self._urlq and k.query and (flags & HAS_URLQ or self._ov_urlq):
            return self._check_query(k, case_sensitive, base=bool(flags & HAS_URLQ))
        return None

    def _check_query(self, k: MatchKeys, case_sensitive: bool, *, base: bool) -> Entry | None:
        """Url entries with a query: the query trie (`proxy.blocklist.querytrie`) of the base
        (a node record per prefix, entries on the record of their whole query; not probed when
        `base` is false: its summary lists no query under this host), then the overlay's,
        node by node."""
        assert k.query is not None
        hidden, overlay = self._hidden, self._overlay
        find = self.table.find if base else _nothing
        want = k.host + k.exact_path if case_sensitive else None
        at_root = True

        def visit(node: bytes) -> tuple[Entry | None, bool]:
            nonlocal at_root
            below, here = overlay.query_node(node)
            if at_root:  # the walk's first node: a listed query has a pair at least, so no
                at_root = False  # entry sits on the root; only whether any lies below
                return None, below > 0 or bool(find(_URLQ_NODE, node))
            for index in find(_URLQ, node):
                if index not in hidden:
                    listed = self.table.entry(index)
                    if want is None or exact_url_key(listed.value) == want:
                        return listed, True
            for listed in here:
                if want is None or exact_url_key(listed.value) == want:
                    return listed, True
            return None, below > 0 or bool(find(_URLQ_NODE, node))

        return walk(k.url_key, k.query, visit)

    def check_digest(self, digest: bytes) -> Entry | None:
        if not self._digests:
            return None
        found = self.table.find(_SHA256, digest)
        if found or self._ov_digests:
            return self._pick(found, EntryType.SHA256, digest, self._ov_digests)
        return None

    def _pick(
        self, found: tuple[int, ...], etype: EntryType, key: str | bytes, overlay: bool
    ) -> Entry | None:
        """The reported entry under a key: the base's first live one, else the overlay's."""
        hidden = self._hidden
        for index in found:
            if not hidden or index not in hidden:
                return self.table.entry(index)
        if overlay:
            listed = self._overlay.entries_for(etype, key)
            if listed:
                return listed[0]
        return None

    def _all(self, found: tuple[int, ...], etype: EntryType, key: str) -> Iterator[Entry]:
        """Every live entry under a key, in the order a dict snapshot would hold them."""
        hidden = self._hidden
        for index in found:
            if index not in hidden:
                yield self.table.entry(index)
        yield from self._overlay.entries_for(etype, key)

    # -- inspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(self._base_counts.values()) + len(self._overlay)

    @property
    def counts(self) -> dict[EntryType, int]:
        ov = self._overlay.counts
        return {t: n + ov[t] for t, n in self._base_counts.items()}

    @property
    def overlay_size(self) -> int:
        """Entries added and base entries hidden since the base was compiled."""
        return len(self._overlay) + len(self._hidden)

    @property
    def entries_by_id(self) -> Mapping[str, Entry]:
        """Built on each call: O(entries), for inspection and tests only."""
        out: dict[str, Entry] = {}
        hidden = self._hidden
        for index in range(self.table.entries):
            if index not in hidden:
                entry = self.table.entry(index)
                out[entry.id] = entry
        out.update(self._overlay.entries_by_id)
        return MappingProxyType(out)

    @property
    def next_expiry(self) -> float | None:
        return self._next_expiry

    def _earliest_expiry(self) -> float | None:
        base: float | None = None
        if self._exp_pos < self.table.expiring_count:
            base = self.table.expiring_at(self._exp_pos)[0]  # live: hidden ones were skipped
        mine = self._overlay.next_expiry
        if base is None or (mine is not None and mine < base):
            return mine
        return base

    def exclusive_shards(self, successor: Snapshot) -> list[dict[Any, Any]]:
        out = self._overlay.exclusive_shards(successor)
        if isinstance(successor, MappedSnapshot):
            out.extend(self._hidden.exclusive_shards(successor._hidden))
        else:
            out.extend(self._hidden.shards())
        return out

    def dict_part(self) -> DictSnapshot:
        return self._overlay

    def __repr__(self) -> str:
        counts = ", ".join(f"{t.value}={n}" for t, n in self.counts.items())
        return (
            f"<MappedSnapshot version={self.version} base={self.table.version} {counts} "
            f"overlay={self.overlay_size}>"
        )


def _expire_base(
    table: MappedTable,
    hidden: ShardedDict[int, bool],
    counts: dict[EntryType, int],
    pos: int,
    now: float,
) -> int:
    """Hide base entries whose `expires_at` has passed; returns the new expiry position."""
    for when, index in table.expiring(pos):
        if when > now:
            break
        pos += 1
        if index not in hidden:
            hidden[index] = True
            counts[table.entry(index).type] -= 1
    return pos
