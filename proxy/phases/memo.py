"""The memo in front of admit, block and lookup: a raw target and Host that were answered with
a fresh hit, or with a 451, under the current blocklist snapshot get the same decision again
without being parsed, canonicalised and matched anew.

It memoises decisions, it does not make them: a remembered entry is still judged by
`lookup.decide` and rendered by `deliver.hit_bytes`, a remembered 451 by `block.render_451`,
exactly as on the full path. The memo is emptied at every snapshot swap, and an entry that
left the memory tier is no longer `alive`. Only plain requests (unflagged, body-less GET/HEAD)
use it; its size is `cache.hot_memo_max_entries` (emptied whole when full: cheap, and the hot
set refills it in a moment).

It is also bounded in bytes (issue 19): a remembered entry that has left the memory tier stays
referenced here until its raw target is asked for again, so 65,536 targets requested once each
could pin 65,536 evicted bodies, several times the tier's own bound. The bodies remembered since
the last emptying are counted, and past `max_bytes` (a quarter of the worker's memory tier) the
memo is emptied as when it is full of entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from proxy.cache.entry import Entry
from proxy.phases.lookup import decide
from proxy.rfc.cachecontrol import EMPTY_CC
from proxy.rfc.freshness import Reuse

_FRESH = Reuse.FRESH  # a module global: cheaper to read on the hottest path than the enum's
MemoKey = tuple[bytes, bytes | None]  # (raw target, raw Host)


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
        max_bytes: int = 1 << 62,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._bytes = 0  # sizes of the entries remembered since the last emptying
        self.clock = clock  # the data plane's (the pipeline keeps it in step)
        self.touch = touch  # the cache's LRU refresh
        self._hits: dict[MemoKey, Entry] = {}
        self._blocked: dict[MemoKey, Remembered451] = {}

    def take_hit(
        self, method: str, raw_target: bytes, host: bytes | None
    ) -> tuple[Entry, float] | None:
        """A remembered hit that `lookup.decide` still calls fresh, and the time it was
        judged at: admit, block and lookup would decide exactly as they did then (the memo
        is emptied at every snapshot swap). Every 8th hit refreshes the entry's LRU place.
        The hottest path there is: one dict lookup, one clock read, one `decide`."""
        if method != "GET" and method != "HEAD":
            return None
        entry = self._hits.get((raw_target, host))
        if entry is None or not entry.alive:
            return None
        now = self.clock()
        if decide(entry, now, EMPTY_CC) is not _FRESH:
            return None
        entry.hits += 1
        if not entry.hits & 7:
            self.touch(entry)
        return entry, now

    def blocked(self, raw_target: bytes, host: bytes | None) -> Remembered451 | None:
        return self._blocked.get((raw_target, host))

    def remember_hit(self, raw_target: bytes, host: bytes | None, entry: Entry) -> None:
        self._bytes += entry.size
        if len(self._hits) >= self.max_entries or self._bytes > self.max_bytes:
            self._hits.clear()
            self._bytes = entry.size
        self._hits[(raw_target, host)] = entry

    def remember_blocked(
        self, raw_target: bytes, host: bytes | None, answer: Remembered451
    ) -> None:
        if len(self._blocked) >= self.max_entries:
            self._blocked.clear()
        self._blocked[(raw_target, host)] = answer

    def clear(self) -> None:
        self._hits.clear()
        self._blocked.clear()
        self._bytes = 0
