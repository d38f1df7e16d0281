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

A large object must be read more often to be adopted: after 1 + size / `ADOPT_BYTES_PER_READ`
(32 KiB) reads within the window, so one under 32 KiB on its second read as before, one of
100 KiB on its fifth. It evicts as many bytes as several small ones, each as likely to be read
again: replaying big-set's Zipf (30,000 objects of 4-100 KiB, a worker's 128 MiB L1, 600,000
draws, hit ratio after the first third) L1 answered 78.6% of requests with one read before as
the rule and 81.4% with this one (of bytes 78.0% and 79.3%; with 16 KiB a read 83.0% and
78.9%, with 64 KiB 79.8% and 78.6%): benchmarks/README.md, "Fewer trees per store".
"""

from __future__ import annotations

from collections.abc import Hashable

ADOPT_BYTES_PER_READ = 32 << 10  # one more read within the window per this many bytes


class Doorkeeper:
    def __init__(self, window_bytes: int, bytes_per_read: int = ADOPT_BYTES_PER_READ) -> None:
        self.window_bytes = max(1, window_bytes)
        self.bytes_per_read = max(1, bytes_per_read)
        # Reads of each key within this generation (carried over from the one before) and
        # the one before: swapped when this one's reads add up to the window, never swept.
        self._now: dict[Hashable, int] = {}
        self._before: dict[Hashable, int] = {}
        self._bytes = 0  # sizes of the reads in `_now`

    def seen_again(self, key: Hashable, size: int) -> bool:
        """Record a read of `key` (`size` bytes as stored in L1); True when it was read often
        enough within the window to adopt it (once before, one more time per
        `bytes_per_read` of its size)."""
        reads = self._now.get(key) or self._before.get(key, 0)
        if reads > size // self.bytes_per_read:
            return True
        self._bytes += size
        if self._bytes > self.window_bytes:
            self._before, self._now, self._bytes = self._now, {}, size
        self._now[key] = reads + 1
        return False

    def clear(self) -> None:
        self._now.clear()
        self._before.clear()
        self._bytes = 0
