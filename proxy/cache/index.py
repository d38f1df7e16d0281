"""The memory tier's side indexes: an index key (primary key, host, body digest, blocklist url
key) to the stored item keys filed under it, so purges never scan the whole cache. Adding,
discarding and looking up cost O(1) (amortised) whatever the fan-out.

Issue 19: the members used to be a tuple rebuilt on every add and discard (`key not in keys`,
then `(*keys, key)`), O(n) per operation. 200,000 URLs answering one 4 KiB body (placeholders,
tracking pixels, error pages served as 200) made filling the tier O(n²): a worker slowed from
4,100 to 1,000 req/s, 58% of its time in that function, and any client could cause it.

What the tuples bought, kept here: almost every index key has one member, and a tuple of
str/bytes tuples is not tracked by the cyclic GC, where a set per stored entry would make every
full collection walk them all (0.6 s at 200k entries, measured when the tuples came in). So one
member is held inline (the item key itself); from two on, a dict used as an ordered set, and
back inline when one is left. A dict whose keys are all untracked tuples is untracked again by
the next full collection, and keeps insertion order: purges and `with_url_key` see members in
the order they were stored, as they did with the tuples.

Measured (a throwaway micro-benchmark: 200k item keys of the tier's shape, CPython 3.11, on a
shared 2-core machine, so times are +-30%). Each cell: ns per add / discard, index bytes per
item key, objects the GC still tracks after a full collection (beyond the interpreter's own):

    members per key  tuples (before)     inline+dict (this)  inline+set          linked lists
    1                1430/650 100 B 0    450/500 52 B 0      250/250 52 B 0      500/450 105 B 0
    2                850/580 54 B 0      920/340 138 B 0     580/260 134 B 100k  630/660 131 B 0
    3                1360/820 34 B 0     1230/560 88 B 0     610/470 85 B 67k    1800/1140 118 B 0
    all under one    30k keys: 23+38 s   320/700 52 B 0      490/630 42 B 0      1180/1710 157 B 0

At the tier (MemoryTier.put, URLs with one 4 KiB body): 150 us per put over the first 10k and
900 us by the 30,000th before; 1.6 us then 3.2 us by the 200,000th now (the same 13 key
operations per put throughout; the rest is memory growing).

"Linked lists" is the integer-id option: item keys threaded through `next`/`prev` dicts, so no
per-group container at all; it never needs the GC either, but costs two to three times the
memory and more dict operations per add. Sets beyond one are the fastest, but every set stays
tracked by the GC (100k sets with two Vary variants per URL), which is what the tuples were
there to avoid. Inline+dict costs memory only where an index key has several members (about
90 bytes per item key there, against entries of kilobytes) and keeps the GC's work flat.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

G = TypeVar("G", bound=Hashable)  # the index key
M = TypeVar("M", bound=Hashable)  # item keys (tuples) or url keys (str), never a dict


class KeyIndex(Generic[G, M]):
    """Index key -> the item keys filed under it: the one member inline, or a dict of them."""

    __slots__ = ("_by",)

    def __init__(self) -> None:
        self._by: dict[G, M | dict[M, None]] = {}

    def add(self, ikey: G, member: M) -> bool:
        """File `member` under `ikey`; True when `ikey` was not held before (what a caller
        asked `in` first for, one call less on every store)."""
        by = self._by
        held = by.get(ikey)
        if held is None:
            by[ikey] = member
            return True
        if isinstance(held, dict):
            held[member] = None
        elif held != member:
            by[ikey] = {held: None, member: None}
        return False

    def discard(self, ikey: G, member: M) -> None:
        by = self._by
        held = by.get(ikey)
        if held is None:
            return
        if isinstance(held, dict):
            held.pop(member, None)
            if len(held) == 1:
                # Back inline; finding the last one walks the slots the deletions left, once
                # per dict, so this stays O(1) amortised over those deletions.
                by[ikey] = next(iter(held))
        elif held == member:
            del by[ikey]

    def members(self, ikey: G) -> list[M]:
        """A copy (callers purge what they walk), in the order the members were added."""
        held = self._by.get(ikey)
        if held is None:
            return []
        if isinstance(held, dict):
            return list(held)
        return [held]

    def __contains__(self, ikey: object) -> bool:
        return ikey in self._by

    def __iter__(self) -> Iterator[G]:
        return iter(self._by)

    def __len__(self) -> int:
        """Index keys held."""
        return len(self._by)

    def count(self) -> int:
        """Item keys filed, over all index keys (O(index keys): for tests and reports)."""
        return sum(len(h) if isinstance(h, dict) else 1 for h in self._by.values())
