"""Cases ported from the independent RFC 9111 conformance suite (github.com/http-tests/
cache-tests, tests/*.mjs), chosen among those nginx, Varnish, Squid and Traffic Server fail.

Each case: the origin's first response, then a second request; "cached" means the origin did not
see the second request. The case id is the suite's.
"""

from __future__ import annotations

import pytest

from tests.integration.helpers_cache import Canned, get, http_date, scripted_edge

D0 = "DATE0"  # placeholder for the suite's ['Date', 0]


def _hdrs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, http_date() if v == D0 else v) for n, v in pairs]


CASES = [
    # cdn-cache-control.mjs (RFC 9213)
    ("cdn-max-age", [("CDN-Cache-Control", "max-age=3600")], {}, 200, True),
    ("cdn-max-age-max", [("CDN-Cache-Control", "max-age=2147483648")], {}, 200, True),
    ("cdn-max-age-max-plus", [("CDN-Cache-Control", "max-age=99999999999")], {}, 200, True),
    (
        "cdn-max-age-age",
        [("Date", D0), ("CDN-Cache-Control", "max-age=3600"), ("Age", "7200")],
        {},
        200,
        False,
    ),
    ("cdn-max-age-0", [("CDN-Cache-Control", "max-age=0")], {}, 200, False),
    ("cdn-max-age-extension", [("CDN-Cache-Control", "foobar, max-age=3600")], {}, 200, True),
    ("cdn-max-age-case-insensitive", [("CDN-Cache-Control", "MaX-aGe=3600")], {}, 200, False),
    (
        "cdn-max-age-expires",
        [("CDN-Cache-Control", "max-age=3600"), ("Expires", http_date(-10000)), ("Date", D0)],
        {},
        200,
        True,
    ),
    (
        "cdn-max-age-cc-max-age-invalid-expires",
        [("CDN-Cache-Control", "max-age=3600"), ("Expires", "0"), ("Date", D0)],
        {},
        200,
        True,
    ),
    (
        "cdn-max-age-short-cc-max-age",
        [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=3600")],
        {},
        200,
        True,
    ),
    (
        "cdn-private",
        [("CDN-Cache-Control", "private"), ("Cache-Control", "max-age=10000")],
        {},
        200,
        False,
    ),
    (
        "cdn-no-cache",
        [("CDN-Cache-Control", "no-cache"), ("Cache-Control", "max-age=10000")],
        {},
        200,
        False,
    ),
    (
        "cdn-no-store-cc-fresh",
        [("Cache-Control", "max-age=10000"), ("CDN-Cache-Control", "no-store")],
        {},
        200,
        False,
    ),
    (
        "cdn-fresh-cc-nostore",
        [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000")],
        {},
        200,
        True,
    ),
    (
        "cdn-cc-invalid-sh-type-unknown",
        [("CDN-Cache-Control", "max-age=10000, &&&&&"), ("Cache-Control", "no-store")],
        {},
        200,
        False,
    ),
    # heuristic-freshness.mjs beyond 200
    ("heuristic-404-cached", [("Last-Modified", http_date(-86400)), ("Date", D0)], {}, 404, True),
    ("heuristic-410-cached", [("Last-Modified", http_date(-86400)), ("Date", D0)], {}, 410, True),
    ("heuristic-501-cached", [("Last-Modified", http_date(-86400)), ("Date", D0)], {}, 501, True),
    (
        "heuristic-503-not_cached",
        [("Last-Modified", http_date(-86400)), ("Date", D0)],
        {},
        503,
        False,
    ),
    # age-parse.mjs: an invalid Age is ignored
    ("age-parse-negative", [("Cache-Control", "max-age=3600"), ("Age", "-7200")], {}, 200, True),
    ("age-parse-float", [("Cache-Control", "max-age=3600"), ("Age", "7200.0")], {}, 200, True),
    ("age-parse-prefix", [("Cache-Control", "max-age=3600"), ("Age", "7200a")], {}, 200, True),
    ("age-parse-large", [("Cache-Control", "max-age=3600"), ("Age", "7200")], {}, 200, False),
    # cc-response.mjs / status: must-understand
    (
        "cc-resp-must-understand-no-store",
        [("Cache-Control", "must-understand, no-store, max-age=3600")],
        {},
        200,
        True,
    ),
    # authorization.mjs
    (
        "other-authorization-public",
        [("Cache-Control", "max-age=3600, public")],
        {"Authorization": "FOO"},
        200,
        True,
    ),
    (
        "other-authorization-smaxage",
        [("Cache-Control", "s-maxage=3600")],
        {"Authorization": "FOO"},
        200,
        True,
    ),
    (
        "other-authorization",
        [("Expires", http_date(30 * 86400)), ("Date", D0)],
        {"Authorization": "FOO"},
        200,
        False,
    ),
    # expires-parse.mjs
    ("expires-parse-0", [("Expires", "0"), ("Date", D0)], {}, 200, False),
    (
        "expires-parse-rfc850",
        [("Expires", "Sunday, 06-Nov-94 08:49:37 GMT"), ("Date", D0)],
        {},
        200,
        False,
    ),
]


@pytest.mark.parametrize(
    ("case_id", "headers", "first_request", "status", "cached"),
    CASES,
    ids=[c[0] for c in CASES],
)
async def test_cache_tests_case(
    origin_server,
    make_edge,
    case_id: str,
    headers: list[tuple[str, str]],
    first_request: dict[str, str],
    status: int,
    cached: bool,
) -> None:
    """RFC 9111 / RFC 9213 via http-tests/cache-tests: one case of the suite."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    body = b"content of " + case_id.encode()
    origin.on("/c", Canned(status=status, headers=_hdrs(headers), body=body))
    r1 = await get(edge.url + "/c", headers=first_request)
    assert r1.status == status and r1.body == body
    r2 = await get(edge.url + "/c")
    assert r2.status == status and r2.body == body
    assert (origin.count("/c") == 1) is cached, r2.cache_status
    assert "Cache-Status" in r2.headers


async def test_cdn_remove_header_check_rfc9213(origin_server, make_edge) -> None:
    """cdn-remove-header (a "check"): the edge forwards CDN-Cache-Control downstream, as the
    suite's expected_response_headers says."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/c", Canned(headers=[("Cache-Control", "max-age=10000"), ("CDN-Cache-Control", "foo")]))
    r = await get(edge.url + "/c")
    assert r.headers["CDN-Cache-Control"] == "foo"


async def test_headers_omit_connection_listed_rfc9111_s3_1(make_edge) -> None:
    """headers-omit-headers-listed-in-Connection: fields named by Connection are not stored."""
    from tests.integration.helpers_cache import RawOrigin  # noqa: PLC0415

    raw = RawOrigin(
        lambda head: [
            b"HTTP/1.1 200 OK\r\nConnection: a, b\r\na: 1\r\nb: 2\r\nc: 3\r\n"
            b"Cache-Control: max-age=3600\r\nContent-Length: 1\r\n\r\nx"
        ]
    )
    edge = await make_edge(await raw.start())
    try:
        await get(edge.url + "/h")
        r = await get(edge.url + "/h")
        assert "hit" in r.cache_status and r.headers["c"] == "3"
        assert "a" not in r.headers and "b" not in r.headers
    finally:
        await raw.close()


async def test_conditional_304_ims_without_stored_last_modified_rfc9111_s4_3_2(
    origin_server, make_edge
) -> None:
    """conditional-lm: If-Modified-Since answered 304 against the stored Date when the
    response had no Last-Modified."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/c", Canned(headers=[("Cache-Control", "max-age=3600"), ("Date", http_date(-100))]))
    await get(edge.url + "/c")
    r = await get(edge.url + "/c", headers={"If-Modified-Since": http_date(-50)})
    assert r.status == 304 and origin.count("/c") == 1
