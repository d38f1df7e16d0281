"""Which node-tier reads a worker adopts into its memory tier (L1): those read again within
about one L1's worth of node-tier reads, a doorkeeper as in TinyLFU.

Adopting every read (as before) cost a node-tier hit its eviction from L1 and the indexes of
both entries, 10% of its CPU, and with a working set larger than L1 bought nothing: an object
whose next read comes after more than an L1's worth of other reads has left the LRU by then.
So an object is adopted when its previous read was within the window (two generations of
keys, each closed once its reads add up to the L1's bytes); until then it is answered from the
node tier, and the memo keeps a reference to the node-tier item rather than the entry
(`TieredCache.node_ref`). Each generation holds at most as many keys as L1 holds entries of
the same sizes, so this costs less memory than L1 itself; no scan, O(1) per read.
"""

from __future__ import annotations

from collections.abc import Hashable


class Doorkeeper:
    def __init__(self, window_bytes: int) -> None:
        self.window_bytes = max(1, window_bytes)
        self._now: set[Hashable] = set()
        self._before: set[Hashable] = set()
        self._bytes = 0  # sizes of the reads in `_now`

    def seen_again(self, key: Hashable, size: int) -> bool:
        """Record a read of `key` (`size` bytes as stored in L1); True when its previous read
        was within the window (adopt it)."""
        if key in self._now or key in self._before:
            return True
        self._bytes += size
        if self._bytes > self.window_bytes:
            self._before, self._now, self._bytes = self._now, set(), size
        self._now.add(key)
        return False

    def clear(self) -> None:
        self._now.clear()
        self._before.clear()
        self._bytes = 0
