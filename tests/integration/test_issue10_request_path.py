"""Issue 10 on the request path, at the node level (a real origin, a real edge, real sockets):
content-coded copies of listed bodies, upstream hygiene (Forwarded, Max-Forwards), stale
serving that would override no-cache, heuristic storage of Cookie requests, and per-site case
sensitivity of the blocklist."""

from __future__ import annotations

import gzip
import hashlib
import random
import zlib

import brotli
import msgspec
import pytest

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.config import Site
from tests.integration.conftest import config
from tests.integration.helpers_cache import (
    Canned,
    get,
    http_date,
    not_stored,
    scripted_edge,
    use_clock,
)

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

PROTECTED = b"PROTECTED MANGA CHAPTER " * 40
DIGEST = hashlib.sha256(PROTECTED).hexdigest()


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


CODED = [
    ("gzip", gzip.compress(PROTECTED)),
    ("x-gzip", gzip.compress(PROTECTED)),
    ("GZIP", gzip.compress(PROTECTED)),
    ("deflate", zlib.compress(PROTECTED)),
    ("deflate", _raw_deflate(PROTECTED)),
    ("br", brotli.compress(PROTECTED)),
    ("zstd", zstd.compress(PROTECTED)),
    ("gzip, br", brotli.compress(gzip.compress(PROTECTED))),
    ("identity", PROTECTED),
]


def _listed() -> BlockEntry:
    return BlockEntry(id="d-1", type=EntryType.SHA256, value=DIGEST, notice="N-1", reason="t")


@pytest.mark.parametrize("cacheable", [True, False], ids=["stored", "pass-through"])
@pytest.mark.parametrize(
    ("coding", "body"), CODED, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CODED)]
)
async def test_content_coded_copy_of_a_listed_body_is_451_issue_10(
    origin_server, make_edge, coding: str, body: bytes, cacheable: bool
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    cc = "max-age=600" if cacheable else "no-store"
    origin.on(
        "/ch1", Canned(headers=[("Content-Encoding", coding), ("Cache-Control", cc)], body=body)
    )
    edge.block(_listed())
    for _ in range(2):
        r = await get(edge.url + "/ch1", headers={"Accept-Encoding": "gzip, br, zstd"})
        assert r.status == 451 and PROTECTED not in r.body and body not in r.body
    assert edge.pipeline.memory.stats().objects == 0


async def test_coded_body_unlisted_is_delivered_as_sent(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    other = gzip.compress(b"an unlisted chapter")
    origin.on(
        "/ok",
        Canned(headers=[("Content-Encoding", "gzip"), ("Cache-Control", "max-age=60")], body=other),
    )
    edge.block(_listed())
    r = await get(edge.url + "/ok")
    assert r.status == 200 and r.body == other and r.headers["Content-Encoding"] == "gzip"
    r = await get(edge.url + "/ok")
    assert r.status == 200 and "hit" in r.cache_status


BOMB = gzip.compress(b"\0" * (64 << 20))


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("compress", b"\x1f\x9d\x90anything"),  # a coding the edge cannot remove
        ("gzip", b"\x1f\x8b\x08\x00garbage-not-gzip"),  # corrupt
        ("gzip", gzip.compress(PROTECTED)[:-12]),  # truncated
        ("br", b"\xff\xff\xff\xff not brotli"),
        ("gzip", BOMB),  # over decode_max_bytes below
        ("gzip, gzip, gzip, gzip, gzip", b"unlisted"),  # too many stacked codings
    ],
    ids=["unknown", "corrupt", "truncated", "bad-br", "bomb", "stacked"],
)
async def test_bodies_that_cannot_be_checked_are_refused_issue_10(
    origin_server, make_edge, coding: str, body: bytes
) -> None:
    origin, edge = await scripted_edge(
        origin_server, make_edge, blocklist__decode_max_bytes=4 << 20
    )
    origin.on(
        "/x",
        Canned(headers=[("Content-Encoding", coding), ("Cache-Control", "max-age=60")], body=body),
    )
    edge.block(_listed())
    before = edge.stats.undecodable_bodies
    r = await get(edge.url + "/x")
    assert r.status == 502 and r.body != body
    assert edge.stats.undecodable_bodies == before + 1
    assert edge.pipeline.memory.stats().objects == 0


async def test_client_forwarded_is_replaced_issue_10(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/f", Canned(headers=[("Cache-Control", "no-store")]))
    for spoof in ("for=1.2.3.4;host=evil.example;proto=https", 'for="[::1]", for=10.0.0.1'):
        await get(edge.url + "/f", headers={"Forwarded": spoof})
        seen = origin.last("/f").headers.getall("Forwarded")
        assert seen == ["for=127.0.0.1;host=127.0.0.1;proto=http"] or all(
            "evil" not in v and "1.2.3.4" not in v and "10.0.0.1" not in v for v in seen
        )
        assert len(seen) == 1 and seen[0].startswith("for=127.0.0.1;")


async def test_max_forwards_zero_is_answered_by_the_edge_rfc9110_7_6_2(
    origin_server, make_edge
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/t", Canned(headers=[("Cache-Control", "no-store")]))
    r = await get(
        edge.url + "/t",
        method="TRACE",
        headers={"Max-Forwards": "0", "Cookie": "session=secret", "X-Probe": "p1"},
    )
    assert r.status == 200 and r.headers["Content-Type"] == "message/http"
    assert r.body.startswith(b"TRACE /t HTTP/1.1\r\n") and b"X-Probe: p1" in r.body
    assert b"secret" not in r.body
    r = await get(edge.url + "/t", method="OPTIONS", headers={"Max-Forwards": "0"})
    assert r.status == 200 and "TRACE" in r.headers["Allow"]
    assert origin.count("/t") == 0
    await get(edge.url + "/t", method="TRACE", headers={"Max-Forwards": "3"})
    assert origin.count("/t") == 1 and origin.last("/t").headers["Max-Forwards"] == "2"


@pytest.mark.parametrize(
    "directive", ["no-cache", "must-revalidate", "proxy-revalidate", "s-maxage=1"]
)
async def test_stale_grace_never_overrides_revalidation_issue_10(
    origin_server, make_edge, directive: str
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge, cache__max_stale_serve_s=3600.0)
    clock = use_clock(edge, origin)
    origin.on(
        "/r",
        Canned(
            headers=[("Cache-Control", f"max-age=1, {directive}"), ("ETag", '"v1"')], body=b"old"
        ),
        Canned(status=503, body=b"down"),
    )
    origin.on(
        "/plain",
        Canned(headers=[("Cache-Control", "max-age=1")], body=b"old"),
        Canned(status=503, body=b"down"),
    )
    await get(edge.url + "/r")
    await get(edge.url + "/plain")
    clock.advance(10)
    r = await get(edge.url + "/r")
    assert r.status == 503 and r.body == b"down"
    r = await get(edge.url + "/plain")  # the grace still works where nothing forbids it
    assert r.status == 200 and r.body == b"old"


@pytest.mark.parametrize(
    ("headers", "stored"),
    [
        ([("Last-Modified", "LM")], False),  # heuristic only: not stored
        ([("Last-Modified", "LM"), ("Cache-Control", "public")], True),
        ([("Cache-Control", "max-age=60")], True),
        ([("Expires", "EXP")], True),
    ],
    ids=["heuristic", "public", "max-age", "expires"],
)
async def test_cookie_request_not_stored_on_heuristics_issue_10(
    origin_server, make_edge, headers: list[tuple[str, str]], stored: bool
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    fill = {"LM": http_date(-86400), "EXP": http_date(3600)}
    origin.on("/c", Canned(headers=[(n, fill.get(v, v)) for n, v in headers], body=b"mine"))
    before = not_stored(edge, "cookie-heuristic")
    await get(edge.url + "/c", headers={"Cookie": "user=alice"})
    r = await get(edge.url + "/c")
    assert ("hit" in r.cache_status) is stored
    assert origin.count("/c") == (1 if stored else 2)
    assert not_stored(edge, "cookie-heuristic") - before == (0 if stored else 1)


async def test_cookie_heuristic_storage_can_be_enabled(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge, cache__heuristic_with_cookie=True)
    origin.on("/c", Canned(headers=[("Last-Modified", http_date(-86400))], body=b"shared"))
    await get(edge.url + "/c", headers={"Cookie": "user=alice"})
    r = await get(edge.url + "/c")
    assert "hit" in r.cache_status and origin.count("/c") == 1


@pytest.mark.parametrize("sensitive", [False, True])
async def test_site_declares_case_sensitive_paths_issue_10(
    origin_server, make_edge, sensitive: bool
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    await edge.close()
    cfg = config(edge.cfg.sites[0].origin)
    site = Site(
        name="test", hosts=["*"], origin=cfg.sites[0].origin, case_sensitive_paths=sensitive
    )
    edge = await make_edge("", cfg=msgspec.structs.replace(cfg, sites=[site]))
    origin.on("/a", Canned(headers=[("Cache-Control", "max-age=60")], body=b"lower"))
    origin.on("/A", Canned(headers=[("Cache-Control", "max-age=60")], body=b"upper"))
    edge.block(BlockEntry(id="u-1", type=EntryType.URL, value="http://127.0.0.1/a", reason="t"))
    assert (await get(edge.url + "/a")).status == 451
    r = await get(edge.url + "/A")
    if sensitive:
        assert r.status == 200 and r.body == b"upper"
    else:
        assert r.status == 451 and origin.count("/A") == 0


def _ranged_origin(seen: list[dict[str, str]], *, always_partial: bool = False):  # type: ignore[no-untyped-def]
    """An origin that honours Range as most do (206 of the part asked for), or (always_partial)
    answers every request with a 206 part of the protected body."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        seen.append(dict(request.headers))
        rng = request.headers.get("Range")
        if always_partial or (rng and rng.startswith("bytes=")):
            start, _, end = (rng or "bytes=0-99")[6:].partition("-")
            first, last = int(start), min(int(end or len(PROTECTED) - 1), len(PROTECTED) - 1)
            return web.Response(
                status=206,
                body=PROTECTED[first : last + 1],
                headers={
                    "Content-Range": f"bytes {first}-{last}/{len(PROTECTED)}",
                    "Cache-Control": "no-store",
                },
            )
        return web.Response(body=PROTECTED, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.mark.parametrize(
    ("method", "headers", "data"),
    [
        ("GET", {"Range": "bytes=0-99"}, b"x"),  # a GET with a body is passed through
        ("GET", {"Range": "bytes=100-"}, b"x"),
        ("GET", {"Range": "bytes=0-99", "If-Range": '"v1"'}, b"x"),
        ("GET", {"Range": "bytes=0-99", "Authorization": "Bearer u"}, None),
        ("GET", {"Range": "bytes=-50"}, None),
        ("GET", {"Range": "bytes=0-99"}, None),
    ],
    ids=["pass", "pass-open", "pass-if-range", "authorization", "suffix", "plain"],
)
async def test_a_range_never_gets_a_listed_part_through_issue_10(
    origin_server, make_edge, method: str, headers: dict[str, str], data: bytes | None
) -> None:
    """A part of a listed body hashes to something else, so the edge never asks an origin for
    a part: Range and If-Range are not forwarded on any path, the whole body is judged (451),
    and ranges are cut at the edge from judged wholes."""
    seen: list[dict[str, str]] = []
    edge = await make_edge(await origin_server(_ranged_origin(seen)))
    edge.block(_listed())
    r = await get(edge.url + "/ch1", method=method, headers=headers, data=data)
    assert r.status == 451 and PROTECTED[:50] not in r.body and PROTECTED[-50:] not in r.body
    assert seen and all("Range" not in h and "If-Range" not in h for h in seen)


async def test_a_partial_answer_never_asked_for_is_502_issue_10(origin_server, make_edge) -> None:
    """An origin that answers 206 anyway (the edge sent no Range) gets 502: a part cannot be
    judged against the blocklist, so it is never relayed nor stored."""
    seen: list[dict[str, str]] = []
    edge = await make_edge(await origin_server(_ranged_origin(seen, always_partial=True)))
    edge.block(_listed())
    for method, data in (("GET", None), ("POST", b"x"), ("GET", b"x")):
        r = await get(edge.url + "/ch1", method=method, data=data)
        assert r.status == 502 and "detail=origin-protocol" in r.cache_status
        assert PROTECTED[:50] not in r.body
    assert edge.pipeline.memory.stats().objects == 0


async def test_unlisted_unstored_ranges_get_the_whole_issue_10(origin_server, make_edge) -> None:
    """Without a listing, a ranged request for what is not stored gets the whole 200, judged
    (RFC 9110 §14.2 lets a server ignore Range); stored objects are cut at the edge
    (test_cache_validation.py::test_range_miss_fills_cache_then_206_rfc9110_s14)."""
    seen: list[dict[str, str]] = []
    edge = await make_edge(await origin_server(_ranged_origin(seen)))
    r = await get(edge.url + "/ch1", headers={"Range": "bytes=0-99"})
    assert r.status == 200 and r.body == PROTECTED  # no-store: relayed whole
    r = await get(edge.url + "/ch1", headers={"Range": "bytes=0-99"}, data=b"x")
    assert r.status == 200 and r.body == PROTECTED
    assert all("Range" not in h for h in seen)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


TRANSFER_CODED = {
    # Transfer-Encoding is hop-by-hop: relayed unlabelled, such a body would reach the client
    # as coded bytes its owner can decode by hand, and be judged as those bytes.
    "gzip-chunked": (b"gzip, chunked", _chunk(gzip.compress(PROTECTED)) + b"0\r\n\r\n", False),
    "deflate-chunked": (b"deflate,chunked", _chunk(zlib.compress(PROTECTED)) + b"0\r\n\r\n", False),
    "gzip-to-close": (b"gzip", gzip.compress(PROTECTED), True),
    "two-lines": (
        b"gzip\r\nTransfer-Encoding: chunked",
        _chunk(gzip.compress(PROTECTED)) + b"0\r\n\r\n",
        False,
    ),
}


@pytest.mark.parametrize("variant", TRANSFER_CODED, ids=list(TRANSFER_CODED))
@pytest.mark.parametrize("cc", ["max-age=60", "no-store"])
async def test_transfer_codings_other_than_chunked_are_refused_issue_10(
    make_edge, variant: str, cc: str
) -> None:
    import asyncio

    te, body, close = TRANSFER_CODED[variant]
    head = b"HTTP/1.1 200 OK\r\nCache-Control: %b\r\nTransfer-Encoding: %b\r\n\r\n" % (
        cc.encode(),
        te,
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
            if close:
                writer.close()
            else:
                await reader.read()  # until the edge closes its side
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        edge = await make_edge(f"http://127.0.0.1:{port}")
        edge.block(_listed())
        r = await get(edge.url + "/ch1")
        assert r.status == 502 and "detail=origin-protocol" in r.cache_status
        assert PROTECTED[:50] not in r.body and gzip.compress(PROTECTED)[:20] not in r.body
        assert edge.pipeline.memory.stats().objects == 0
    finally:
        server.close()


# 300 KiB that codings do not shrink (a real video or archive): over the small spools below
# in every coding, and never mistaken for a decompression bomb.
LARGE = random.Random(7).randbytes(300 << 10)
LARGE_DIGEST = hashlib.sha256(LARGE).hexdigest()


def _large_listed() -> BlockEntry:
    return BlockEntry(id="d-big", type=EntryType.SHA256, value=LARGE_DIGEST, notice="N-2")


@pytest.mark.parametrize(
    ("coding", "body"),
    [("identity", LARGE), ("gzip", gzip.compress(LARGE)), ("br", brotli.compress(LARGE))],
)
@pytest.mark.parametrize("cc", ["no-store", "max-age=600"])
async def test_a_listed_body_over_the_spool_is_never_delivered_issue_10(
    origin_server, make_edge, coding: str, body: bytes, cc: str
) -> None:
    """Over `blocklist.hash_spool_max_bytes` (and `cache.max_object_bytes`), the default
    oversize policy holds the body on disk until it is judged whole: a listed one is 451 on
    every request, not delivered once and found out afterwards."""
    origin, edge = await scripted_edge(
        origin_server,
        make_edge,
        blocklist__hash_spool_max_bytes=64 << 10,
        cache__max_object_bytes=32 << 10,
    )
    headers = [("Cache-Control", cc)] + (
        [("Content-Encoding", coding)] if coding != "identity" else []
    )
    origin.on("/big", Canned(headers=headers, body=body))
    edge.block(_large_listed())
    for _ in range(2):
        r = await get(edge.url + "/big")
        assert r.status == 451 and len(r.body) < 1024 and LARGE[:256] not in r.body
    assert edge.pipeline.fetcher.budget.used == 0


async def test_an_unlisted_body_over_the_spool_is_delivered_whole_issue_10(
    origin_server, make_edge
) -> None:
    origin, edge = await scripted_edge(
        origin_server, make_edge, blocklist__hash_spool_max_bytes=64 << 10
    )
    origin.on("/big", Canned(headers=[("Cache-Control", "no-store")], body=LARGE))
    edge.block(_listed())  # lists something else
    r = await get(edge.url + "/big")
    assert r.status == 200 and r.body == LARGE and r.headers["Content-Length"] == str(len(LARGE))
    assert edge.pipeline.fetcher.budget.used == 0


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"blocklist__disk_spool_max_bytes": 128 << 10}, 502),  # too large to judge on disk
        ({"blocklist__oversize_policy": "refuse"}, 502),
    ],
    ids=["over-the-disk-spool", "refuse"],
)
async def test_bodies_that_cannot_be_held_to_be_judged_are_refused_issue_10(
    origin_server, make_edge, overrides: dict[str, object], status: int
) -> None:
    origin, edge = await scripted_edge(
        origin_server, make_edge, blocklist__hash_spool_max_bytes=64 << 10, **overrides
    )
    origin.on("/big", Canned(headers=[("Cache-Control", "no-store")], body=LARGE))
    r = await get(edge.url + "/big")
    assert r.status == status and LARGE[:256] not in r.body


async def test_a_large_body_in_an_unknown_coding_goes_out_whole_under_raw_only(
    origin_server, make_edge
) -> None:
    """unknown_coding_policy = "raw-only": a body in a coding the edge cannot remove, too large
    for the memory spool, is judged by its raw digest on disk and then sent whole."""
    origin, edge = await scripted_edge(
        origin_server,
        make_edge,
        blocklist__hash_spool_max_bytes=64 << 10,
        blocklist__unknown_coding_policy="raw-only",
    )
    origin.on(
        "/odd",
        Canned(headers=[("Cache-Control", "no-store"), ("Content-Encoding", "x-odd")], body=LARGE),
    )
    r = await get(edge.url + "/odd")
    assert r.status == 200 and r.body == LARGE
    assert r.headers["Content-Length"] == str(len(LARGE))
    edge.block(BlockEntry(id="raw", type=EntryType.SHA256, value=LARGE_DIGEST))
    r = await get(edge.url + "/odd")  # the raw bytes are what is listed: judged on disk
    assert r.status == 451 and LARGE[:256] not in r.body
