"""Response and request directives (RFC 9111 §5.2), Authorization (§3.5), Set-Cookie."""

from __future__ import annotations

import pytest

from tests.integration.helpers_cache import (
    Canned,
    get,
    not_stored,
    scripted_edge,
    use_clock,
)


@pytest.mark.parametrize(
    ("cc", "reason"),
    [
        ("no-store", "no-store"),
        ("No-StOrE, max-age=600", "no-store"),
        ("private, max-age=600", "private"),
    ],
)
async def test_not_stored_with_reason_rfc9111_s5_2_2_5_and_s5_2_2_7(
    origin_server, make_edge, cc: str, reason: str
) -> None:
    """RFC 9111 §5.2.2.5 no-store, §5.2.2.7 private: a shared cache does not store them; the
    reason shows in Cache-Status detail and in the not-stored counter."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/n", Canned(headers=[("Cache-Control", cc)], body=b"n"))
    for _ in range(2):
        r = await get(edge.url + "/n")
        assert r.status == 200 and r.body == b"n"
        assert f"detail={reason}" in r.cache_status
        assert r.headers["Cache-Control"] == cc
    assert origin.count("/n") == 2
    assert not_stored(edge, reason) == 2


async def test_request_no_store_rfc9111_s5_2_1_5(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.1.5: a request's no-store keeps its response out of the cache."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/q", Canned(headers=[("Cache-Control", "max-age=600")]))
    await get(edge.url + "/q", headers={"Cache-Control": "no-store"})
    r = await get(edge.url + "/q")
    assert "hit" not in r.cache_status and origin.count("/q") == 2
    assert not_stored(edge, "request-no-store") == 1


async def test_no_cache_revalidates_every_time_rfc9111_s5_2_2_4(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.2.4: no-cache is stored but validated before each reuse; a 304 lets the
    cache serve its stored body (Cache-Status fwd=stale; fwd-status=304)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/nc",
        Canned(headers=[("Cache-Control", "no-cache, max-age=600"), ("ETag", '"v1"')], body=b"nc"),
        Canned(status=304, headers=[("ETag", '"v1"')]),
    )
    r1 = await get(edge.url + "/nc")
    assert r1.body == b"nc" and "stored" in r1.cache_status
    for n in (2, 3):
        r = await get(edge.url + "/nc")
        assert r.status == 200 and r.body == b"nc"
        assert "fwd=stale; fwd-status=304" in r.cache_status
        assert origin.count("/nc") == n
        assert origin.last("/nc").headers["If-None-Match"] == '"v1"'


async def test_request_no_cache_and_pragma_revalidate_rfc9111_s5_2_1_4_s5_4(
    origin_server, make_edge
) -> None:
    """RFC 9111 §5.2.1.4 / §5.4: request no-cache (or Pragma: no-cache without Cache-Control)
    makes the cache validate a fresh entry."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/r",
        Canned(headers=[("Cache-Control", "max-age=600"), ("ETag", '"a"')], body=b"r"),
        Canned(status=304, headers=[("ETag", '"a"')]),
    )
    await get(edge.url + "/r")
    r = await get(edge.url + "/r", headers={"Cache-Control": "no-cache"})
    assert r.body == b"r" and "fwd-status=304" in r.cache_status
    r = await get(edge.url + "/r", headers={"Pragma": "no-cache"})
    assert r.body == b"r" and "fwd-status=304" in r.cache_status
    assert origin.count("/r") == 3


async def test_request_max_age_zero_validates_rfc9111_s5_2_1_1(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.1.1: max-age=0 in the request refuses a response older than 0 s."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on("/m", Canned(headers=[("Cache-Control", "max-age=600")], body=b"m"))
    await get(edge.url + "/m")
    clock.advance(2)
    r = await get(edge.url + "/m", headers={"Cache-Control": "max-age=0"})
    assert r.body == b"m" and "fwd=stale" in r.cache_status and origin.count("/m") == 2


async def test_only_if_cached_miss_is_504_rfc9111_s5_2_1_7(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.1.7: only-if-cached without a stored response answers 504."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/o", Canned(headers=[("Cache-Control", "max-age=600")]))
    r = await get(edge.url + "/o", headers={"Cache-Control": "only-if-cached"})
    assert r.status == 504 and "edgeproxy" in r.cache_status and origin.count() == 0


@pytest.mark.parametrize(
    "cc", ["max-age=1, must-revalidate", "max-age=1, proxy-revalidate", "s-maxage=1"]
)
async def test_no_stale_serving_when_revalidation_required_rfc9111_s5_2_2_2(
    origin_server, make_edge, cc: str
) -> None:
    """RFC 9111 §5.2.2.2/§5.2.2.8/§5.2.2.10: once stale, the entry is never served without
    validation, even when the request allows stale (max-stale) or the origin is failing."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(
        "/mr",
        Canned(headers=[("Cache-Control", cc + ", stale-if-error=600")], body=b"ok"),
        Canned(status=500, body=b"broken"),
    )
    await get(edge.url + "/mr")
    clock.advance(5)
    r = await get(edge.url + "/mr", headers={"Cache-Control": "max-stale=600"})
    assert r.status == 500 and r.body == b"broken"
    assert origin.count("/mr") == 2


async def test_max_stale_serves_stale_rfc9111_s5_2_1_2(origin_server, make_edge) -> None:
    """RFC 9111 §5.2.1.2: a request's max-stale accepts a stale response within the bound."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on("/ms", Canned(headers=[("Cache-Control", "max-age=1")], body=b"ms"))
    await get(edge.url + "/ms")
    clock.advance(5)
    r = await get(edge.url + "/ms", headers={"Cache-Control": "max-stale=60"})
    assert r.body == b"ms" and "hit" in r.cache_status and origin.count("/ms") == 1


async def test_must_understand_overrides_no_store_rfc9111_s5_2_2_3(
    origin_server, make_edge
) -> None:
    """RFC 9111 §5.2.2.3: with must-understand, a cache that understands the status ignores
    no-store; for a status it does not understand, it does not store."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/mu", Canned(headers=[("Cache-Control", "must-understand, no-store, max-age=600")]))
    origin.on(
        "/mu299",
        Canned(status=299, headers=[("Cache-Control", "must-understand, no-store, max-age=600")]),
    )
    await get(edge.url + "/mu")
    r = await get(edge.url + "/mu")
    assert "hit" in r.cache_status and origin.count("/mu") == 1
    await get(edge.url + "/mu299")
    r = await get(edge.url + "/mu299")
    assert r.status == 299 and "hit" not in r.cache_status and origin.count("/mu299") == 2


@pytest.mark.parametrize(
    ("cc", "stored"),
    [
        ("max-age=600", False),
        ("max-age=600, public", True),
        ("max-age=600, must-revalidate", True),
        ("s-maxage=600", True),
    ],
)
async def test_authorization_rfc9111_s3_5(origin_server, make_edge, cc: str, stored: bool) -> None:
    """RFC 9111 §3.5: a response to a request with Authorization is stored only with public,
    must-revalidate or s-maxage. The Authorization header reaches the origin."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/auth", Canned(headers=[("Cache-Control", cc)], body=b"secret"))
    r1 = await get(edge.url + "/auth", headers={"Authorization": "Bearer x"})
    assert r1.status == 200 and r1.body == b"secret"
    assert origin.last("/auth").headers["Authorization"] == "Bearer x"
    r2 = await get(edge.url + "/auth")
    assert r2.body == b"secret"
    assert ("hit" in r2.cache_status) is stored
    assert origin.count("/auth") == (1 if stored else 2)
    if not stored:
        assert "detail=authorization" in r1.cache_status
        assert not_stored(edge, "authorization") == 1


async def test_set_cookie_stored_without_the_cookie_by_default_issue_16(
    origin_server, make_edge
) -> None:
    """A shared cache handing one user's Set-Cookie to others is a leak. By default
    (`cache.set_cookie_policy = "strip"`, as Squid and Traffic Server do) a response with
    explicit freshness is stored without its Set-Cookie fields: the client it was fetched for
    gets them, every reuse (hit, HEAD, range, 304) does not."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/c",
        Canned(
            headers=[("Cache-Control", "max-age=600"), ("Set-Cookie", "s=1"), ("ETag", '"c"')],
            body=b"cookie page",
        ),
    )
    r = await get(edge.url + "/c")
    assert r.headers.getall("Set-Cookie") == ["s=1"] and "stored" in r.cache_status
    for headers in ({}, {"Range": "bytes=0-1"}, {"If-None-Match": '"c"'}):
        r = await get(edge.url + "/c", headers=headers)
        assert "hit" in r.cache_status and "Set-Cookie" not in r.headers, headers
    r = await get(edge.url + "/c", method="HEAD")
    assert "hit" in r.cache_status and "Set-Cookie" not in r.headers
    assert origin.count("/c") == 1
    assert all(b"s=1" not in e.head for e in edge.pipeline.cache.entries())


@pytest.mark.parametrize(
    ("cc", "policy"),
    [("max-age=600", "pass"), (None, "strip")],
    ids=["policy-pass", "heuristic-freshness-only"],
)
async def test_set_cookie_not_stored(origin_server, make_edge, cc, policy) -> None:
    """`set_cookie_policy = "pass"`, or freshness that is only heuristic (Last-Modified):
    not stored (reason set-cookie); the cookie reaches each client."""
    origin, edge = await scripted_edge(origin_server, make_edge, cache__set_cookie_policy=policy)
    headers = [("Set-Cookie", "s=1"), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")]
    if cc is not None:
        headers.append(("Cache-Control", cc))
    origin.on("/c", Canned(headers=headers))
    for _ in range(2):
        r = await get(edge.url + "/c")
        assert r.headers["Set-Cookie"] == "s=1" and "detail=set-cookie" in r.cache_status
    assert origin.count("/c") == 2 and not_stored(edge, "set-cookie") == 2


async def test_set_cookie_stored_when_allowed(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge, cache__store_set_cookie=True)
    origin.on("/c", Canned(headers=[("Cache-Control", "max-age=600"), ("Set-Cookie", "s=1")]))
    await get(edge.url + "/c")
    r = await get(edge.url + "/c")
    assert "hit" in r.cache_status and origin.count("/c") == 1
    assert r.headers["Set-Cookie"] == "s=1"  # what the operator chose: replayed to everyone


async def test_qualified_no_cache_and_private_omit_fields_rfc9111_s5_2_2_4(
    origin_server, make_edge
) -> None:
    """RFC 9111 §5.2.2.4 / §5.2.2.7: the fields named by no-cache="…" / private="…" are not
    sent in a reuse; the response itself is still stored."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/q",
        Canned(
            headers=[
                ("Cache-Control", 'max-age=600, no-cache="a, b", private="c"'),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("d", "4"),
            ]
        ),
    )
    await get(edge.url + "/q")
    r2 = await get(edge.url + "/q")
    assert "hit" in r2.cache_status and r2.headers["d"] == "4"
    assert "a" not in r2.headers and "b" not in r2.headers and "c" not in r2.headers


async def test_no_cache_fields_go_out_fresh_but_not_on_reuse_issue_16(
    origin_server, make_edge
) -> None:
    """RFC 9111 §5.2.2.4: a field named by no-cache="…" is not sent on reuse without
    revalidation, but the response relayed fresh from the origin carries it; one named by
    private="…" is never stored, but this response's client may have it."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/f",
        Canned(
            headers=[
                ("Cache-Control", 'max-age=600, no-cache="X-Secret", private="X-Mine"'),
                ("X-Secret", "s"),
                ("X-Mine", "m"),
                ("X-Kept", "k"),
            ],
            body=b"f",
        ),
    )
    r = await get(edge.url + "/f")
    assert "stored" in r.cache_status
    assert (r.headers.get("X-Secret"), r.headers.get("X-Mine"), r.headers["X-Kept"]) == (
        "s",
        "m",
        "k",
    )
    r = await get(edge.url + "/f")
    assert "hit" in r.cache_status and r.headers["X-Kept"] == "k"
    assert "X-Secret" not in r.headers and "X-Mine" not in r.headers
