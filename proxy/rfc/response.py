"""A response head read once for the cache: the fields RFC 9111 acts on, parsed from the raw
field list in one pass (Cache-Control with the targeted fields of RFC 9213 chosen over it,
Date, Expires, Last-Modified, ETag, Age, Vary, Content-Encoding …). Pure: no I/O, no clock.

`read_response` is the origin's head as upstream_response takes it: connection-specific fields
stripped (RFC 9110 §7.6.1, as `strip_hop_by_hop`) and the rest parsed, in the one pass over
the fields (issue 18: the strip, the parse and the content codings were three).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.rfc.cachecontrol import CacheControl, parse_cache_control
from proxy.rfc.conditional import normalise_etag
from proxy.rfc.dates import parse_http_date
from proxy.rfc.freshness import parse_age
from proxy.rfc.hopbyhop import HOP_BY_HOP_BYTES, strip_hop_by_hop
from proxy.rfc.targeted import select_cache_control

TARGETED = ("edgeproxy-cache-control", "cdn-cache-control")  # RFC 9213, most specific first


@dataclass(slots=True)
class ParsedResponse:
    cc: CacheControl
    date: float | None
    expires: str | None
    last_modified: float | None
    last_modified_raw: str | None
    etag: str | None
    age: int | None
    vary: list[str]
    set_cookie: bool
    cache_status: bytes
    location: str | None
    content_location: str | None
    codings: list[bytes] = field(default_factory=list)  # Content-Encoding values, in order


# The fields parse_response reads, by lowercase name: one dict lookup per field line, and
# none of the chain of comparisons for fields it does not read (Content-Type, Content-Length).
# Hop-by-hop fields are read too: skipped (and a Connection line's tokens noted) by the same
# lookup.
(
    _CC, _DATE, _EXPIRES, _LM, _ETAG, _AGE, _VARY, _COOKIE, _STATUS, _LOC, _CLOC, _TARGETED,
    _CODING, _HOP, _CONNECTION,
) = range(15)  # fmt: skip
_READ: dict[bytes, int] = {
    b"cache-control": _CC,
    b"date": _DATE,
    b"expires": _EXPIRES,
    b"last-modified": _LM,
    b"etag": _ETAG,
    b"age": _AGE,
    b"vary": _VARY,
    b"set-cookie": _COOKIE,
    b"cache-status": _STATUS,
    b"location": _LOC,
    b"content-location": _CLOC,
    **{t.encode("latin-1"): _TARGETED for t in TARGETED},
    b"content-encoding": _CODING,
    **{n: _HOP for n in HOP_BY_HOP_BYTES},
    b"connection": _CONNECTION,
}


def read_response(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], ParsedResponse]:
    """`strip_hop_by_hop(headers)` and `parse_response` of what it keeps, in one pass. A
    Connection line naming a field beyond the static hop-by-hop set (rare) takes the two
    passes instead: the field it names may come before it, and is neither kept nor read."""
    kept, parsed, named = _read(headers)
    if named:
        kept = strip_hop_by_hop(headers)
        parsed = _read(kept)[1]
    return kept, parsed


def parse_response(headers: list[tuple[bytes, bytes]]) -> ParsedResponse:
    """The fields RFC 9111 acts on, of a head without connection-specific fields (stripped
    already, or stored)."""
    return _read(headers)[1]


# The fields `response_cache_control` reads, from `_READ`: "" for Cache-Control, else the
# targeted field's name.
_CC_FIELDS = {n: n.decode("latin-1") for n, w in _READ.items() if w == _TARGETED}
_CC_FIELDS.update((n, "") for n, w in _READ.items() if w == _CC)


def response_cache_control(headers: Iterable[tuple[bytes, bytes]]) -> CacheControl:
    """`parse_response(headers).cc` with nothing else read: a stored entry read from the
    node tier or adopted from the shared tier needs its directives, and its date, validators
    and the rest are in the entry already (two thirds of `_read`'s time went to them)."""
    cc_values: list[str] = []
    targeted: dict[str, list[str]] | None = None
    names = _CC_FIELDS
    for name, value in headers:
        which = names.get(name.lower())
        if which is None:
            continue
        if not which:
            cc_values.append(value.decode("latin-1"))
        else:
            if targeted is None:
                targeted = {}
            targeted.setdefault(which, []).append(value.decode("latin-1"))
    return _directives(cc_values, targeted)


def _directives(cc_values: list[str], targeted: dict[str, list[str]] | None) -> CacheControl:
    """The directives this cache obeys: the targeted fields' (RFC 9213), most specific first,
    over Cache-Control's."""
    if targeted is None:
        return parse_cache_control(cc_values)  # what select_cache_control does without them
    return select_cache_control(cc_values, [(t, targeted.get(t, [])) for t in TARGETED])[0]


def _read(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], ParsedResponse, bool]:
    """(the fields but hop-by-hop ones, what they say, whether a Connection line named a field
    outside the static set)."""
    kept: list[tuple[bytes, bytes]] = []
    named = False
    codings: list[bytes] = []
    cc_values: list[str] = []
    targeted: dict[str, list[str]] | None = None
    vary: list[str] = []
    ages: list[str] = []
    expires_values: list[str] = []
    date = last_modified_raw = etag = location = content_location = None
    set_cookie = False
    cache_status: list[bytes] = []
    read = _READ
    for item in headers:
        name, value = item
        which = read.get(name.lower())
        if which is None:
            kept.append(item)
            continue
        if which >= _HOP:
            if which == _CONNECTION and not named:
                named = _names_more(value)
            continue
        kept.append(item)
        if which == _CC:
            cc_values.append(value.decode("latin-1"))
        elif which == _DATE:
            date = value.decode("latin-1")
        elif which == _EXPIRES:
            expires_values.append(value.decode("latin-1"))
        elif which == _LM:
            last_modified_raw = value.decode("latin-1")
        elif which == _ETAG:
            etag = value.decode("latin-1")
        elif which == _AGE:
            ages.append(value.decode("latin-1"))
        elif which == _VARY:
            vary.append(value.decode("latin-1"))
        elif which == _COOKIE:
            set_cookie = True
        elif which == _STATUS:
            cache_status.append(value)
        elif which == _LOC:
            location = value.decode("latin-1")
        elif which == _CLOC:
            content_location = value.decode("latin-1")
        elif which == _CODING:
            codings.append(value)
        else:
            if targeted is None:
                targeted = {}
            targeted.setdefault(name.lower().decode("latin-1"), []).append(value.decode("latin-1"))
    cc = _directives(cc_values, targeted)
    # Positional, in ParsedResponse's field order (tests/rfc/test_response.py holds it):
    # keywords cost every response 0.37 µs more (issue 18).
    parsed = ParsedResponse(
        cc,
        parse_http_date(date) if date else None,  # date
        ", ".join(expires_values) if expires_values else None,  # expires
        parse_http_date(last_modified_raw) if last_modified_raw else None,  # last_modified
        last_modified_raw,
        normalise_etag(etag),  # etag
        parse_age(ages),  # age
        vary,
        set_cookie,
        b", ".join(cache_status) if cache_status else b"",  # cache_status
        location,
        content_location,
        codings,
    )
    return kept, parsed, named


def _names_more(connection: bytes) -> bool:
    """A Connection value names a field beyond HOP_BY_HOP (RFC 9110 §7.6.1), as
    `strip_hop_by_hop` reads its tokens."""
    for token in connection.split(b","):
        t = token.strip(b" \t").lower()
        if t and t not in HOP_BY_HOP_BYTES:
            return True
    return False


def heuristic_only(parsed: ParsedResponse) -> bool:
    """No explicit freshness (RFC 9111 §4.2.1): the lifetime would be heuristic (§4.2.2)."""
    cc = parsed.cc
    return cc.s_maxage is None and cc.max_age is None and parsed.expires is None


def content_type_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The first Content-Type field's value in a field list, b"" without one (what the access
    log records of an answer)."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return bytes(value)
    return b""
