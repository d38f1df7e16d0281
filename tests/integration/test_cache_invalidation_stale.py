"""Invalidation after unsafe methods (RFC 9111 §4.4); stale-while-revalidate and
stale-if-error (RFC 5861); targeted cache control (RFC 9213)."""

from __future__ import annotations

import asyncio

import pytest
from yarl import URL

from tests.integration.conftest import free_port
from tests.integration.helpers_cache import Canned, get, scripted_edge, use_clock

FRESH = [("Cache-Control", "max-age=600")]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_unsafe_method_invalidates_target_location_content_location_rfc9111_s4_4(
    origin_server, make_edge, method: str
) -> None:
    """RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI and
    same-origin Location / Content-Location (never another origin's)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    for p in ("/t", "/loc", "/cloc", "/keep"):
        origin.on(p, Canned(headers=FRESH, body=p.encode()))
        await get(edge.url + p)
    host = edge.url.removeprefix("http://")
    origin.scripts["/t"] = [
        lambda req: Canned(
            status=200 if req.method != "GET" else 200,
            headers=[
                ("Location", "/loc"),
                ("Content-Location", f"http://{host}/cloc"),
            ]
            if req.method != "GET"
            else FRESH,
            body=b"/t",
        )
    ]
    r = await get(edge.url + "/t", method=method, data=b"x")
    assert r.status == 200
    for p in ("/t", "/loc", "/cloc"):
        r = await get(edge.url + p)
        assert "hit" not in r.cache_status, p
    r = await get(edge.url + "/keep")
    assert "hit" in r.cache_status
    assert origin.count("/loc") == 2 and origin.count("/cloc") == 2


async def test_error_response_does_not_invalidate_rfc9111_s4_4(origin_server, make_edge) -> None:
    """RFC 9111 §4.4: only non-error (2xx/3xx) responses invalidate."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/e",
        lambda req: Canned(headers=FRESH, body=b"e")
        if req.method == "GET"
        else Canned(status=500, body=b"no"),
    )
    await get(edge.url + "/e")
    r = await get(edge.url + "/e", method="POST", data=b"x")
    assert r.status == 500
    r = await get(edge.url + "/e")
    assert "hit" in r.cache_status


async def test_stale_while_revalidate_rfc5861_s3(origin_server, make_edge) -> None:
    """RFC 5861 §3: within the window the stale entry is served at once and refreshed in the
    background; the next request sees the new body."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(
        "/s",
        Canned(headers=[("Cache-Control", "max-age=1, stale-while-revalidate=60")], body=b"v1"),
        Canned(headers=[("Cache-Control", "max-age=600")], body=b"v2", delay_s=0.1),
    )
    await get(edge.url + "/s")
    clock.advance(5)
    r = await get(edge.url + "/s")
    assert r.body == b"v1" and "hit" in r.cache_status
    for _ in range(100):
        if origin.count("/s") == 2 and edge.pipeline.memory.get(
            (f"127.0.0.1:{edge.server.port}", b"/s"), ()
        ) and not edge.pipeline.fetcher.background:
            break
        await asyncio.sleep(0.02)
    r = await get(edge.url + "/s")
    assert r.body == b"v2" and "hit" in r.cache_status
    assert origin.count("/s") == 2


async def test_stale_if_error_origin_500_rfc5861_s4(origin_server, make_edge) -> None:
    """RFC 5861 §4: a 500 from the origin is replaced by the stale entry (Cache-Status says
    so); without the directive the 500 passes through."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(
        "/sie",
        Canned(headers=[("Cache-Control", "max-age=1, stale-if-error=60")], body=b"good"),
        Canned(status=500, body=b"bad"),
    )
    origin.on(
        "/plain",
        Canned(headers=[("Cache-Control", "max-age=1")], body=b"good"),
        Canned(status=500, body=b"bad"),
    )
    await get(edge.url + "/sie")
    await get(edge.url + "/plain")
    clock.advance(5)
    r = await get(edge.url + "/sie")
    assert r.status == 200 and r.body == b"good" and "detail=stale-if-error" in r.cache_status
    r = await get(edge.url + "/plain")
    assert r.status == 500 and r.body == b"bad" and "fwd-status=500" in r.cache_status
    clock.advance(100)  # beyond the window
    r = await get(edge.url + "/sie")
    assert r.status == 500


async def test_stale_if_error_origin_down_rfc5861_s4(origin_server, make_edge) -> None:
    """RFC 5861 §4: the origin unreachable → stale served; without the directive, stale within
    `cache.stale_if_unreachable_s` (RFC 9111 §4.2.4: a disconnected cache), then 502; never
    for must-revalidate."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on("/sie", Canned(headers=[("Cache-Control", "max-age=1, stale-if-error=60")]))
    origin.on("/plain", Canned(headers=[("Cache-Control", "max-age=1")]))
    origin.on("/strict", Canned(headers=[("Cache-Control", "max-age=1, must-revalidate")]))
    for path in ("/sie", "/plain", "/strict"):
        await get(edge.url + path)
    # Point the site at a closed port: the origin is now unreachable.
    object.__setattr__(  # SiteRuntime is frozen; the test swaps the origin under it
        edge.pipeline.sites.sites[0], "origin", URL(f"http://127.0.0.1:{free_port()}")
    )
    clock.advance(5)
    r = await get(edge.url + "/sie")
    assert r.status == 200 and r.body == b"body" and "stale-if-error" in r.cache_status
    r = await get(edge.url + "/plain")
    assert r.status == 200 and r.body == b"body" and "stale-if-error" in r.cache_status
    r = await get(edge.url + "/strict")
    assert r.status == 502 and "detail=origin-connect" in r.cache_status
    clock.advance(60)  # past the unreachable grace (60 s after the 1 s lifetime)
    r = await get(edge.url + "/plain")
    assert r.status == 502 and "detail=origin-connect" in r.cache_status


async def test_cdn_cache_control_overrides_for_this_cache_rfc9213_s2(
    origin_server, make_edge
) -> None:
    """RFC 9213 §2.2: CDN-Cache-Control (or Edgeproxy-Cache-Control, which wins) replaces
    Cache-Control for this cache; the origin's Cache-Control reaches the client unchanged."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(
        "/cdn",
        Canned(headers=[("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600")]),
    )
    origin.on(
        "/short",
        Canned(headers=[("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=1")]),
    )
    origin.on(
        "/ours",
        Canned(
            headers=[
                ("Cache-Control", "max-age=3600"),
                ("CDN-Cache-Control", "max-age=3600"),
                ("Edgeproxy-Cache-Control", "no-store"),
            ]
        ),
    )
    origin.on(
        "/bad",
        Canned(headers=[("Cache-Control", "no-store"), ("CDN-Cache-Control", 'max-age="600"')]),
    )
    for p in ("/cdn", "/short", "/ours", "/bad"):
        await get(edge.url + p)
    clock.advance(10)
    r = await get(edge.url + "/cdn")
    assert "hit" in r.cache_status and r.headers["Cache-Control"] == "no-store"
    assert r.headers["CDN-Cache-Control"] == "max-age=600"
    r = await get(edge.url + "/short")
    assert "hit" not in r.cache_status and r.headers["Cache-Control"] == "max-age=3600"
    r = await get(edge.url + "/ours")
    assert "detail=no-store" in r.cache_status
    r = await get(edge.url + "/bad")  # a wrongly typed max-age is not consumed: never reused
    assert "hit" not in r.cache_status
    assert [origin.count(p) for p in ("/cdn", "/short", "/ours", "/bad")] == [1, 2, 2, 2]
