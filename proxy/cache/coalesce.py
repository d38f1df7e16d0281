"""Request coalescing (a "cache lock" in Pingora, "busy objects" in Varnish): concurrent misses
for one key make one origin request. The fetch runs as its own task, so a leader whose client
goes away does not strand the followers waiting on the same result. Responses found
uncacheable are remembered for a while (hit-for-miss) so later requests do not queue behind
a fetch whose result they could never share.

Nothing here costs more per request as followers or remembered keys pile up (issue 19): a
follower waits on a future of its own, so leaving is one dict deletion (`asyncio.shield` per
follower put a callback per follower on the fetch, and asyncio scans them all to remove one:
20k followers leaving blocked the loop 4.5 s); hit-for-miss marks are kept oldest first and
lapse from that end, at most `MAX_HIT_FOR_MISS` of them (the oldest give way beyond: the cost
is only a request coalescing where it need not have).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_HIT_FOR_MISS = 100_000


class Coalescer(Generic[T]):
    def __init__(self, *, hit_for_miss_s: float, clock: Callable[[], float]) -> None:
        self._inflight: dict[Hashable, asyncio.Task[T]] = {}
        self._followers: dict[asyncio.Future[T], dict[asyncio.Future[T], None]] = {}
        # key -> until, oldest first: one clock and one duration, so `until` ascends.
        self._hit_for_miss: OrderedDict[Hashable, float] = OrderedDict()
        self._hit_for_miss_s = hit_for_miss_s
        self._clock = clock
        self.waiters = 0  # followers currently waiting

    def inflight(self, key: Hashable) -> asyncio.Task[T] | None:
        return self._inflight.get(key)

    def is_hit_for_miss(self, key: Hashable) -> bool:
        until = self._hit_for_miss.get(key)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._hit_for_miss[key]
        return False

    def mark_uncacheable(self, key: Hashable) -> None:
        if self._hit_for_miss_s <= 0:
            return
        now = self._clock()
        marks = self._hit_for_miss
        marks[key] = now + self._hit_for_miss_s
        marks.move_to_end(key)
        # Each mark leaves once, from the old end: O(1) amortised per mark.
        if len(marks) > MAX_HIT_FOR_MISS:
            marks.popitem(last=False)
        while marks:
            oldest = next(iter(marks))
            if marks[oldest] > now:
                break
            del marks[oldest]

    def clear_uncacheable(self, key: Hashable) -> None:
        self._hit_for_miss.pop(key, None)

    @property
    def remembered_uncacheable(self) -> int:
        """Keys marked uncacheable and not yet seen to lapse."""
        return len(self._hit_for_miss)

    def lead(self, key: Hashable, fetch: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start the one fetch for `key`; it is removed from the table when it finishes."""
        task = asyncio.ensure_future(fetch)
        self._inflight[key] = task

        def done(t: asyncio.Task[T]) -> None:
            if self._inflight.get(key) is t:
                del self._inflight[key]
            if not t.cancelled():
                t.exception()  # retrieved here so an unawaited failure is not logged as lost

        task.add_done_callback(done)
        return task

    async def follow(self, task: asyncio.Future[T], timeout_s: float) -> T:
        """Wait for another request's fetch (bounded). Cancelling the waiter never cancels it."""
        self.waiters += 1
        try:
            if task.done():
                return task.result()
            waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            followers = self._followers.get(task)
            if followers is None:
                followers = self._followers[task] = {}
                task.add_done_callback(self._settle)
            followers[waiter] = None
            try:
                async with asyncio.timeout(timeout_s):
                    return await waiter
            finally:
                del followers[waiter]
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()  # retrieved, also when this follower left first
        finally:
            self.waiters -= 1

    def _settle(self, task: asyncio.Future[T]) -> None:
        """The fetch ended: every follower still waiting gets its outcome."""
        for waiter in self._followers.pop(task, ()):
            if waiter.done():
                continue
            if task.cancelled():
                waiter.cancel()
            elif (exc := task.exception()) is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(task.result())
