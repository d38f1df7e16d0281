"""The spool: origin body bytes held back before delivery, within a byte budget.

A body that may be stored, or that fits `blocklist.hash_spool_max_bytes`, is read whole and
judged against the blocklist's digests before its first byte goes out (issue 3). Without a
bound, N concurrent misses hold N spools at once. Every spooled byte is therefore taken from
the worker's `BodyBudget` (its share of `cache.inflight_body_bytes`, the node's total: the
workers' shares never add up to more) before it is read, and given back when the answer has
been delivered or stored. A read the budget cannot cover ends the exchange with 503 and
`Retry-After` (`OverBudget`): the body was not judged, so it is never delivered.

Unknown lengths are read in doubling steps (256 KiB, 512 KiB, …), so a reservation is never
much larger than what arrives and a large body is joined O(log n) times, not once per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.origin import UpstreamResponse

FIRST_STEP_BYTES = 256 << 10


class OverBudget(Exception):
    """The worker's in-flight body budget cannot cover this read."""


class BodyBudget:
    """Bytes of origin bodies this worker holds before delivery. Plain integers: one worker
    is one thread, and the check costs two comparisons per read step."""

    __slots__ = ("max_bytes", "used")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.max_bytes:
            raise OverBudget(f"{self.used} of {self.max_bytes} in-flight body bytes in use")
        self.used += n

    def give_back(self, n: int) -> None:
        self.used -= n


@dataclass(slots=True)
class Spooled:
    """What was read ahead: the body (whole when `complete`), and the budget it holds."""

    body: bytes = b""
    complete: bool = False
    held: int = 0
    _budget: BodyBudget | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the bytes back (idempotent): the answer went out, or the entry holds them."""
        if self._budget is not None and self.held:
            self._budget.give_back(self.held)
            self.held = 0


async def spool(
    up: UpstreamResponse, limit_bytes: int, budget: BodyBudget, prefix: bytes = b""
) -> Spooled:
    """Read `up`'s body while it fits `limit_bytes` (after `prefix`, already read and already
    held by the caller). Complete: the whole body; else what was read, past the limit."""
    out = Spooled(_budget=budget)
    parts = [prefix] if prefix else []
    size = len(prefix)
    known = up.content_length
    step = known - size if known is not None and known <= limit_bytes else FIRST_STEP_BYTES
    try:
        while True:
            want = max(0, min(step, limit_bytes - size))
            budget.take(want)
            out.held += want
            data, complete = await up.read_up_to(want)
            extra = len(data) - want  # a socket read may end past the step: hold that too
            budget.used += extra
            out.held += extra
            if data:
                parts.append(data)
                size += len(data)
            # At the limit and not complete: more is coming (a socket client returns past the
            # limit, an in-memory one exactly at it), so it does not fit.
            if complete or size >= limit_bytes:
                break
            step *= 2
    except BaseException:
        out.release()
        raise
    out.body = parts[0] if len(parts) == 1 else b"".join(parts)
    out.complete = complete
    return out
