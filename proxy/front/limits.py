"""Every size limit and deadline the front enforces, in one frozen value.

The names carry their units (STYLE.md, habit 8). Defaults are safe for a public edge; the config
layer builds one of these from `limits:` and the front never reads config itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class FrontLimits:
    max_request_line_bytes: int = 8192  # request-target length; over -> 414
    max_header_count: int = 100  # over -> 431
    max_header_bytes: int = 32 << 10  # sum of header names + values; over -> 431
    max_header_field_bytes: int = 8 << 10  # one field's name + value; over -> 431
    max_body_bytes: int = 100 << 20  # declared over -> 413 before reading; chunked over -> 413
    header_read_timeout_s: float = 10.0  # first byte of a request to end of its head -> 408
    body_read_timeout_s: float = 30.0  # longest silence while a request body is being read
    keepalive_timeout_s: float = 75.0  # idle between requests -> silent close
    lingering_close_timeout_s: float = 2.0  # after a closing answer, drain the client this long
    write_stall_timeout_s: float = 60.0  # client reads none of our answer this long -> abort
    max_pipelined_requests: int = 16  # parsed but unanswered requests; stop reading at this many
    body_buffer_high_bytes: int = 256 << 10  # unread request body buffered before reading pauses
    write_buffer_high_bytes: int = 256 << 10  # transport water marks for response backpressure
    write_buffer_low_bytes: int = 64 << 10
    max_connections: int = 0  # 0 = unlimited; beyond -> new connections closed at once

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0 or (value == 0 and f.name != "max_connections"):
                raise ValueError(f"limits.{f.name} must be positive, got {value!r}")
        if self.write_buffer_low_bytes > self.write_buffer_high_bytes:
            raise ValueError("limits.write_buffer_low_bytes exceeds write_buffer_high_bytes")

    @property
    def tick_s(self) -> float:
        """How often deadlines are swept: fine enough for the shortest timeout, at most 1 s."""
        shortest = min(
            self.header_read_timeout_s,
            self.body_read_timeout_s,
            self.keepalive_timeout_s,
            self.lingering_close_timeout_s,
            self.write_stall_timeout_s,
        )
        return min(1.0, max(0.005, shortest / 8))
