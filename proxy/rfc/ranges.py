"""Range requests served from a complete stored representation, RFC 9110 §14."""

from __future__ import annotations

from typing import Literal

from proxy.rfc.conditional import normalise_etag, strong_match
from proxy.rfc.dates import parse_http_date

__all__ = [
    "MAX_RANGES",
    "coalesce_ranges",
    "content_range",
    "if_range_allows",
    "multipart_byteranges",
    "parse_range",
    "unsatisfied_content_range",
]

MAX_RANGES = 16
"""More range-specs than this and the header is ignored (§14.2 lets a server ignore or
coalesce "many small ranges"; the cheap defence against amplification)."""

_OWS = " \t"


def _pos(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_range(
    value: str, length: int, *, max_ranges: int = MAX_RANGES
) -> list[tuple[int, int]] | Literal["unsatisfiable"] | None:
    """Byte ranges (first, last inclusive) of a ``length``-byte representation (§14.1.2, §14.2).

    * None: ignore the header and serve 200: not the "bytes" unit (case-insensitive), bad
      syntax (including last-pos < first-pos, §14.1.1), or more than ``max_ranges`` specs;
    * "unsatisfiable": no satisfiable range-spec (answer 416 with unsatisfied_content_range);
    * otherwise the satisfiable ranges in request order, last-pos clamped to length - 1,
      suffix ranges resolved; unsatisfiable members of a list are dropped.

    A zero-length representation has no byte to send; a non-zero suffix range there is
    satisfiable by §14.1.1, so the whole (empty) representation is served: None.
    """
    unit, eq, rest = value.partition("=")
    if not eq or unit.strip(_OWS).lower() != "bytes":
        return None
    specs = [s.strip(_OWS) for s in rest.split(",")]
    specs = [s for s in specs if s]
    if not specs or len(specs) > max_ranges:
        return None
    out: list[tuple[int, int]] = []
    suffix_satisfiable = False
    for spec in specs:
        first_s, dash, last_s = spec.partition("-")
        if not dash:
            return None
        if first_s == "":
            n = _pos(last_s)
            if n is None:
                return None
            if n == 0:
                continue
            suffix_satisfiable = True
            if length > 0:
                out.append((max(0, length - n), length - 1))
            continue
        first = _pos(first_s)
        if first is None:
            return None
        if last_s == "":
            last = length - 1
        else:
            last_v = _pos(last_s)
            if last_v is None or last_v < first:
                return None
            last = min(last_v, length - 1)
        if first < length:
            out.append((first, last))
    if not out:
        if length == 0 and suffix_satisfiable:
            return None
        return "unsatisfiable"
    return out


def if_range_allows(
    if_range: str | None,
    etag: str | None,
    last_modified: float | None,
    *,
    date: float | None = None,
) -> bool:
    """RFC 9110 §13.1.5: may the Range header be honoured?

    An entity-tag must match the stored ETag by strong comparison. An HTTP-date must equal
    the stored Last-Modified exactly, and that Last-Modified must be strong: when ``date``
    (the stored Date) is given, at least one second before it (§8.8.2.2). Anything else
    (weak tags, invalid dates) means: ignore Range, send the whole representation.
    """
    if if_range is None:
        return True
    v = if_range.strip(_OWS)
    if v.startswith(('"', "W/", "w/")):
        return strong_match(normalise_etag(v), normalise_etag(etag))
    when = parse_http_date(v)
    if when is None or last_modified is None or when != last_modified:
        return False
    return date is None or date - last_modified >= 1


def content_range(start: int, end: int, length: int) -> str:
    """Content-Range for a 206 part (§14.4)."""
    return f"bytes {start}-{end}/{length}"


def unsatisfied_content_range(length: int) -> str:
    """Content-Range for a 416 (§14.4, §15.5.17)."""
    return f"bytes */{length}"


def coalesce_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges that overlap or touch merged into one, in ascending order (§14.6: a server MAY
    coalesce such ranges regardless of the order they were asked in). Each byte is then sent
    at most once, so a list of overlapping ranges cannot multiply the answer's size."""
    ordered = sorted(ranges)
    out = [ordered[0]]
    for start, end in ordered[1:]:
        last_start, last_end = out[-1]
        if start <= last_end + 1:
            out[-1] = (last_start, max(last_end, end))
        else:
            out.append((start, end))
    return out


def multipart_byteranges(
    body: bytes, ranges: list[tuple[int, int]], boundary: bytes, content_type: bytes | None
) -> bytes:
    """The `multipart/byteranges` content of a 206 with several parts (§14.6): each part its
    own Content-Type (the representation's, when it has one) and Content-Range. `boundary`
    must not occur in `body` (RFC 2046 §5.1.1); the caller chooses it."""
    length = len(body)
    type_line = b"Content-Type: " + content_type + b"\r\n" if content_type is not None else b""
    parts: list[bytes] = []
    for start, end in ranges:
        parts.append(b"\r\n--" + boundary + b"\r\n" + type_line)
        parts.append(b"Content-Range: " + content_range(start, end, length).encode() + b"\r\n\r\n")
        parts.append(body[start : end + 1])
    parts.append(b"\r\n--" + boundary + b"--\r\n")
    return b"".join(parts)
