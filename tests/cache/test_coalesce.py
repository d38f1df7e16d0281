"""The coalescer on its own: one fetch per key, followers bounded, hit-for-miss expiry."""

from __future__ import annotations

import asyncio

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
