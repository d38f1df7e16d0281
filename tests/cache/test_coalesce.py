"""The coalescer on its own: one fetch per key, followers bounded, hit-for-miss expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.cache.coalesce import Coalescer


async def test_followers_share_one_fetch_and_survive_leader_cancel() -> None:
    c: Coalescer[str] = Coalescer(hit_for_miss_s=10, clock=lambda: 0.0)
    started = 0

    async def fetch() -> str:
        nonlocal started
        started += 1
        await asyncio.sleep(0.05)
        return "done"

    task = c.lead("k", fetch())
    assert c.inflight("k") is task
    leader = asyncio.ensure_future(asyncio.shield(task))
    followers = [asyncio.ensure_future(c.follow(task, 1.0)) for _ in range(3)]
    await asyncio.sleep(0)
    leader.cancel()
    assert await asyncio.gather(*followers) == ["done"] * 3
    assert started == 1 and c.inflight("k") is None and c.waiters == 0


async def test_follow_is_bounded() -> None:
    c: Coalescer[str] = Coalescer(hit_for_miss_s=10, clock=lambda: 0.0)
    task = c.lead("k", asyncio.sleep(1, "late"))
    with pytest.raises(TimeoutError):
        await c.follow(task, 0.01)
    task.cancel()


def test_hit_for_miss_expires() -> None:
    now = [0.0]
    c: Coalescer[str] = Coalescer(hit_for_miss_s=5, clock=lambda: now[0])
    c.mark_uncacheable("k")
    assert c.is_hit_for_miss("k")
    now[0] = 6.0
    assert not c.is_hit_for_miss("k")
    c.mark_uncacheable("k")
    c.clear_uncacheable("k")
    assert not c.is_hit_for_miss("k")


# -- issue 19: no cost that grows with the number of followers or remembered keys ----------


class CountingFuture(asyncio.Future[str]):
    """A fetch whose callback removals count the callbacks asyncio scans to find the one."""

    scanned = 0

    def remove_done_callback(self, fn: Any) -> int:
        CountingFuture.scanned += len(self._callbacks or ())
        return super().remove_done_callback(fn)


async def test_issue19_a_follower_leaving_costs_the_same_however_many_wait() -> None:
    """Followers that time out or lose their client leave one by one; with a callback on the
    fetch per follower, each departure scanned them all (20k followers: seconds of loop)."""
    c: Coalescer[str] = Coalescer(hit_for_miss_s=10, clock=lambda: 0.0)
    fetch = CountingFuture()
    followers = [asyncio.ensure_future(c.follow(fetch, 60)) for _ in range(20_000)]
    await asyncio.sleep(0)
    assert c.waiters == 20_000
    CountingFuture.scanned = 0
    for f in followers[:1_000]:
        f.cancel()
    await asyncio.gather(*followers[:1_000], return_exceptions=True)
    assert CountingFuture.scanned <= 1_000 * 4, CountingFuture.scanned
    assert c.waiters == 19_000
    fetch.set_result("done")
    assert await asyncio.gather(*followers[1_000:]) == ["done"] * 19_000
    assert c.waiters == 0


async def test_followers_share_the_fetchs_failure_and_its_cancellation() -> None:
    c: Coalescer[str] = Coalescer(hit_for_miss_s=10, clock=lambda: 0.0)
    failing: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    cancelled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    a = [asyncio.ensure_future(c.follow(failing, 1.0)) for _ in range(3)]
    b = [asyncio.ensure_future(c.follow(cancelled, 1.0)) for _ in range(3)]
    await asyncio.sleep(0)
    failing.set_exception(ConnectionResetError("origin"))
    cancelled.cancel()
    for f in a:
        with pytest.raises(ConnectionResetError):
            await f
    for f in b:
        with pytest.raises(asyncio.CancelledError):
            await f
    assert c.waiters == 0
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("early")
    assert await c.follow(done, 1.0) == "early"  # a fetch that ended before anyone followed


class CountingFloat(float):
    """The clock's reading: counts every comparison made against it."""

    compared = 0

    def _count(self, other: object) -> None:
        CountingFloat.compared += 1
        if CountingFloat.compared > 1_000_000:
            raise AssertionError("hit-for-miss bookkeeping compares per mark with every key")

    def __lt__(self, other: object) -> bool:
        self._count(other)
        return float(self) < other  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        self._count(other)
        return float(self) <= other  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        self._count(other)
        return float(self) > other  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        self._count(other)
        return float(self) >= other  # type: ignore[operator]


def test_issue19_marking_uncacheable_costs_the_same_with_100k_keys_remembered() -> None:
    """Past 100k remembered keys every mark walked them all to find the lapsed ones."""
    now = [CountingFloat(0.0)]
    c: Coalescer[str] = Coalescer(hit_for_miss_s=600, clock=lambda: now[0])
    counts = []
    for chunk in range(12):
        before = CountingFloat.compared
        for i in range(chunk * 10_000, (chunk + 1) * 10_000):
            c.mark_uncacheable(f"k{i}")
        counts.append(CountingFloat.compared - before)
    assert counts[-1] <= counts[0] * 1.25 + 100, counts
    # Bounded: the oldest marks gave way; the newest are remembered.
    assert c.is_hit_for_miss("k119999") and not c.is_hit_for_miss("k0")
    assert c.remembered_uncacheable <= 100_000


def test_lapsed_hit_for_miss_marks_are_dropped_as_new_ones_come() -> None:
    now = [0.0]
    c: Coalescer[str] = Coalescer(hit_for_miss_s=5, clock=lambda: now[0])
    for i in range(1_000):
        c.mark_uncacheable(i)
    now[0] = 3.0
    c.mark_uncacheable(0)  # marked again: remembered until 8
    now[0] = 5.5
    c.mark_uncacheable("new")
    assert c.remembered_uncacheable == 2
    assert c.is_hit_for_miss(0) and c.is_hit_for_miss("new") and not c.is_hit_for_miss(1)


def test_marks_lapse_as_when_every_mark_looked_at_the_old_end() -> None:
    """`mark_uncacheable` looks at the old end only once something there can have lapsed
    (issue 18): over random marks, clears, lookups and clock steps, what is remembered is what
    looking every time remembered."""
    import random
    from collections import OrderedDict

    from proxy.cache.coalesce import MARK_OVERHEAD_BYTES

    rng = random.Random(18)
    now = [0.0]
    c: Coalescer[int] = Coalescer(hit_for_miss_s=5, clock=lambda: now[0])
    ref: OrderedDict[int, float] = OrderedDict()
    for _ in range(20000):
        op, key = rng.random(), rng.randrange(50)
        if op < 0.5:
            c.mark_uncacheable(key)
            ref[key] = now[0] + 5
            ref.move_to_end(key)
            while ref and next(iter(ref.values())) <= now[0]:
                ref.popitem(last=False)
        elif op < 0.6:
            c.clear_uncacheable(key)
            ref.pop(key, None)
        elif op < 0.8:
            assert c.is_hit_for_miss(key) == (key in ref and now[0] < ref[key])
            if key in ref and now[0] >= ref[key]:
                del ref[key]
        else:
            now[0] += rng.choice([0.0, 0.1, 1.0, 3.0, 7.0])
        assert {k: held[0] for k, held in c._hit_for_miss.items()} == dict(ref)
        assert c.mark_bytes == len(ref) * MARK_OVERHEAD_BYTES  # the count follows every change


def test_marks_are_bounded_in_the_bytes_of_their_keys_too() -> None:
    """A mark's key holds the request's target, up to the request-line limit, and a client can
    make a new one with every request: the marks hold at most `max_mark_bytes` of keys (the
    oldest give way), and the count follows marks replaced, cleared, lapsed or pushed out."""
    from proxy.cache.coalesce import MARK_OVERHEAD_BYTES

    now = [0.0]
    c: Coalescer[str] = Coalescer(
        hit_for_miss_s=5, clock=lambda: now[0], max_mark_bytes=100_000, key_bytes=len
    )
    for i in range(100):
        c.mark_uncacheable(f"/{i}/" + "x" * 8000)
        assert c.mark_bytes <= 100_000
    assert c.remembered_uncacheable == 100_000 // (8004 + MARK_OVERHEAD_BYTES)
    assert c.is_hit_for_miss("/99/" + "x" * 8000) and not c.is_hit_for_miss("/0/" + "x" * 8000)
    held = c.mark_bytes
    c.mark_uncacheable("/99/" + "x" * 8000)  # marked again: counted once
    assert c.mark_bytes == held
    c.clear_uncacheable("/99/" + "x" * 8000)
    assert c.mark_bytes == held - 8004 - MARK_OVERHEAD_BYTES
    now[0] = 6.0
    c.mark_uncacheable("short")  # every other mark has lapsed
    assert c.remembered_uncacheable == 1 and c.mark_bytes == 5 + MARK_OVERHEAD_BYTES
    few: Coalescer[str] = Coalescer(hit_for_miss_s=5, clock=lambda: 0.0, max_marks=3)
    for k in "abcde":
        few.mark_uncacheable(k)
    assert few.remembered_uncacheable == 3 and few.is_hit_for_miss("e")
