"""Issue 19, the hot memo: bounded in entries, and holding no body the memory tier has let go
(entries are remembered by weak reference), so targets asked for once cannot pin evicted bodies;
issue 11: nor is it emptied by the bytes it remembers, so it covers all that memory holds."""

from __future__ import annotations

import gc
import weakref

from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.phases.memo import HotMemo
from tests.cache.test_shared import NOW, entry


def remembered(memo: HotMemo, entries: list[Entry]) -> list[int]:
    """Indices of the entries the memo still answers for."""
    return [
        i
        for i, e in enumerate(entries)
        if memo.take_hit("GET", e.target.raw_path_query, b"example.com") is not None
    ]


def fill(memo: HotMemo, n: int, size: int) -> list[Entry]:
    entries = []
    for i in range(n):
        e = entry(f"/m/{i}", b"%d" % i)
        e.size = size
        memo.remember_hit(e.target.raw_path_query, b"example.com", e)
        entries.append(e)
    return entries


def test_the_memo_is_emptied_past_its_entries() -> None:
    memo = HotMemo(8, lambda: NOW, lambda e: None)
    entries = fill(memo, 12, 100_000)
    assert remembered(memo, entries) == [8, 9, 10, 11]


def test_the_memo_holds_every_entry_memory_holds_whatever_their_bytes() -> None:
    memo = HotMemo(1000, lambda: NOW, lambda e: None)
    entries = fill(memo, 100, 1 << 20)  # 100 MiB of bodies: memory holds them, so may the memo
    assert remembered(memo, entries) == list(range(100))


def test_an_entry_memory_let_go_is_not_kept_by_the_memo() -> None:
    """65,536 targets asked for once could pin 65,536 evicted bodies, several times the
    memory tier's own bound: once memory lets an entry go, nothing here keeps its body."""
    memory = MemoryTier(10_000, 10_000)
    memo = HotMemo(1000, lambda: NOW, lambda e: None)
    gone = []
    for i in range(50):
        e = entry(f"/e/{i}", b"x" * 1000)
        assert memory.put(e)
        memo.remember_hit(e.target.raw_path_query, b"example.com", e)
        gone.append(weakref.ref(e))
    del e
    gc.collect()
    held = [i for i, r in enumerate(gone) if r() is not None]
    assert len(held) == memory.stats().objects and len(held) < 10  # those memory holds
