"""Per-client-address rate limits: public form posts and failed sign-ins.

A fixed window per address, counted in memory (one process serves the desk). The number of
addresses tracked is bounded (`rate_limit_max_addresses`): past it the least recently seen is
forgotten, so a flood of addresses costs bounded memory rather than unbounded. Time is injected.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class RateLimit:
    def __init__(
        self, max_events: int, window_s: float, max_addresses: int, clock: Callable[[], float]
    ) -> None:
        self.max_events = max_events
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def _current(self, address: str) -> tuple[float, int]:
        now = self.clock()
        start, count = self._windows.get(address, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        return start, count

    def retry_after_s(self, address: str) -> float:
        """0 if `address` may act now, else the seconds until its window resets."""
        start, count = self._current(address)
        if count < self.max_events:
            return 0.0
        return max(0.0, start + self.window_s - self.clock())

    def hit(self, address: str) -> None:
        start, count = self._current(address)
        self._windows[address] = (start, count + 1)
        self._windows.move_to_end(address)
        while len(self._windows) > self.max_addresses:
            self._windows.popitem(last=False)

    def clear(self, address: str) -> None:
        self._windows.pop(address, None)
