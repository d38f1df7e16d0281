"""Request coalescing (a "cache lock" in Pingora, "busy objects" in Varnish): concurrent misses
for one key make one origin request. Responses found uncacheable are remembered for a while
(hit-for-miss) so later requests do not queue behind a fetch whose result they could never
share.

The leader runs the fetch itself, in its own task (`begin` / `settle`): followers wait on a
plain future the table holds for the key. A task of its own and `asyncio.shield` for every
miss cost a cold miss ~6 µs and a loop turn (issue 18), for the rare leader that is
cancelled (the front cancels a handler only when it aborts the connection: a write stall,
a body cut off, a drain that timed out; a client that merely disconnects is not a
cancellation). Such a leader hands the key over (`hand_over`): when followers wait, a new
fetch starts as its own task and they get its outcome, so none of them is cancelled or
stranded (the origin sees the request again); with nobody waiting, nothing is left behind.
A fetch that is not a request's (a stale-while-revalidate refresh) runs as a task (`lead`).

Nothing here costs more per request as followers or remembered keys pile up (issue 19): a
follower waits on a future of its own, so leaving is one dict deletion (`asyncio.shield` per
follower put a callback per follower on the fetch, and asyncio scans them all to remove one:
20k followers leaving blocked the loop 4.5 s); hit-for-miss marks are kept oldest first and
lapse from that end, at most `max_marks` of them and `max_mark_bytes` of keys (the oldest give
way beyond: the cost is only a request coalescing where it need not have). The bytes matter
because a key holds the request's target, up to the request-line limit, and a client can make
a new one with every request to an origin that answers them uncacheable: 100,000 marks of 8 KB
targets would have held ~800 MB a worker.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_HIT_FOR_MISS = 100_000
MAX_HIT_FOR_MISS_BYTES = 32 << 20
MARK_OVERHEAD_BYTES = 150  # the ordered dict's node, the float and the tuple besides the key


class Leading(Generic[T]):
    """A fetch its leader runs itself (`Coalescer.begin`). The future followers wait on is
    made by the first follower: a miss nobody joins makes none (each
    `asyncio.get_running_loop()` costs a getpid(2) system call on Python 3.11)."""

    __slots__ = ("shared",)

    def __init__(self) -> None:
        self.shared: asyncio.Future[T] | None = None


class Coalescer(Generic[T]):
    def __init__(
        self,
        *,
        hit_for_miss_s: float,
        clock: Callable[[], float],
        max_marks: int = MAX_HIT_FOR_MISS,
        max_mark_bytes: int = MAX_HIT_FOR_MISS_BYTES,
        key_bytes: Callable[[Any], int] = lambda key: 0,
    ) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T] | Leading[T]] = {}
        self._followers: dict[asyncio.Future[T], dict[asyncio.Future[T], None]] = {}
        # key -> (until, bytes held), oldest first: one clock and one duration, so `until`
        # ascends.
        self._hit_for_miss: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()
        self._hit_for_miss_s = hit_for_miss_s
        self._max_marks = max_marks
        self._max_mark_bytes = max_mark_bytes
        self._key_bytes = key_bytes  # what a key holds (the caller knows its shape)
        self.mark_bytes = 0  # held by the marks
        # No mark lapses before this time: at most the oldest mark's `until` (marks only
        # leave, or move to the new end with a later one), so until then `mark_uncacheable`
        # need not look at the old end.
        self._lapse_at = 0.0
        self._clock = clock
        self.waiters = 0  # followers currently waiting

    def inflight(self, key: Hashable) -> asyncio.Future[T] | Leading[T] | None:
        return self._inflight.get(key)

    def is_hit_for_miss(self, key: Hashable) -> bool:
        held = self._hit_for_miss.get(key)
        if held is None:
            return False
        if self._clock() < held[0]:
            return True
        del self._hit_for_miss[key]
        self.mark_bytes -= held[1]
        return False

    def mark_uncacheable(self, key: Hashable) -> None:
        if self._hit_for_miss_s <= 0:
            return
        now = self._clock()
        marks = self._hit_for_miss
        held = marks.get(key)
        if held is None:
            size = self._key_bytes(key) + MARK_OVERHEAD_BYTES
            self.mark_bytes += size
        else:
            size = held[1]  # every pass-through re-marks its key: counted once
        marks[key] = (now + self._hit_for_miss_s, size)
        marks.move_to_end(key)
        # Each mark leaves once, from the old end: O(1) amortised per mark.
        while len(marks) > self._max_marks or self.mark_bytes > self._max_mark_bytes:
            self.mark_bytes -= marks.popitem(last=False)[1][1]
        if now < self._lapse_at:
            return  # nothing can have lapsed yet: every pass-through re-marks its key
        while marks:
            oldest = next(iter(marks))
            until, size = marks[oldest]
            if until > now:
                self._lapse_at = until
                break
            del marks[oldest]
            self.mark_bytes -= size

    def clear_uncacheable(self, key: Hashable) -> None:
        held = self._hit_for_miss.pop(key, None)
        if held is not None:
            self.mark_bytes -= held[1]

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

    def begin(self, key: Hashable) -> Leading[T]:
        """The caller fetches `key` itself; followers wait on the handle returned, which the
        caller must `settle` (or `hand_over`) in every case."""
        lead: Leading[T] = Leading()
        self._inflight[key] = lead
        return lead

    def settle(self, key: Hashable, lead: Leading[T], outcome: T | BaseException) -> None:
        """The leader's fetch ended with `outcome` (a result or the exception it raised): out
        of the table, and to every follower that came (none came: nothing to do, and no
        exception is left unretrieved)."""
        if self._inflight.get(key) is lead:
            del self._inflight[key]
        shared = lead.shared
        if shared is None or shared.done():
            return
        if isinstance(outcome, BaseException):
            shared.set_exception(outcome)
        else:
            shared.set_result(outcome)

    def hand_over(
        self,
        key: Hashable,
        lead: Leading[T],
        fetch: Callable[[], Coroutine[Any, Any, T]],
    ) -> asyncio.Task[T] | None:
        """The leader was cancelled mid-fetch: its followers (if any still wait) get the
        outcome of a new fetch (`fetch()`), run as its own task and led for the key (the
        task is returned; None when nobody waits)."""
        if self._inflight.get(key) is lead:
            del self._inflight[key]
        shared = lead.shared
        if shared is None or shared.done():
            return None
        if not self._followers.get(shared):
            shared.cancel()  # followers that left already; settles their table entry
            return None
        task = self.lead(key, fetch())
        task.add_done_callback(lambda t: _pass_on(t, shared))
        return task

    async def follow(self, fetch: asyncio.Future[T] | Leading[T], timeout_s: float) -> T:
        """Wait for another request's fetch (bounded). Cancelling the waiter never cancels it."""
        self.waiters += 1
        try:
            loop = asyncio.get_running_loop()
            if isinstance(fetch, Leading):
                if fetch.shared is None:
                    fetch.shared = loop.create_future()
                task = fetch.shared
            else:
                task = fetch
            if task.done():
                return task.result()
            waiter: asyncio.Future[T] = loop.create_future()
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
            _pass_on(task, waiter)


def _pass_on(done: asyncio.Future[T], waiter: asyncio.Future[T]) -> None:
    """What `done` ended with (result, exception or cancellation), to `waiter` if it waits."""
    if waiter.done():
        return
    if done.cancelled():
        waiter.cancel()
    elif (exc := done.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(done.result())
