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
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy.blocklist.keys import MatchKeys, exact_url_key, match_keys
from proxy.blocklist.model import Entry, EntryType, compile_entry
from proxy.blocklist.querytrie import node_key, walk_below
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
    EVERYTHING,
    HAS_SHORT_HOST,
    HAS_URL,
    HAS_URLQ,
    LABEL_BITS,
    NOTHING,
    Kind,
    MappedTable,
    Seal,
    Summary,
    TableError,
    host_group,
    one_label_host,
    summary_of,
)
from proxy.blocklist.tablecheck import READS, NoChild, check_in_child

log = logging.getLogger("edgeproxy.blocklist")

# kinds and types as plain values where a request uses them: an enum member's lookup costs
# about 0.1 µs a time in Python 3.11, a good part of a probe
_HOST, _PREFIX, _URL, _URLQ, _URLQ_NODE, _SHA256, _SUMMARY = (
    Kind.HOST.value,
    Kind.PREFIX.value,
    Kind.URL.value,
    Kind.URLQ.value,
    Kind.URLQ_NODE.value,
    Kind.SHA256.value,
    Kind.SUMMARY.value,
)
_T_HOST, _T_PREFIX, _T_URL, _T_SHA256 = (
    EntryType.HOST,
    EntryType.PREFIX,
    EntryType.URL,
    EntryType.SHA256,
)
_LAST_DEPTH = DEPTH_BITS - 1
_LAST_LABEL = LABEL_BITS - 1


def _nothing(_kind: int, _key: bytes) -> tuple[int, ...]:
    return ()


_BITS: dict[int, tuple[int, ...]] = {}
_GROUP_KEYS: dict[str, bytes] = {}
GROUP_KEYS = 8192  # request hosts whose group key is remembered (`_group_key`)


def _group_key(k: MatchKeys) -> bytes:
    """The key a request host's summary is filed under: its `host_group`, encoded (a name's
    last two labels are its next to last suffix; an IP literal's are not: it is its only
    suffix). Remembered for the first `GROUP_KEYS` hosts, never dropped: the hosts that reach
    the check are a node's sites (admit answers 421 to any other), few and steady, and a
    memo that emptied when full made a node with more of them compute and store each time."""
    suffixes = k.host_suffixes
    group = (suffixes[-2] if len(suffixes) > 1 else host_group(k.host)).encode(
        "utf-8", "surrogatepass"
    )
    if len(_GROUP_KEYS) < GROUP_KEYS:
        _GROUP_KEYS[k.host] = group
    return group


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
# `blocklist.check_in_child_min_bytes`'s default: the check of a 64 MiB table takes ~20-50 ms,
# a child's Python start ~0.1 s of CPU
CHECK_IN_CHILD_MIN_BYTES = 64 << 20


async def load_mapped(
    path: Path,
    version: int,
    now: float,
    *,
    stamp: int | None = None,
    seal: Seal | None = None,
    pinned: bool = False,
    check_in_child_min_bytes: int = CHECK_IN_CHILD_MIN_BYTES,
) -> MappedSnapshot:
    """Open a compiled file, make sure it is whole, and wrap it as the snapshot of `version`.
    Its header must carry `stamp` (a linked signer's table), else `version`.

    A file that opens with the supervisor's `seal` is the file the supervisor checked byte
    for byte (`table.Seal`): it is mapped as it is, with its probe sections read once more so
    the page cache keeps them, unless the supervisor holds them locked (`pinned`). Any other
    file is checked whole here (every page read and hashed), then its probe sections read
    again. The reading runs in a child process (`proxy.blocklist.tablecheck`: its own GIL)
    when it is `check_in_child_min_bytes` or more, else in a thread (the checksum releases the
    GIL). Raises `TableError` for a truncated, corrupt or mismatched file; the caller keeps
    its current snapshot."""
    table = await asyncio.to_thread(MappedTable, path)
    expected = version if stamp is None else stamp
    if table.version != expected:
        raise TableError(f"{path}: holds version {table.version}, expected {expected}")
    if not table.is_sealed(seal):
        await _read_in_background(table, "check", table.size, check_in_child_min_bytes)
    elif not pinned:
        start, end = table.probe_span
        await _read_in_background(table, "keep", end - start, check_in_child_min_bytes)
    return MappedSnapshot.open(table, version, now)


async def _read_in_background(table: MappedTable, what: str, size: int, child_min: int) -> None:
    """`what` (a name in `tablecheck.READS`) over `size` bytes of `table`, in a child process
    from `child_min` bytes on, else in a low-priority thread."""
    read, done = READS[what]
    if size < child_min:
        await in_low_priority_thread(lambda: read(table))
        return
    try:
        await check_in_child(table, VERIFY_NICE, what)
    except NoChild as e:
        log.warning("%s; %s in a thread instead", e, done)
        await in_low_priority_thread(lambda: read(table))


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
        "_ov_groups",
        "_base_counts",
        "_exp_pos",
        "_next_expiry",
        "_request_side",
        "_summarised",
        "_unsummarised",
        "_short_hosts",
        "_ov_short_hosts",
        "_ov_listed",
        "_beyond_groups",
        "_prefix_depth",
        "_digests",
        "_ov_digests",
    )

    version: int
    table: MappedTable
    _hidden: ShardedDict[int, bool]
    _overlay: DictSnapshot
    # the overlay's own summaries: what its url, prefix and host entries name, by encoded
    # host group (`table.summary_of`), copy-on-write per shard like `_hidden`. Never cleared
    # of what it said (a removed entry's bits stay): a summary may say more, never less.
    _ov_groups: ShardedDict[bytes, Summary]
    _base_counts: dict[EntryType, int]
    _exp_pos: int
    _next_expiry: float | None
    _request_side: bool  # url, prefix or host entries anywhere: else a request checks nothing
    _summarised: bool  # the base has host summaries (format 3): a request probes its group's
    _unsummarised: Summary  # a base without (format 2): what any group may list, by type
    _short_hosts: bool  # the base lists hosts of one label ("example"): probed for every host
    _ov_short_hosts: bool  # the overlay does
    _ov_listed: bool  # `_ov_groups` has any
    _beyond_groups: bool  # a host whose group the base does not list may still be blocked
    _prefix_depth: int
    _digests: bool
    _ov_digests: bool

    def __init__(
        self,
        table: MappedTable,
        version: int,
        hidden: ShardedDict[int, bool],
        overlay: DictSnapshot,
        base_counts: dict[EntryType, int],
        exp_pos: int,
        ov_groups: ShardedDict[bytes, Summary],
        ov_short_hosts: bool,
    ) -> None:
        init = object.__setattr__
        init(self, "version", version)
        init(self, "table", table)
        init(self, "_hidden", hidden)
        init(self, "_overlay", overlay)
        init(self, "_ov_groups", ov_groups)
        init(self, "_base_counts", base_counts)
        # Past the leading base expiries already hidden (removed or replaced since): each
        # snapshot would otherwise walk them again to find the next live one (issue 19).
        while exp_pos < table.expiring_count and table.expiring_at(exp_pos)[1] in hidden:
            exp_pos += 1
        init(self, "_exp_pos", exp_pos)
        built = table.counts
        ov = overlay.counts
        init(
            self,
            "_request_side",
            any(built[t] > 0 or ov[t] > 0 for t in (_T_HOST, _T_PREFIX, _T_URL)),
        )
        init(self, "_summarised", table.summaries)
        everything_depths, everything_flags, everything_labels = EVERYTHING
        init(
            self,
            "_unsummarised",
            (
                everything_depths if built[_T_PREFIX] > 0 else 0,
                everything_flags if built[_T_URL] > 0 else 0,
                everything_labels if built[_T_HOST] > 0 else 0,
            ),
        )
        init(self, "_short_hosts", bool(table.summary("")[1] & HAS_SHORT_HOST))
        init(self, "_ov_short_hosts", ov_short_hosts)
        init(self, "_ov_listed", bool(ov_groups))
        init(self, "_beyond_groups", self._ov_listed or self._short_hosts or ov_short_hosts)
        init(self, "_digests", built[_T_SHA256] > 0 or ov[_T_SHA256] > 0)
        init(self, "_ov_digests", ov[_T_SHA256] > 0)
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
        return cls(table, version, hidden, EMPTY_SNAPSHOT, counts, pos, ShardedDict(), False)

    def with_changes(
        self, add: Iterable[Entry], remove_ids: Iterable[str], version: int, now: float
    ) -> MappedSnapshot:
        """See `Snapshot.with_changes`: touches the overlay only, at a cost that depends on
        the change, not on the list."""
        adds = list(add)
        groups, short = self._ov_groups, self._ov_short_hosts
        if adds:
            groups = ShardedDict(groups)
        for entry in adds:
            form = compile_entry(entry)
            if isinstance(form[1], str):
                group, (depths, flags, labels) = summary_of(form)
                gkb = group.encode("utf-8", "surrogatepass")
                had = groups.get(gkb, NOTHING)
                groups[gkb] = (had[0] | depths, had[1] | flags, had[2] | labels)
                short = short or one_label_host(form)
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
        overlay = builder.freeze(version)
        return MappedSnapshot(table, version, hidden, overlay, counts, pos, groups, short)

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
        something, and the overlay only where its own summaries (`_ov_groups`, one dict
        probe) do: a host without entries costs that one probe, a listed one only the host
        suffixes, prefix depths and url or query entries its group has. Each is one hash and
        a bucket scan of the base, or a dict probe of the overlay.

        Written for the miss path's budget (issue 12: 3 µs at 100M entries, where a probe
        costs a few tenths of a µs): no call, encoding or enum lookup a request does not need."""
        if not self._request_side:
            return None
        find = self.table.find  # a miss is one hash and a bucket scan per probe, no decoding
        group = _GROUP_KEYS.get(k.host) or _group_key(k)
        if self._summarised:
            found = find(_SUMMARY, group)
            if found:
                low, high, flags, labels = found
                depths = low | high << 32
            elif self._beyond_groups:
                depths = flags = labels = 0
            else:
                return None
        else:
            depths, flags, labels = self._unsummarised
        if self._ov_listed:
            ov_depths, ov_flags, ov_labels = self._ov_groups.get(group, NOTHING)
        else:
            ov_depths = ov_flags = ov_labels = 0
        if labels or ov_labels or self._short_hosts or self._ov_short_hosts:
            entry = self._check_hosts(k, labels, ov_labels)
            if entry is not None:
                return entry
        if depths and not (ov_depths or case_sensitive or depths >> _LAST_DEPTH):
            # `_check_prefixes` of the common case, inlined (its call and set-up were a tenth
            # of a listed host's check): base entries only, at depths below the last bit
            key = k.url_key
            ends = k.prefix_ends
            top = len(ends)
            for depth in _BITS.get(depths) or _bits(depths):
                if depth >= top:
                    break
                pk = key[: ends[depth]]
                found = find(_PREFIX, pk.encode("utf-8", "surrogatepass"))
                if found:
                    entry = self._pick(found, _T_PREFIX, pk, False)
                    if entry is not None:
                        return entry
        elif depths or ov_depths:
            entry = self._check_prefixes(k, depths, ov_depths, case_sensitive)
            if entry is not None:
                return entry
        in_base = flags & HAS_URL
        overlay = ov_flags & HAS_URL
        if in_base or overlay:
            key = k.url_key
            found = find(_URL, key.encode("utf-8", "surrogatepass")) if in_base else ()
            if found or overlay:
                if not case_sensitive:
                    entry = self._pick(found, _T_URL, key, overlay)
                    if entry is not None:
                        return entry
                else:
                    want = k.host + k.exact_path
                    for entry in self._all(found, _T_URL, key):
                        if exact_url_key(entry.value) == want:
                            return entry
        if k.query and (flags | ov_flags) & HAS_URLQ:
            # the query trie's root, on its own: most url keys under a host with query
            # entries have none, and cost this one probe. A listed query has a pair at least,
            # so no entry sits on the root: only whether any lies below it.
            root = node_key(k.url_key)
            in_base = flags & HAS_URLQ
            overlay = ov_flags & HAS_URLQ
            if in_base and find(_URLQ_NODE, root) or overlay and self._overlay.query_node(root)[0]:
                return self._check_query(k, root, case_sensitive, in_base, overlay)
        return None

    def _check_hosts(self, k: MatchKeys, labels: int, ov_labels: int) -> Entry | None:
        """Host entries: each suffix of the request host whose label count the base's summary
        of its group (`labels`, a bit per count) or the overlay's (`ov_labels`) lists; the
        top label too when either holds a host entry of one label."""
        find = self.table.find
        for h in k.host_suffixes:
            n = h.count(".") + 1
            bit = min(n, _LAST_LABEL)
            in_base = labels >> bit & 1 or (n == 1 and self._short_hosts)
            overlay = ov_labels >> bit & 1 or (n == 1 and self._ov_short_hosts)
            if not in_base and not overlay:
                continue
            found = find(_HOST, h.encode("utf-8", "surrogatepass")) if in_base else ()
            if found or overlay:
                entry = self._pick(found, _T_HOST, h, overlay)
                if entry is not None:
                    return entry
        return None

    def _check_prefixes(
        self, k: MatchKeys, depths: int, ov_depths: int, case_sensitive: bool
    ) -> Entry | None:
        """Prefix entries, shortest first, at the depths the base's summary (`depths`, a bit
        per depth, the last standing for it and every deeper one) or the overlay's
        (`ov_depths`) lists."""
        find = self.table.find
        key = k.url_key
        ends = k.prefix_ends
        mask = depths | ov_depths
        top = len(ends)
        levels = _BITS.get(mask) or _bits(mask)
        if top > _LAST_DEPTH and mask >> _LAST_DEPTH & 1:  # and every depth past the last
            levels = (*levels[:-1], *range(_LAST_DEPTH, min(top, self._prefix_depth + 1)))
        for depth in levels:
            if depth >= top:
                break
            bit = depth if depth < _LAST_DEPTH else _LAST_DEPTH
            overlay = ov_depths >> bit & 1
            pk = key[: ends[depth]]
            if depths >> bit & 1:
                found = find(_PREFIX, pk.encode("utf-8", "surrogatepass"))
                if not found and not overlay:
                    continue
            else:
                found = ()
            if not case_sensitive:
                entry = self._pick(found, _T_PREFIX, pk, overlay)
                if entry is not None:
                    return entry
                continue
            want = exact_prefix_key(k, depth)
            for entry in self._all(found, _T_PREFIX, pk):
                if exact_url_key(entry.value) == want:
                    return entry
        return None

    def _check_query(
        self, k: MatchKeys, root: bytes, case_sensitive: bool, base: int, ov_urlq: int
    ) -> Entry | None:
        """Url entries with a query, below a query trie `root` that has some: the trie
        (`proxy.blocklist.querytrie`) of the base (a node record per prefix, entries on the
        record of their whole query; not probed when `base` is false: its summary lists no
        query under this host), then the overlay's (only when `ov_urlq`: its summary lists
        one), node by node."""
        assert k.query is not None
        hidden, overlay, table = self._hidden, self._overlay, self.table
        find = table.find if base else _nothing
        want = k.host + k.exact_path if case_sensitive else None

        def visit(node: bytes) -> tuple[Entry | None, bool]:
            for index in find(_URLQ, node):
                if index not in hidden:
                    listed = table.entry(index)
                    if want is None or exact_url_key(listed.value) == want:
                        return listed, True
            if not ov_urlq:
                return None, bool(find(_URLQ_NODE, node))
            below, here = overlay.query_node(node)
            for listed in here:
                if want is None or exact_url_key(listed.value) == want:
                    return listed, True
            return None, below > 0 or bool(find(_URLQ_NODE, node))

        return walk_below(root, k.query, visit)

    def check_digest(self, digest: bytes) -> Entry | None:
        if not self._digests:
            return None
        found = self.table.find(_SHA256, digest)
        if found or self._ov_digests:
            return self._pick(found, _T_SHA256, digest, self._ov_digests)
        return None

    def _pick(
        self, found: tuple[int, ...], etype: EntryType, key: str | bytes, overlay: bool | int
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
            out.extend(self._ov_groups.exclusive_shards(successor._ov_groups))
        else:
            out.extend(self._hidden.shards())
            out.extend(self._ov_groups.shards())
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
