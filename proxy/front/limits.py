"""Every size limit and deadline the front enforces, in one frozen value.

The names carry their units (STYLE.md, habit 8). Defaults are safe for a public edge; the config
layer builds one of these from `limits:` and the front never reads config itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from proxy.rfc.target import MAX_TARGET_BYTES


@dataclass(frozen=True, slots=True)
class FrontLimits:
    max_request_line_bytes: int = 8192  # request-target length; over -> 414
    max_header_count: int = 100  # over -> 431
    max_header_bytes: int = 32 << 10  # sum of header names + values; over -> 431
    max_header_field_bytes: int = 8 << 10  # one field's name + value; over -> 431
    max_body_bytes: int = 100 << 20  # declared over -> 413 before reading; chunked over -> 413
    header_read_timeout_s: float = 10.0  # first byte of a request to end of its head -> 408
    body_read_timeout_s: float = 30.0  # longest silence while a request body is being read
    # A body trickled fast enough to beat the silence deadline still ends (issue 10): all of it
    # within this of the end of the head, and on average no slower than the minimum rate once
    # the grace has passed (0 disables the rate). Past either -> 408, or abort once answering.
    body_total_timeout_s: float = 300.0
    body_min_rate_bytes_per_s: int = 1024
    body_min_rate_grace_s: float = 10.0
    keepalive_timeout_s: float = 75.0  # idle between requests -> silent close
    lingering_close_timeout_s: float = 2.0  # after a closing answer, drain the client this long
    write_stall_timeout_s: float = 60.0  # client reads none of our answer this long -> abort
    max_pipelined_requests: int = 16  # parsed but unanswered requests; stop reading at this many
    body_buffer_high_bytes: int = 256 << 10  # unread request body buffered before reading pauses
    write_buffer_high_bytes: int = 256 << 10  # transport water marks for response backpressure
    write_buffer_low_bytes: int = 64 << 10
    max_connections: int = 0  # 0 = unlimited; beyond -> new connections closed at once
    # On the node's shared listen socket (proxy/front/accept.py): connections a worker accepts
    # each time it finds the socket readable (1 spreads a burst over the workers), how long a
    # worker over its share of the node's connections leaves a new one to the others, and how
    # long it stops accepting after running out of file descriptors or memory.
    accepts_per_loop_turn: int = 1
    accept_defer_s: float = 0.001
    accept_error_pause_s: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (value == 0 and f.name not in _ZERO_DISABLES):
                raise ValueError(f"limits.{f.name} must be positive, got {value!r}")
        if self.write_buffer_low_bytes > self.write_buffer_high_bytes:
            raise ValueError("limits.write_buffer_low_bytes exceeds write_buffer_high_bytes")
        if self.max_request_line_bytes > MAX_TARGET_BYTES:
            # Every target the front admits must be one the cache can key, read back from its
            # tiers and purge by URL (proxy.rfc.target refuses longer ones everywhere).
            raise ValueError(
                f"limits.max_request_line_bytes may be at most {MAX_TARGET_BYTES}, "
                f"got {self.max_request_line_bytes}"
            )

    @property
    def tick_s(self) -> float:
        """How often deadlines are swept: fine enough for the shortest timeout, at most 1 s."""
        shortest = min(
            self.header_read_timeout_s,
            self.body_read_timeout_s,
            self.body_total_timeout_s,
            self.body_min_rate_grace_s,
            self.keepalive_timeout_s,
            self.lingering_close_timeout_s,
            self.write_stall_timeout_s,
        )
        return min(1.0, max(0.005, shortest / 8))


_ZERO_DISABLES = frozenset({"max_connections", "body_min_rate_bytes_per_s", "accept_defer_s"})


class FrontTimeout(StrEnum):
    """Which deadline cut a request off: the `reason` label of edgeproxy_front_timeouts_total.
    The keep-alive and lingering-close deadlines end idle connections, not requests: not here."""

    HEAD = "head"  # header_read_timeout_s
    BODY_IDLE = "body-idle"  # body_read_timeout_s
    BODY_TOTAL = "body-total"  # body_total_timeout_s
    BODY_RATE = "body-rate"  # body_min_rate_bytes_per_s, after body_min_rate_grace_s
    WRITE_STALL = "write-stall"  # write_stall_timeout_s
