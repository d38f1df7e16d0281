"""Request coalescing (a "cache lock" in Pingora, "busy objects" in Varnish): concurrent misses
for one key make one origin request. The fetch runs as its own task, so a leader whose client
goes away does not strand the followers waiting on the same result. Responses found
uncacheable are remembered for a while (hit-for-miss) so later requests do not queue behind
a fetch whose result they could never share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self, *, hit_for_miss_s: float, clock: Callable[[], float]) -> None:
        self._inflight: dict[Hashable, asyncio.Task[T]] = {}
        self._hit_for_miss: dict[Hashable, float] = {}
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
        if self._hit_for_miss_s > 0:
            if len(self._hit_for_miss) > 100_000:
                self._expire_hit_for_miss()
            self._hit_for_miss[key] = self._clock() + self._hit_for_miss_s

    def clear_uncacheable(self, key: Hashable) -> None:
        self._hit_for_miss.pop(key, None)

    def _expire_hit_for_miss(self) -> None:
        now = self._clock()
        for k in [k for k, until in self._hit_for_miss.items() if until <= now]:
            del self._hit_for_miss[k]

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

    async def follow(self, task: asyncio.Task[T], timeout_s: float) -> T:
        """Wait for another request's fetch (bounded). Cancelling the waiter never cancels it."""
        self.waiters += 1
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(task)
        finally:
            self.waiters -= 1
