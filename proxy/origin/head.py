"""Limits on an origin's response head (issue 10, "Upstream hygiene"). A head over any of them is
refused as `OriginError(PROTOCOL)` (502, Cache-Status detail `origin-protocol`): its connection
is closed, never pooled, and nothing of it is stored or relayed.

What counts, as the front counts request heads (`proxy.front.limits`):

- `max_response_header_count`: fields in the head;
- `max_response_header_field_bytes`: one field's name + value as the parser hands them over;
  the reason phrase of the status line is held to it too;
- `max_response_header_bytes`: the names + values of all its fields.

Names + values rather than the head's size on the wire: that is what is kept, stored and
relayed, and llhttp does not say where in a read a head ends, so a wire size could not be
checked exactly. Bytes on the wire are bounded all the same: a client that sees the head as it
arrives (`proxy.origin.h1`) refuses it once `stall_bytes` have come without completing a field
or a piece of the status line, so a head that never ends (one field, or a run of whitespace,
that never completes) costs that much and at most one read more, and fields trickled in
forever are cut at the count; either fails at once, not at `first_byte_timeout_s`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.config import OriginConfig
from proxy.origin.errors import OriginError, OriginFailure

# A field line beyond its name + value (": ", CRLF, whitespace around the value), or the status
# line before its reason phrase ("HTTP/1.1 200 "), with room for generous whitespace.
_LINE_OVERHEAD_BYTES = 256


@dataclass(frozen=True, slots=True)
class ResponseHeadLimits:
    header_bytes: int = 64 << 10
    header_count: int = 128
    field_bytes: int = 16 << 10

    @classmethod
    def from_config(cls, cfg: OriginConfig) -> ResponseHeadLimits:
        return cls(
            cfg.max_response_header_bytes,
            cfg.max_response_header_count,
            cfg.max_response_header_field_bytes,
        )

    @property
    def stall_bytes(self) -> int:
        """The most bytes a head within the limits sends without completing anything: one
        field line (llhttp reports a reason phrase piece by piece, a field only once whole)."""
        return self.field_bytes + _LINE_OVERHEAD_BYTES

    def over(self, field_size: int) -> OriginError:
        """The refusal of a head whose latest field, of `field_size` bytes, is too large or
        takes its fields over `header_bytes`."""
        if field_size > self.field_bytes:
            return _refused(
                f"a field of {field_size} bytes, over {self.field_bytes} "
                "(max_response_header_field_bytes)"
            )
        return _refused(f"fields over {self.header_bytes} bytes in all (max_response_header_bytes)")

    def too_many_fields(self) -> OriginError:
        return _refused(f"more than {self.header_count} fields (max_response_header_count)")

    def reason_too_long(self) -> OriginError:
        return _refused(
            f"a reason phrase over {self.field_bytes} bytes (max_response_header_field_bytes)"
        )

    def line_too_long(self) -> OriginError:
        """Where the parser does not say which (aiohttp's LineTooLong)."""
        return _refused(
            f"a field or reason phrase over {self.field_bytes} bytes "
            "(max_response_header_field_bytes)"
        )

    def unending(self) -> OriginError:
        return _refused(
            f"{self.stall_bytes} bytes without a field or status line ending "
            "(max_response_header_field_bytes)"
        )

    def check_fields(self, fields: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise the refusal for the first field of a head that arrived whole to go over a
        limit, if one does."""
        count = 0
        total = 0
        for name, value in fields:
            size = len(name) + len(value)
            count += 1
            total += size
            if count > self.header_count:
                raise self.too_many_fields()
            if size > self.field_bytes or total > self.header_bytes:
                raise self.over(size)


def _refused(why: str) -> OriginError:
    return OriginError(OriginFailure.PROTOCOL, f"response head refused: {why}")


def transfer_coding_refused() -> OriginError:
    """A response whose Transfer-Encoding is anything but `chunked` (issue 10): a body under
    another transfer coding (gzip, deflate …) would be judged against the blocklist as coded
    bytes and relayed unlabelled (Transfer-Encoding is hop-by-hop), so a listed body could
    pass. Refused (502), as the front refuses such requests; never seen from real origins."""
    return OriginError(OriginFailure.PROTOCOL, "transfer coding other than chunked")
