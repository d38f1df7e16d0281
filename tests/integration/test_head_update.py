"""A HEAD on a stale stored GET response goes on as HEAD, and its answer updates or invalidates
that response (RFC 9111 §4.3.5). Nothing with a body is fetched for it, so nothing unjudged is
stored: an update keeps the judged body and changes fields and freshness only; whatever says the
body may no longer be the representation (another validator, Content-Length or coding, a 4xx)
invalidates instead, and the next GET fetches and judges the body anew."""

from __future__ import annotations

from tests.integration.helpers_cache import Canned, get, scripted_edge, use_clock

STORED = [("Cache-Control", "max-age=1"), ("ETag", '"e1"'), ("X-A", "1"), ("X-Keep", "yes")]


async def _stale(origin_server, make_edge, path: str, *head: Canned):  # type: ignore[no-untyped-def]
    """An edge holding a stale GET response for `path` (body "body-1"); the origin then
    answers `head` (and a new body, "body-2", to any GET after)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(path, Canned(headers=STORED, body=b"body-1"), *head, Canned(body=b"body-2"))
    r = await get(edge.url + path)
    assert r.body == b"body-1"
    clock.advance(5)
    return origin, edge


async def test_head_200_that_matches_freshens_the_stored_get_rfc9111_s4_3_5(
    origin_server, make_edge
) -> None:
    """The HEAD goes to the origin as HEAD (not as a GET for the whole body); its 200 with the
    stored ETag and body length updates the stored fields (X-A), keeps those it does not carry
    (X-Keep) and gives the entry the new freshness: the next GET is a hit on the old body."""
    fresh = [("Cache-Control", "max-age=600"), ("ETag", '"e1"'), ("X-A", "2")]
    origin, edge = await _stale(
        origin_server, make_edge, "/h1", Canned(headers=[*fresh, ("Content-Length", "6")])
    )
    r = await get(edge.url + "/h1", method="HEAD")
    assert origin.last("/h1").method == "HEAD"
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == "6"
    assert r.headers["X-A"] == "2" and r.headers["X-Keep"] == "yes"
    assert "fwd=stale" in r.cache_status and "fwd-status=200" in r.cache_status
    r = await get(edge.url + "/h1")
    assert r.status == 200 and r.body == b"body-1" and "hit" in r.cache_status
    assert r.headers["X-A"] == "2" and r.headers["X-Keep"] == "yes"
    assert origin.count("/h1") == 2


async def test_head_200_with_another_etag_invalidates_rfc9111_s4_3_5(
    origin_server, make_edge
) -> None:
    """Another ETag: the stored body is not the current representation. The HEAD is answered
    with the origin's fields, the stored response dropped, the next GET fetched (and judged)."""
    origin, edge = await _stale(
        origin_server,
        make_edge,
        "/h2",
        Canned(
            headers=[("Cache-Control", "max-age=600"), ("ETag", '"e2"'), ("Content-Length", "6")]
        ),
    )
    r = await get(edge.url + "/h2", method="HEAD")
    assert r.status == 200 and r.body == b"" and r.headers["ETag"] == '"e2"'
    assert "X-Keep" not in r.headers
    r = await get(edge.url + "/h2")
    assert r.body == b"body-2" and "hit" not in r.cache_status
    assert [s.method for s in origin.seen] == ["GET", "HEAD", "GET"]


async def test_head_200_with_another_content_length_invalidates_rfc9111_s4_3_5(
    origin_server, make_edge
) -> None:
    """No validator, but a Content-Length other than the stored body's: invalidated."""
    origin, edge = await _stale(
        origin_server,
        make_edge,
        "/h3",
        Canned(headers=[("Cache-Control", "max-age=600"), ("Content-Length", "60")]),
    )
    r = await get(edge.url + "/h3", method="HEAD")
    assert r.status == 200 and r.body == b""
    r = await get(edge.url + "/h3")
    assert r.body == b"body-2" and origin.count("/h3") == 3


async def test_head_200_that_says_private_or_no_store_removes_the_stored_get_rfc9111_s3(
    origin_server, make_edge
) -> None:
    """The updated response is what the cache would store (§3): with `private` (§5.2.2.7) or
    `no-store` it is not kept for others; this HEAD is answered from it, the next GET fetched."""
    for n, cc in enumerate(("private, max-age=600", "no-store")):
        path = f"/hp{n}"
        origin, edge = await _stale(
            origin_server,
            make_edge,
            path,
            Canned(headers=[("Cache-Control", cc), ("ETag", '"e1"'), ("Content-Length", "6")]),
        )
        r = await get(edge.url + path, method="HEAD")
        assert r.status == 200 and r.headers["X-Keep"] == "yes"
        r = await get(edge.url + path)
        assert r.body == b"body-2" and origin.count(path) == 3


async def test_head_410_invalidates_the_stored_get_rfc9111_s4_3_5(origin_server, make_edge) -> None:
    """§4.3.5 updates from a 200 only. A 410 says the resource is gone: the stale body is not
    kept fresh under the 410's fields (as cache-tests' head-410-update would have it) but
    dropped, and the 410 relayed."""
    origin, edge = await _stale(
        origin_server,
        make_edge,
        "/h4",
        Canned(status=410, headers=[("Cache-Control", "max-age=600"), ("X-A", "2")]),
    )
    r = await get(edge.url + "/h4", method="HEAD")
    assert r.status == 410 and r.body == b""
    r = await get(edge.url + "/h4")
    assert r.status == 200 and r.body == b"body-2" and origin.count("/h4") == 3


async def test_head_without_a_stored_response_still_fills_the_cache_with_get(
    origin_server, make_edge
) -> None:
    """Nothing stored: the HEAD is fetched as a GET (its body judged and stored), so a HEAD
    never leaves a stored response without a body behind; a fresh one answers HEADs alone."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/h5", Canned(headers=[("Cache-Control", "max-age=600")], body=b"full"))
    for _ in range(2):
        r = await get(edge.url + "/h5", method="HEAD")
        assert r.status == 200 and r.headers["Content-Length"] == "4"
    assert [s.method for s in origin.seen] == ["GET"]
