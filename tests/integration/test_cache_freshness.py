"""Freshness (RFC 9111 §4.2): max-age, s-maxage, Expires, heuristics, Age, Date."""

from __future__ import annotations

import pytest

from tests.integration.helpers_cache import Canned, get, http_date, scripted_edge, use_clock


async def test_max_age_fresh_then_stale_rfc9111_s4_2_1(origin_server, make_edge) -> None:
    """RFC 9111 §4.2.1: max-age gives the lifetime; past it the origin is asked again."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on("/a", Canned(headers=[("Cache-Control", "max-age=10")], body=b"v1"))
    r1 = await get(edge.url + "/a")
    clock.advance(5)
    r2 = await get(edge.url + "/a")
    assert (r1.status, r1.body, r2.status, r2.body) == (200, b"v1", 200, b"v1")
    assert r2.cache_status.startswith("edgeproxy; hit; ttl=")
    assert int(r2.headers["Age"]) >= 5
    assert origin.count("/a") == 1
    clock.advance(6)
    r3 = await get(edge.url + "/a")
    assert r3.status == 200 and "fwd=stale" in r3.cache_status
    assert origin.count("/a") == 2


async def test_s_maxage_overrides_max_age_rfc9111_s5_2_2_10(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.2.10: a shared cache uses s-maxage over max-age (both directions)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on("/long", Canned(headers=[("Cache-Control", "max-age=1, s-maxage=100")]))
    origin.on("/short", Canned(headers=[("Cache-Control", "max-age=100, s-maxage=1")]))
    await get(edge.url + "/long")
    await get(edge.url + "/short")
    clock.advance(10)
    r_long = await get(edge.url + "/long")
    r_short = await get(edge.url + "/short")
    assert "hit" in r_long.cache_status and origin.count("/long") == 1
    assert "fwd=stale" in r_short.cache_status and origin.count("/short") == 2
    # The origin's Cache-Control reaches the client unchanged.
    assert r_long.headers["Cache-Control"] == "max-age=1, s-maxage=100"


async def test_expires_gives_lifetime_rfc9111_s5_3(origin_server, make_edge) -> None:
    """RFC 9111 §5.3 / §4.2.1: Expires − Date is the lifetime when max-age is absent."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    now = clock.now
    origin.on(
        "/e", Canned(headers=[("Date", http_date(0, now)), ("Expires", http_date(30, now))])
    )
    await get(edge.url + "/e")
    clock.advance(20)
    r = await get(edge.url + "/e")
    assert "hit" in r.cache_status and origin.count("/e") == 1
    assert r.headers["Expires"] == http_date(30, now)
    clock.advance(20)
    r = await get(edge.url + "/e")
    assert "fwd=stale" in r.cache_status and origin.count("/e") == 2


@pytest.mark.parametrize("expires", ["0", "-1", "yesterday", "Thu, 01 Jan 1970 00:00:00 GMT"])
async def test_invalid_or_past_expires_is_stale_rfc9111_s5_3(
    origin_server, make_edge, expires: str
) -> None:
    """RFC 9111 §5.3: an invalid Expires (e.g. "0") means already expired."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/x", Canned(headers=[("Expires", expires)], body=b"e"))
    await get(edge.url + "/x")
    r = await get(edge.url + "/x")
    assert r.status == 200 and r.body == b"e"
    assert "hit" not in r.cache_status.split(";")[1]
    assert origin.count("/x") == 2


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
async def test_heuristic_freshness_for_heuristic_statuses_rfc9111_s4_2_2(
    origin_server, make_edge, status: int
) -> None:
    """RFC 9111 §4.2.2 / RFC 9110 §15.1: heuristically cacheable statuses with Last-Modified
    are reused without explicit freshness."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    headers = [("Last-Modified", http_date(-86400)), ("Date", http_date())]
    if status in (300, 301, 308):
        headers.append(("Location", "/elsewhere"))
    body = b"" if status == 204 else b"h%d" % status
    origin.on("/h", Canned(status=status, headers=headers, body=body))
    await get(edge.url + "/h")
    r = await get(edge.url + "/h")
    assert r.status == status and r.body == body
    assert r.cache_status.startswith("edgeproxy; hit")
    assert origin.count("/h") == 1


@pytest.mark.parametrize("status", [201, 202, 302, 303, 307, 403, 502, 503, 504, 599])
async def test_no_heuristic_freshness_for_other_statuses_rfc9111_s4_2_2(
    origin_server, make_edge, status: int
) -> None:
    """RFC 9111 §4.2.2: without explicit freshness, other statuses are not reused."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    headers = [("Last-Modified", http_date(-86400)), ("Location", "/x")]
    origin.on("/h", Canned(status=status, headers=headers, body=b"n"))
    for _ in range(2):
        r = await get(edge.url + "/h")
        assert r.status == status and r.body == b"n"
        assert "hit" not in r.cache_status
    assert origin.count("/h") == 2


async def test_public_makes_unknown_status_heuristically_cacheable_rfc9111_s4_2_2(
    origin_server, make_edge
) -> None:
    """RFC 9111 §4.2.2: "public" allows heuristic freshness for any status."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/p",
        Canned(
            status=599,
            headers=[("Cache-Control", "public"), ("Last-Modified", http_date(-86400))],
            body=b"p",
        ),
    )
    await get(edge.url + "/p")
    r = await get(edge.url + "/p")
    assert r.status == 599 and r.body == b"p" and "hit" in r.cache_status
    assert origin.count("/p") == 1


async def test_explicit_freshness_on_302_is_honoured_rfc9111_s3(origin_server, make_edge) -> None:
    """RFC 9111 §3: any final status with explicit freshness may be stored (302 here)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/r", Canned(status=302, headers=[("Cache-Control", "max-age=60"), ("Location", "/t")])
    )
    await get(edge.url + "/r")
    r = await get(edge.url + "/r")
    assert r.status == 302 and r.headers["Location"] == "/t" and "hit" in r.cache_status
    assert origin.count("/r") == 1


async def test_upstream_age_counts_rfc9111_s4_2_3(origin_server, make_edge) -> None:
    """RFC 9111 §4.2.3: Age: 100 with max-age=60 is stale on arrival; Age: 30 with max-age=600
    is fresh and the delivered Age continues from 30."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/old", Canned(headers=[("Cache-Control", "max-age=60"), ("Age", "100")]))
    origin.on("/mid", Canned(headers=[("Cache-Control", "max-age=600"), ("Age", "30")]))
    await get(edge.url + "/old")
    r = await get(edge.url + "/old")
    assert "hit" not in r.cache_status.split(";")[1] and origin.count("/old") == 2
    await get(edge.url + "/mid")
    r = await get(edge.url + "/mid")
    assert "hit" in r.cache_status and origin.count("/mid") == 1
    assert int(r.headers["Age"]) >= 30


@pytest.mark.parametrize("age", ["abc", "-10", "1.5", ""])
async def test_invalid_age_is_ignored_rfc9111_s5_1(origin_server, make_edge, age: str) -> None:
    """RFC 9111 §5.1: an invalid Age value is ignored (the response stays fresh)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/i", Canned(headers=[("Cache-Control", "max-age=600"), ("Age", age)]))
    await get(edge.url + "/i")
    r = await get(edge.url + "/i")
    assert "hit" in r.cache_status and origin.count("/i") == 1
    assert int(r.headers["Age"]) < 5


async def test_date_of_origin_kept_and_age_generated_rfc9111_s4(origin_server, make_edge) -> None:
    """RFC 9111 §4 / RFC 9110 §6.6.1: the stored Date is delivered unchanged; Age is added."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    date = http_date(-3, clock.now)
    origin.on("/d", Canned(headers=[("Cache-Control", "max-age=600"), ("Date", date)]))
    await get(edge.url + "/d")
    clock.advance(10)
    r = await get(edge.url + "/d")
    assert r.headers["Date"] == date
    assert 12 <= int(r.headers["Age"]) <= 15
