"""The coalescer with a leader that fetches in its own task (`begin` / `settle` /
`hand_over`, issue 18): followers get its outcome, its failure, or a handed-over fetch's;
a miss nobody follows makes no future at all."""

from __future__ import annotations

import asyncio
import gc

import pytest

from proxy.cache.coalesce import Coalescer


def coalescer() -> Coalescer[str]:
    return Coalescer(hit_for_miss_s=10, clock=lambda: 0.0)


async def test_followers_get_the_leaders_outcome() -> None:
    c = coalescer()
    lead = c.begin("k")
    assert c.inflight("k") is lead and lead.shared is None
    followers = [asyncio.ensure_future(c.follow(lead, 1.0)) for _ in range(3)]
    await asyncio.sleep(0)
    assert lead.shared is not None  # made by the first follower
    c.settle("k", lead, "done")
    assert c.inflight("k") is None
    assert await asyncio.gather(*followers) == ["done"] * 3
    assert c.waiters == 0


async def test_followers_get_the_leaders_exception() -> None:
    c = coalescer()
    lead = c.begin("k")
    follower = asyncio.ensure_future(c.follow(lead, 1.0))
    await asyncio.sleep(0)
    c.settle("k", lead, RuntimeError("broke"))
    with pytest.raises(RuntimeError, match="broke"):
        await follower


async def test_an_unfollowed_fetch_leaves_nothing(caplog: pytest.LogCaptureFixture) -> None:
    c = coalescer()
    lead = c.begin("k")
    c.settle("k", lead, RuntimeError("nobody saw this"))
    assert c.inflight("k") is None and lead.shared is None
    gc.collect()
    assert "never retrieved" not in caplog.text
    assert c.hand_over("j", c.begin("j"), lambda: asyncio.sleep(0, "x")) is None
    assert c.inflight("j") is None


async def test_a_cancelled_leader_hands_the_key_to_a_fetch_of_its_own() -> None:
    c = coalescer()
    lead = c.begin("k")
    followers = [asyncio.ensure_future(c.follow(lead, 1.0)) for _ in range(2)]
    await asyncio.sleep(0)
    started = 0

    async def again() -> str:
        nonlocal started
        started += 1
        await asyncio.sleep(0)
        return "again"

    task = c.hand_over("k", lead, again)
    assert task is not None and c.inflight("k") is task  # later misses join it
    late = asyncio.ensure_future(c.follow(task, 1.0))
    assert await asyncio.gather(*followers, late) == ["again"] * 3
    assert started == 1 and c.inflight("k") is None


async def test_followers_that_left_before_the_hand_over_start_no_fetch() -> None:
    c = coalescer()
    lead = c.begin("k")
    with pytest.raises(TimeoutError):
        await c.follow(lead, 0.001)
    assert c.hand_over("k", lead, lambda: asyncio.sleep(0, "x")) is None
    await asyncio.sleep(0)
    assert lead.shared is not None and lead.shared.cancelled() and c.inflight("k") is None
