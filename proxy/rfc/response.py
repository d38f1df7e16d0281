"""A response head read once for the cache: the fields RFC 9111 acts on, parsed from the raw
field list in one pass (Cache-Control with the targeted fields of RFC 9213 chosen over it,
Date, Expires, Last-Modified, ETag, Age, Vary …). Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.rfc.cachecontrol import CacheControl
from proxy.rfc.conditional import normalise_etag
from proxy.rfc.dates import parse_http_date
from proxy.rfc.freshness import parse_age
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


def parse_response(headers: list[tuple[bytes, bytes]]) -> ParsedResponse:
    cc_values: list[str] = []
    targeted: dict[str, list[str]] = {}
    vary: list[str] = []
    ages: list[str] = []
    expires_values: list[str] = []
    date = last_modified_raw = etag = location = content_location = None
    set_cookie = False
    cache_status: list[bytes] = []
    for name, value in headers:
        n = name.lower()
        if n == b"cache-control":
            cc_values.append(value.decode("latin-1"))
        elif n == b"date":
            date = value.decode("latin-1")
        elif n == b"expires":
            expires_values.append(value.decode("latin-1"))
        elif n == b"last-modified":
            last_modified_raw = value.decode("latin-1")
        elif n == b"etag":
            etag = value.decode("latin-1")
        elif n == b"age":
            ages.append(value.decode("latin-1"))
        elif n == b"vary":
            vary.append(value.decode("latin-1"))
        elif n == b"set-cookie":
            set_cookie = True
        elif n == b"cache-status":
            cache_status.append(value)
        elif n == b"location":
            location = value.decode("latin-1")
        elif n == b"content-location":
            content_location = value.decode("latin-1")
        elif n.decode("latin-1") in TARGETED:
            targeted.setdefault(n.decode("latin-1"), []).append(value.decode("latin-1"))
    cc, _source = select_cache_control(cc_values, [(t, targeted.get(t, [])) for t in TARGETED])
    return ParsedResponse(
        cc=cc,
        date=parse_http_date(date) if date else None,
        expires=", ".join(expires_values) if expires_values else None,
        last_modified=parse_http_date(last_modified_raw) if last_modified_raw else None,
        last_modified_raw=last_modified_raw,
        etag=normalise_etag(etag),
        age=parse_age(ages),
        vary=vary,
        set_cookie=set_cookie,
        cache_status=b", ".join(cache_status),
        location=location,
        content_location=content_location,
    )


def heuristic_only(parsed: ParsedResponse) -> bool:
    """No explicit freshness (RFC 9111 §4.2.1): the lifetime would be heuristic (§4.2.2)."""
    cc = parsed.cc
    return cc.s_maxage is None and cc.max_age is None and parsed.expires is None
