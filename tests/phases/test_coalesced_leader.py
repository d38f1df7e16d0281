"""The leader of a coalesced miss fetches in its own task (issue 18: no task and no `shield`
per miss). What that must not change: followers share its one origin request; a leader
whose handler is cancelled mid-fetch (the front aborts the connection) strands none of them
and leaves nothing half stored; a leader that fails passes its failure on; a fetch nobody
followed leaves nothing behind in the coalescer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from proxy.origin.memory import MemoryResponse
from tests.phases.client import fetch, send, until

FRESH = [(b"Cache-Control", b"max-age=60")]


async def test_a_cancelled_leader_hands_its_followers_a_fetch_of_their_own(make_worker) -> None:
    release = asyncio.Event()

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        if len(w.origin.requests) == 1:
            await release.wait()  # the leader's request, held until it is cancelled
            return MemoryResponse(200, FRESH, b"never delivered")
        return MemoryResponse(200, FRESH, b"second")

    w = await make_worker(handler)
    leader = send(w)
    followers = [send(w) for _ in range(3)]
    await until(lambda: w.parts.stats.coalesced == 3)
    leader.conn.abort()  # the front cancels the leader's handler
    replies = [await f.reply() for f in followers]
    assert [(r.status, r.body) for r in replies] == [(200, b"second")] * 3
    assert all("collapsed" in r.cache_status for r in replies)
    assert len(w.origin.requests) == 2  # the cancelled one, and the one handed over
    release.set()
    again = await fetch(w)
    assert again.body == b"second" and "hit" in again.cache_status
    coalescer = w.parts.pipeline.coalescer
    assert not coalescer._inflight and coalescer.waiters == 0


async def test_a_cancelled_leader_without_followers_leaves_nothing(make_worker) -> None:
    release = asyncio.Event()

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        if len(w.origin.requests) == 1:
            await release.wait()
        return MemoryResponse(200, FRESH, b"body")

    w = await make_worker(handler)
    leader = send(w)
    await until(lambda: len(w.origin.requests) == 1)
    leader.conn.abort()
    await until(lambda: not w.parts.pipeline.coalescer._inflight)
    assert w.parts.memory.stats().objects == 0  # nothing half stored
    release.set()
    r = await fetch(w)
    assert (r.status, r.body) == (200, b"body") and "fwd=miss" in r.cache_status
    assert len(w.origin.requests) == 2


async def test_followers_share_the_leaders_unstored_answer_by_fetching_their_own(
    make_worker,
) -> None:
    """An answer that is not stored is the leader's to stream; followers go to the origin."""
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        if len(w.origin.requests) == 1:
            await release.wait()
        return MemoryResponse(200, [(b"Cache-Control", b"no-store")], body())

    w = await make_worker(handler)
    clients = [send(w) for _ in range(3)]
    await until(lambda: w.parts.stats.coalesced == 2)
    release.set()
    replies = [await c.reply() for c in clients]
    assert [(r.status, r.body) for r in replies] == [(200, b"streamed")] * 3
    assert len(w.origin.requests) == 3
    assert not w.parts.pipeline.coalescer._inflight


async def test_a_leader_whose_fetch_raises_gives_its_followers_the_failure(make_worker) -> None:
    release = asyncio.Event()

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        await release.wait()
        raise RuntimeError("origin client bug")

    w = await make_worker(handler)
    clients = [send(w) for _ in range(3)]
    await until(lambda: w.parts.stats.coalesced == 2)
    release.set()
    replies = [await c.reply() for c in clients]
    assert [r.status for r in replies] == [500] * 3
    assert len(w.origin.requests) == 1
    assert not w.parts.pipeline.coalescer._inflight
