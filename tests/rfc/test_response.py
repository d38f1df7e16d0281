"""rfc/response.parse_response: the fields RFC 9111 acts on, read from a raw head in one pass
(issue 18 made it one dict lookup per field line; what it reads must not change)."""

from __future__ import annotations

import random

from proxy.rfc.cachecontrol import EMPTY_CC
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.response import parse_response, read_response, response_cache_control

DATE = b"Sun, 06 Dec 2026 20:00:00 GMT"


def test_every_field_it_reads_any_case() -> None:
    parsed = parse_response(
        [
            (b"CACHE-CONTROL", b"max-age=60"),
            (b"cache-control", b"public"),
            (b"Date", DATE),
            (b"Expires", b"Sun, 06 Dec 2026 21:00:00 GMT"),
            (b"Last-Modified", DATE),
            (b"ETag", b'"abc"'),
            (b"Age", b"7"),
            (b"Vary", b"Accept-Encoding"),
            (b"vary", b"Accept-Language"),
            (b"Set-Cookie", b"a=1"),
            (b"Cache-Status", b"upstream; hit"),
            (b"cache-status", b"other; fwd=miss"),
            (b"Location", b"/there"),
            (b"Content-Location", b"/here"),
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", b"3"),
        ]
    )
    assert parsed.cc.max_age == 60 and parsed.cc.public
    assert parsed.date == parsed.last_modified == 1796587200.0
    assert parsed.expires == "Sun, 06 Dec 2026 21:00:00 GMT"
    assert parsed.last_modified_raw == DATE.decode()
    assert parsed.etag == '"abc"' and parsed.age == 7
    assert parsed.vary == ["Accept-Encoding", "Accept-Language"]
    assert parsed.set_cookie
    assert parsed.cache_status == b"upstream; hit, other; fwd=miss"
    assert parsed.location == "/there" and parsed.content_location == "/here"


def test_nothing_it_reads() -> None:
    parsed = parse_response([(b"Content-Type", b"text/plain"), (b"Content-Length", b"3")])
    assert parsed.cc is EMPTY_CC
    assert parsed.date is None and parsed.expires is None and parsed.etag is None
    assert parsed.age is None and parsed.vary == [] and not parsed.set_cookie
    assert parsed.cache_status == b"" and parsed.location is None


def test_targeted_fields_replace_cache_control_rfc9213_2_2() -> None:
    fields = [(b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", b"max-age=30")]
    assert parse_response(fields).cc.max_age == 30 and not parse_response(fields).cc.no_store
    ours = [*fields, (b"Edgeproxy-Cache-Control", b"max-age=5")]
    assert parse_response(ours).cc.max_age == 5  # the most specific first
    broken = [(b"Cache-Control", b"max-age=9"), (b"CDN-Cache-Control", b"max-age=\x01")]
    assert parse_response(broken).cc.max_age == 9  # §2.1: one that does not parse is ignored


# read_response: the strip and the parse in one pass must give what the two passes gave.
_NAMES = [
    b"Cache-Control", b"cache-control", b"Date", b"ETag", b"Vary", b"Content-Encoding",
    b"content-encoding", b"Connection", b"Keep-Alive", b"Transfer-Encoding", b"TE",
    b"Proxy-Authenticate", b"Upgrade", b"Trailer", b"Content-Type", b"Content-Length",
    b"Set-Cookie", b"Age", b"X-Custom", b"Cache-Status", b"CDN-Cache-Control",
    b"cdn-CACHE-control", b"Edgeproxy-Cache-Control",
]  # fmt: skip
_VALUES = {
    b"connection": [b"close", b"keep-alive", b"Cache-Control", b"x-custom, te", b" , Upgrade",
                    b"ETag,Content-Encoding", b"Vary , close"],
    b"cache-control": [b"max-age=60", b"no-store", b"public, s-maxage=5"],
    b"content-encoding": [b"gzip", b"br", b"identity"],
    b"date": [b"Sun, 06 Dec 2026 20:00:00 GMT"],
    b"etag": [b'"a"', b'W/"b"'],
    b"age": [b"7"],
    b"cdn-cache-control": [b"max-age=30"],
    b"edgeproxy-cache-control": [b"max-age=5", b"no-store", b"max-age=\x01"],
}  # fmt: skip


def _same(heads: list[list[tuple[bytes, bytes]]]) -> None:
    for head in heads:
        kept, parsed = read_response(head)
        stripped = strip_hop_by_hop(head)
        assert kept == stripped, head
        assert parsed == parse_response(stripped), head
        assert parsed.codings == [v for n, v in stripped if n.lower() == b"content-encoding"]


def test_read_response_is_strip_then_parse_on_many_heads() -> None:
    rng = random.Random(18)
    heads = []
    for _ in range(3000):
        head = []
        for _ in range(rng.randrange(0, 9)):
            name = rng.choice(_NAMES)
            value = rng.choice(_VALUES.get(name.lower(), [b"v"]))
            head.append((name, value))
        heads.append(head)
    _same(heads)


def test_read_response_a_connection_line_naming_an_earlier_field_rfc9110_7_6_1() -> None:
    """The field a Connection line names is dropped and not read, wherever it stands."""
    head = [
        (b"Cache-Control", b"max-age=60"),
        (b"Content-Encoding", b"gzip"),
        (b"Connection", b"cache-control, content-encoding"),
        (b"Date", DATE),
    ]
    kept, parsed = read_response(head)
    assert kept == [(b"Date", DATE)]
    assert parsed.cc is EMPTY_CC and parsed.codings == [] and parsed.date is not None
    _same([head, list(reversed(head))])


def test_parsed_response_fields_in_the_order_read_passes_them() -> None:
    """`_read` builds its ParsedResponse positionally (issue 18): the field order it assumes."""
    from dataclasses import fields

    from proxy.rfc.response import ParsedResponse

    assert [f.name for f in fields(ParsedResponse)] == [
        "cc", "date", "expires", "last_modified", "last_modified_raw", "etag", "age", "vary",
        "set_cookie", "cache_status", "location", "content_location", "codings",
    ]  # fmt: skip


def test_response_cache_control_is_what_parse_response_reads() -> None:
    """A stored entry's directives (a node-tier read, a shared-tier adoption) are read alone:
    the same as the whole parse's, targeted fields (RFC 9213) and any case included."""
    rng = random.Random(11)
    for _ in range(3000):
        head = []
        for _ in range(rng.randrange(0, 9)):
            name = rng.choice(_NAMES)
            head.append((name, rng.choice(_VALUES.get(name.lower(), [b"v"]))))
        assert response_cache_control(head) == parse_response(head).cc, head
        assert response_cache_control(tuple(head)) == parse_response(head).cc, head
    fields = [(b"Cache-Control", b"no-store"), (b"CDN-Cache-Control", b"max-age=30")]
    assert response_cache_control(fields).max_age == 30
    assert response_cache_control([]) is EMPTY_CC
