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


def test_long_raw_targets_cannot_grow_the_memo_past_its_bytes() -> None:
    """Raw targets up to the request-line limit, any number of them getting one remembered
    answer (percent-encoded variants of one stored URL, URLs under a listed prefix): each
    table is emptied once its keys and answers pass `max_bytes`, whatever its entry count."""
    from proxy.phases.memo import KEY_OVERHEAD_BYTES, Remembered451

    memo = HotMemo(65536, lambda: NOW, lambda e: None, max_bytes=100_000)
    stored = entry("/a", b"body")
    answer = Remembered451(b"Content-Type: text/html\r\n", b"<p>451</p>" * 50, 0, 0)
    for i in range(200):
        long_target = b"/%61" + b"?" + b"x" * 8000 + b"%d" % i  # 8 KB: /a, encoded otherwise
        memo.remember_hit(long_target, b"example.com", stored)
        memo.remember_blocked(b"/blocked/" + b"y" * 8000 + b"%d" % i, b"example.com", answer)
        assert memo._hits.held <= 100_000 and memo._blocked.held <= 100_000
        assert len(memo._hits) <= 100_000 // (8000 + KEY_OVERHEAD_BYTES)
    assert memo.held_bytes() == memo._hits.held + memo._blocked.held > 0
    # The last remembered answers still stand; short targets fit thousands.
    assert memo.take_hit("GET", long_target, b"example.com") is not None
    assert memo.blocked(b"/blocked/" + b"y" * 8000 + b"199", b"example.com") is answer
    memo.clear()
    assert memo.held_bytes() == 0
    for i in range(300):
        memo.remember_hit(b"/s/%d" % i, b"example.com", stored)
    assert len(memo._hits) == 300


def test_the_byte_count_follows_what_is_dropped_and_replaced() -> None:
    """Keys remembered again, dropped when memory lets their entry go, or moved between the
    hit and node-reference tables, are counted once: the count is what the tables hold."""
    from proxy.phases.memo import KEY_OVERHEAD_BYTES, Remembered451

    memo = HotMemo(1000, lambda: NOW, lambda e: None, max_bytes=1 << 20)
    kept = entry("/k", b"k")
    for _ in range(5):
        memo.remember_hit(b"/k", b"example.com", kept)
    assert memo._hits.held == 2 + 11 + KEY_OVERHEAD_BYTES
    gone = entry("/g", b"g")
    memo.remember_hit(b"/g", None, gone)
    assert memo._hits.held == 2 * (2 + KEY_OVERHEAD_BYTES) + 11
    del gone
    gc.collect()
    assert memo.take_hit("GET", b"/g", None) is None  # dropped at its next request
    assert memo._hits.held == 2 + 11 + KEY_OVERHEAD_BYTES
    first = Remembered451(b"h" * 10, b"b" * 10, 0, 0)
    memo.remember_blocked(b"/x", None, first)
    memo.remember_blocked(b"/x", None, Remembered451(b"h" * 30, b"b" * 30, 0, 0))
    assert memo._blocked.held == 2 + KEY_OVERHEAD_BYTES + 60
