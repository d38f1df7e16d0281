"""Request coalescing (issue 2, item 6): one origin request per cold key, cancelled leaders,
hit-for-miss, and followers whose Vary selection differs from the leader's."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.integration.helpers_cache import Canned, get, scripted_edge


async def test_twenty_concurrent_misses_make_one_origin_request(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/cold", Canned(headers=[("Cache-Control", "max-age=600")], body=b"c", delay_s=0.3))
    results = await asyncio.gather(*(get(edge.url + "/cold") for _ in range(20)))
    assert all(r.status == 200 and r.body == b"c" for r in results)
    assert origin.count("/cold") == 1
    assert sum("collapsed" in r.cache_status for r in results) == 19
    assert edge.stats.coalesced == 19


async def test_cancelled_leader_does_not_strand_followers(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/l", Canned(headers=[("Cache-Control", "max-age=600")], body=b"L", delay_s=0.4))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.server.port)
    host = edge.url.removeprefix("http://").encode()
    writer.write(b"GET /l HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    followers = [asyncio.ensure_future(get(edge.url + "/l")) for _ in range(5)]
    await asyncio.sleep(0.05)
    writer.close()  # the leader's client goes away mid-fetch
    results = await asyncio.gather(*followers)
    assert all(r.status == 200 and r.body == b"L" for r in results)
    assert origin.count("/l") == 1
    r = await get(edge.url + "/l")
    assert "hit" in r.cache_status


async def test_uncacheable_response_followers_not_serialised(origin_server, make_edge) -> None:
    """Hit-for-miss: once a key answered no-store, the next burst goes to the origin in
    parallel instead of queueing behind one fetch."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    active = peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.2)
        active -= 1
        return web.Response(body=b"ns", headers={"Cache-Control": "no-store"})

    origin.handlers["/ns"] = slow
    r = await get(edge.url + "/ns")
    assert "detail=no-store" in r.cache_status
    assert edge.pipeline.coalescer.is_hit_for_miss(
        ((f"127.0.0.1:{edge.server.port}", b"/ns"), ())
    )
    peak = 0
    results = await asyncio.gather(*(get(edge.url + "/ns") for _ in range(5)))
    assert all(r.body == b"ns" for r in results)
    assert origin.count("/ns") == 6
    assert peak == 5


async def test_follower_with_different_vary_value_fetches_its_own(origin_server, make_edge) -> None:
    """RFC 9111 §4.1: a follower whose request differs in a field the leader's response
    varies on cannot use that response; it gets its own fetch."""
    origin, edge = await scripted_edge(origin_server, make_edge)

    def answer(request):  # type: ignore[no-untyped-def]
        return Canned(
            headers=[("Cache-Control", "max-age=600"), ("Vary", "Accept-Language")],
            body=request.headers.get("Accept-Language", "-").encode(),
            delay_s=0.2,
        )

    origin.on("/v", answer)
    en, de = await asyncio.gather(
        get(edge.url + "/v", headers={"Accept-Language": "en"}),
        get(edge.url + "/v", headers={"Accept-Language": "de"}),
    )
    assert en.body == b"en" and de.body == b"de"
    assert origin.count("/v") == 2
    r = await get(edge.url + "/v", headers={"Accept-Language": "de"})
    assert r.body == b"de" and "hit" in r.cache_status


async def test_authorization_requests_never_coalesced_rfc9111_s3_5(
    origin_server, make_edge
) -> None:
    """Requests with Authorization each reach the origin: another user's answer is not theirs."""
    origin, edge = await scripted_edge(origin_server, make_edge)

    def answer(request):  # type: ignore[no-untyped-def]
        return Canned(
            headers=[("Cache-Control", "max-age=600")],
            body=request.headers["Authorization"].encode(),
            delay_s=0.2,
        )

    origin.on("/me", answer)
    a, b = await asyncio.gather(
        get(edge.url + "/me", headers={"Authorization": "a"}),
        get(edge.url + "/me", headers={"Authorization": "b"}),
    )
    assert (a.body, b.body) == (b"a", b"b") and origin.count("/me") == 2
