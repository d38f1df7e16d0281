"""Issue 19, the hot memo: bounded in entries and in the bytes of the entries it remembers, so
targets asked for once cannot pin evicted bodies beyond a quarter of the memory tier."""

from __future__ import annotations

from proxy.cache.entry import Entry
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


def test_the_memo_is_emptied_past_its_bytes() -> None:
    memo = HotMemo(1000, lambda: NOW, lambda e: None, max_bytes=10_000)
    entries = fill(memo, 25, 1_000)
    # emptied at the 11th and the 21st: the last five are held, never more than ten
    assert remembered(memo, entries) == [20, 21, 22, 23, 24]


def test_the_memo_is_emptied_past_its_entries() -> None:
    memo = HotMemo(8, lambda: NOW, lambda e: None)
    entries = fill(memo, 12, 100_000)
    assert remembered(memo, entries) == [8, 9, 10, 11]


def test_a_blocklist_swap_restarts_the_byte_count() -> None:
    memo = HotMemo(1000, lambda: NOW, lambda e: None, max_bytes=10_000)
    fill(memo, 9, 1_000)
    memo.clear()
    entries = fill(memo, 10, 1_000)
    assert remembered(memo, entries) == list(range(10))


def test_the_worker_bounds_its_memo_by_a_quarter_of_its_memory_tier() -> None:
    from proxy.config import Config
    from proxy.state import build_worker

    cfg = Config()
    parts = build_worker(cfg)
    assert parts.pipeline.memo.max_bytes == parts.pipeline.memory.max_bytes // 4
