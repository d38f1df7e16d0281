"""The memo in front of admit, block and lookup: a raw target and Host that were answered with
a fresh hit, or with a 451, under the current blocklist snapshot get the same decision again
without being parsed, canonicalised and matched anew.

It memoises decisions, it does not make them: a remembered entry is still judged by
`lookup.decide` and rendered by `deliver.hit_bytes`, a remembered 451 by `block.render_451`,
exactly as on the full path. The memo is emptied at every snapshot swap, and an entry that
left the memory tier is no longer `alive`. Only plain requests (unflagged, body-less GET/HEAD)
use it; its size is `cache.hot_memo_max_entries` (emptied whole when full: cheap, and the hot
set refills it in a moment), and each of its tables (hits, node-tier references, 451s) is
emptied too once the keys and answers it holds pass `cache.hot_memo_max_bytes`. Entries alone
did not bound it: a raw target may be as long as `limits.max_request_line_bytes`, and a
client can make any number of distinct ones that get the same remembered answer (percent-
encoded variants of one stored URL, any URL under a listed prefix): 65,536 remembered 451s
for targets of 8 KB held 520 MiB a worker (tracemalloc), and the hit table as much again.

Node-tier answers (issue 11): an entry read from the node tier that memory did not adopt
(`proxy.cache.admission`) is not kept here (it is not `alive`), but a `NodeRef` to its item
is. The next request for the raw target reads the node tier by that key (`TieredCache.get_hot`:
the record's seal, key and Vary proven as on every read the first time, and on later hits the
value checked to be the record proven then, by its length and seal, its body copied out: a
record stored anew is proven anew, a purged item is simply not there) and is answered when
`lookup.fresh_plain` calls it fresh and its body digest is not refused now
(`lookup.stored_refused`, checked on every such hit: the item may have been stored anew by
another worker since it was remembered). Anything else goes the full way, which decides.

It holds no body the memory tier has let go (issue 19): entries are remembered by weak
reference, so an entry evicted or purged from memory is freed as if the memo did not exist, and
its raw target is dropped at its next request, which goes the full way (and is remembered by
reference when the node tier answers it: the key used to stay with its dead reference until the
memo was emptied, sending every later request for it the full way). (It used to hold entries
themselves, and was emptied whenever the bodies remembered since the last emptying passed a
quarter of the memory tier, so it never covered more than a quarter of what memory holds: with
a working set larger than that, most hits went the full way.)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from proxy.cache.entry import Entry
from proxy.cache.tiered import NodeRef, TieredCache
from proxy.phases.lookup import decide, fresh_plain
from proxy.rfc.cachecontrol import EMPTY_CC
from proxy.rfc.freshness import Reuse

_FRESH = Reuse.FRESH  # a module global: cheaper to read on the hottest path than the enum's
MemoKey = tuple[bytes, bytes | None]  # (raw target, raw Host)
# What a remembered key costs besides its bytes: the dict slot, the tuple, two bytes objects.
KEY_OVERHEAD_BYTES = 200
HOT_MEMO_MAX_BYTES = 32 << 20


def _held(key: MemoKey, value: object) -> int:
    """What a remembered key and its value hold: the key's bytes, and a 451's head and body
    (a weak reference or a `NodeRef` holds no body)."""
    host = key[1]
    n = len(key[0]) + (len(host) if host is not None else 0) + KEY_OVERHEAD_BYTES
    if type(value) is Remembered451:
        n += len(value.head) + len(value.body)
    return n


class Remembered451(NamedTuple):
    head: bytes  # the fields after Date, up to the connection field
    body: bytes
    site_index: int
    type_index: int


class _Table(dict[MemoKey, Any]):
    """One of the memo's tables, bounded in entries and in what its keys and values hold
    (`held`, by `_held`): a new key that would pass either empties it whole first. Reads are
    the dict's own (`get`, on the hottest path); keys come and go by `put` and `drop`, which
    keep `held` true."""

    __slots__ = ("held", "max_entries", "max_bytes")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        super().__init__()
        self.held = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def put(self, key: MemoKey, value: Any) -> None:
        n = _held(key, value)
        old = self.get(key)
        if old is not None:
            self.held -= _held(key, old)
        elif len(self) >= self.max_entries or self.held + n > self.max_bytes:
            self.clear()
        self.held += n
        self[key] = value

    def drop(self, key: MemoKey) -> None:
        old = self.pop(key, None)
        if old is not None:
            self.held -= _held(key, old)

    def clear(self) -> None:
        super().clear()
        self.held = 0


class HotMemo:
    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float],
        touch: Callable[[Entry], None],
        *,
        node: TieredCache | None = None,
        refused: Callable[[Entry], bool] | None = None,
        max_bytes: int = HOT_MEMO_MAX_BYTES,
    ) -> None:
        self.clock = clock  # the data plane's (the pipeline keeps it in step)
        self.touch = touch  # the cache's LRU refresh
        # Node-tier answers: the cache that reads them, and lookup's digest refusal. Both or
        # neither (without them no NodeRef is remembered).
        self.node = node if refused is not None else None
        self.refused = refused or (lambda e: True)
        self._hits = _Table(max_entries, max_bytes)  # weak references to memory's entries
        self._refs = _Table(max_entries, max_bytes)  # node-tier answers (no body held)
        self._blocked = _Table(max_entries, max_bytes)  # `Remembered451`s

    def take_hit(
        self, method: str, raw_target: bytes, host: bytes | None
    ) -> tuple[Entry, float] | None:
        """A remembered hit that `lookup.decide` still calls fresh, and the time it was
        judged at: admit, block and lookup would decide exactly as they did then (the memo
        is emptied at every snapshot swap). Every 8th hit refreshes the entry's LRU place.
        The hottest path there is: one dict lookup, one clock read, one `decide`."""
        if method != "GET" and method != "HEAD":
            return None
        held = self._hits.get((raw_target, host))
        if held is None:
            ref = self._refs.get((raw_target, host))
            return None if ref is None else self._take_node(ref, raw_target, host)
        entry = held()
        if entry is None or not entry.alive:
            # Memory let it go (evicted, purged): the full path decides, and remembers a
            # node-tier answer by reference from then on (`remember_hit`).
            self._hits.drop((raw_target, host))
            return None
        now = self.clock()
        if decide(entry, now, EMPTY_CC) is not _FRESH:
            return None
        if entry.tier_detail:
            entry.tier_detail = b""  # answered from memory from now on
        entry.hits += 1
        if not entry.hits & 7:
            self.touch(entry)
        return entry, now

    def _take_node(
        self, ref: NodeRef, raw_target: bytes, host: bytes | None
    ) -> tuple[Entry, float] | None:
        """A remembered node-tier answer, read again (`get_hot`); adopted by memory on this
        read, the entry itself is remembered from now on."""
        assert self.node is not None
        entry = self.node.get_hot(ref)
        if entry is None:
            self._refs.drop((raw_target, host))  # no longer in the node tier
            return None
        now = self.clock()
        if not fresh_plain(entry, now) or self.refused(entry):
            return None
        if entry.alive:
            self.remember_hit(raw_target, host, entry)
        return entry, now

    def blocked(self, raw_target: bytes, host: bytes | None) -> Remembered451 | None:
        return self._blocked.get((raw_target, host))

    def remember_hit(self, raw_target: bytes, host: bytes | None, entry: Entry) -> None:
        """Remember a fresh hit: the entry while memory holds it, a `NodeRef` when it was
        answered by the node tier and not adopted, nothing otherwise."""
        key = (raw_target, host)
        if not entry.alive:
            self._hits.drop(key)  # what memory held for it then, it holds no longer
            ref = self.node.node_ref(entry) if self.node is not None else None
            if ref is not None:
                self._refs.put(key, ref)
            return
        self._refs.drop(key)
        self._hits.put(key, weakref.ref(entry))

    def remember_blocked(
        self, raw_target: bytes, host: bytes | None, answer: Remembered451
    ) -> None:
        self._blocked.put((raw_target, host), answer)

    def held_bytes(self) -> int:
        """What the memo's tables hold in keys and answers (`max_bytes` bounds each)."""
        return self._hits.held + self._refs.held + self._blocked.held

    def clear(self) -> None:
        self._hits.clear()
        self._refs.clear()
        self._blocked.clear()
