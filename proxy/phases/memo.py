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
from typing import NamedTuple

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


def _held(key: MemoKey) -> int:
    host = key[1]
    return len(key[0]) + (len(host) if host is not None else 0) + KEY_OVERHEAD_BYTES


class Remembered451(NamedTuple):
    head: bytes  # the fields after Date, up to the connection field
    body: bytes
    site_index: int
    type_index: int


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
        self.max_entries = max_entries
        self.max_bytes = max_bytes  # each table's keys and answers
        self.clock = clock  # the data plane's (the pipeline keeps it in step)
        self.touch = touch  # the cache's LRU refresh
        # Node-tier answers: the cache that reads them, and lookup's digest refusal. Both or
        # neither (without them no NodeRef is remembered).
        self.node = node if refused is not None else None
        self.refused = refused or (lambda e: True)
        self._hits: dict[MemoKey, weakref.ref[Entry]] = {}
        self._refs: dict[MemoKey, NodeRef] = {}  # node-tier answers (no body held)
        self._blocked: dict[MemoKey, Remembered451] = {}
        # What each table holds (`_held`, and a 451's head and body), against `max_bytes`.
        self._hits_bytes = self._refs_bytes = self._blocked_bytes = 0

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
            key = (raw_target, host)
            del self._hits[key]
            self._hits_bytes -= _held(key)
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
            key = (raw_target, host)
            del self._refs[key]  # no longer in the node tier
            self._refs_bytes -= _held(key)
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
        n = len(raw_target) + (len(host) if host is not None else 0) + KEY_OVERHEAD_BYTES
        if not entry.alive:
            if self._hits.pop(key, None) is not None:  # what memory held then, it holds no longer
                self._hits_bytes -= n
            ref = self.node.node_ref(entry) if self.node is not None else None
            if ref is not None:
                if key not in self._refs:
                    if len(self._refs) >= self.max_entries or self._refs_bytes + n > self.max_bytes:
                        self._refs.clear()
                        self._refs_bytes = 0
                    self._refs_bytes += n
                self._refs[key] = ref
            return
        if self._refs.pop(key, None) is not None:
            self._refs_bytes -= n
        if key not in self._hits:
            if len(self._hits) >= self.max_entries or self._hits_bytes + n > self.max_bytes:
                self._hits.clear()
                self._hits_bytes = 0
            self._hits_bytes += n
        self._hits[key] = weakref.ref(entry)

    def remember_blocked(
        self, raw_target: bytes, host: bytes | None, answer: Remembered451
    ) -> None:
        key = (raw_target, host)
        n = _held(key) + len(answer.head) + len(answer.body)
        old = self._blocked.get(key)
        if old is not None:
            self._blocked_bytes -= _held(key) + len(old.head) + len(old.body)
        elif len(self._blocked) >= self.max_entries or self._blocked_bytes + n > self.max_bytes:
            self._blocked.clear()
            self._blocked_bytes = 0
        self._blocked_bytes += n
        self._blocked[key] = answer

    def held_bytes(self) -> int:
        """What the memo's tables hold in keys and answers (`max_bytes` bounds each)."""
        return self._hits_bytes + self._refs_bytes + self._blocked_bytes

    def clear(self) -> None:
        self._hits.clear()
        self._refs.clear()
        self._blocked.clear()
        self._hits_bytes = self._refs_bytes = self._blocked_bytes = 0
