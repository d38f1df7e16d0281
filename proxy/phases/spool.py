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

import tempfile
from dataclasses import dataclass, field

from proxy.blocklist.digest import IdentityHasher
from proxy.front.api import Responder
from proxy.origin import OriginError, OriginFailure, UpstreamResponse

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

    def take_over(self, earlier: Spooled | None) -> None:
        """Hold what an earlier spool of the same body held (its bytes are this one's prefix),
        so one release gives back both."""
        if earlier is not None:
            self.held += earlier.held
            earlier.held = 0

    def release(self) -> None:
        """Give the bytes back (idempotent): the answer went out, or the entry holds them."""
        if self._budget is not None and self.held:
            self._budget.give_back(self.held)
            self.held = 0


def spool_whole(
    up: UpstreamResponse, limit_bytes: int, budget: BodyBudget, prefix: bytes = b""
) -> Spooled | None:
    """`spool`'s answer when all of the body has arrived already (a small answer: one read)
    and fits: held as `spool`'s steps would hold it, with no coroutine (over the budget, the
    answer ends here as there). None: the body must be read, `spool`."""
    rest = up.body_if_whole(limit_bytes - len(prefix))
    if rest is None:
        return None
    budget.take(len(rest))
    return Spooled(prefix + rest if prefix else rest, True, len(rest), budget)


async def spool(
    up: UpstreamResponse, limit_bytes: int, budget: BodyBudget, prefix: bytes = b""
) -> Spooled:
    """Read `up`'s body while it fits `limit_bytes` (after `prefix`, already read and already
    held by the caller). Complete: the whole body; else what was read, past the limit."""
    whole = spool_whole(up, limit_bytes, budget, prefix)
    if whole is not None:
        return whole
    out = Spooled(_budget=budget)
    size = len(prefix)
    parts = [prefix] if prefix else []
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


class DiskSpool:
    """A body too large for the memory spool, held in an unlinked temporary file until it has
    been judged whole (blocklist.oversize_policy = "spool-disk"): nothing of it goes out before
    its identity digest is known, so a listed large body (a video, an archive) is never
    delivered, not even once. Writes go to the page cache from the event loop; the file is
    gone when closed (or when the process dies)."""

    def __init__(self, directory: str | None) -> None:
        self.file = tempfile.TemporaryFile(dir=directory or None)
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    async def fill(
        self,
        up: UpstreamResponse,
        first: bytes,
        hasher: IdentityHasher,
        max_bytes: int,
    ) -> None:
        """`first` (the memory spool), then the rest of `up`'s body, hashed on the way; over
        `max_bytes` it raises. Whether the hasher's failures (undecodable, a bomb) refuse the
        body is the caller's decision, on the result."""
        self._take(first, hasher, max_bytes)
        async for chunk in up.chunks():
            # Read to the end even once the hasher has failed: under unknown_coding_policy
            # "raw-only" such a body is still delivered, and it must go out whole.
            self._take(chunk, hasher, max_bytes)
        self.file.seek(0)

    def _take(self, chunk: bytes, hasher: IdentityHasher, max_bytes: int) -> None:
        if self.size + len(chunk) > max_bytes:
            raise OriginError(
                OriginFailure.PROTOCOL,
                f"body over blocklist.disk_spool_max_bytes ({max_bytes}): cannot be judged",
            )
        hasher.update(chunk)
        self.write(chunk)

    async def send(self, responder: Responder, chunk_bytes: int = 256 << 10) -> int:
        """The judged body to the client, in chunks (each write waits for the client)."""
        sent = 0
        while data := self.file.read(chunk_bytes):
            await responder.write(data)
            sent += len(data)
        return sent

    def close(self) -> None:
        self.file.close()
