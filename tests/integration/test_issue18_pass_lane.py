"""Issue 18, the pass-through express lane (proxy/phases/lane.py): a plain GET whose answer the
full path already found not storable is relayed in one step, and must be answered exactly as
the full path answers it (status, fields, body, Cache-Status, Via, counters, access log) and
never deliver anything listed: every spelling of a listed target, a list change between two
requests, a listed digest. What the lane knows is forgotten when it no longer holds: an answer
become storable, a reload, a lapsed hit-for-miss mark.

Each test runs two edges on one origin on 127.0.0.1: the lane's (the default) and the full
path's (`cache.pass_lane_max_entries = 0`), and sends both the same raw requests."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from email.utils import formatdate
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from proxy.blocklist.model import Entry, EntryType
from proxy.sites import SiteTable
from tests.integration.conftest import Edge, raw_request
from tests.integration.test_blocklist_evasions import LISTED_VARIANTS, VARIANTS, serves_listed

DATE = formatdate(usegmt=True)  # fixed: the lane knows a head by every field as sent
BODY = bytes(range(256)) * 4  # 1 KiB
PROTECTED = b"PROTECTED CHAPTER, NOT TO BE SEEN"

# name -> (status, fields, body): answers the full path does not store, for a plain GET.
SHAPES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "no-store": (200, {"Cache-Control": "no-store"}, BODY),
    "private": (200, {"Cache-Control": "private, max-age=3600"}, BODY),
    "set-cookie": (200, {"Set-Cookie": "s=1"}, BODY),  # no freshness: never stored with it
    "fresh-cookie": (200, {"Cache-Control": "max-age=3600", "Set-Cookie": "s=1"}, BODY),
    "vary-star": (200, {"Cache-Control": "max-age=3600", "Vary": "*"}, BODY),
    "relayed": (
        200,
        {
            "Cache-Control": "no-store",
            "Via": "1.1 upstream",
            "Cache-Status": "up; hit",
            "Connection": "X-Secret",
            "X-Secret": "hop-by-hop",
            "X-Kept": "end-to-end",
        },
        BODY,
    ),
    "gzip": (200, {"Cache-Control": "no-store", "Content-Encoding": "gzip"}, gzip.compress(BODY)),
    "not-found": (404, {"Cache-Control": "no-store"}, b"gone"),
    "empty": (200, {"Cache-Control": "no-store"}, b""),
}
LEARNED = {"no-store", "private", "set-cookie", "vary-star", "relayed", "empty"}


def pass_origin(state: dict[str, Any]) -> web.Application:
    """The SHAPES under /s/NAME (chunked under /chunked); anything resolving (as the laxest
    application server would) to a listed object is PROTECTED, not stored; `state["storable"]`
    makes /s/ answers storable from then on. Counts the requests it answers."""

    async def handler(request: web.Request) -> web.StreamResponse:
        state["count"] = state.get("count", 0) + 1
        if serves_listed(request.raw_path):
            return web.Response(body=PROTECTED, headers={"Cache-Control": "no-store"})
        if request.path == "/chunked":
            stream = web.StreamResponse(headers={"Cache-Control": "no-store", "Date": DATE})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            await stream.write(BODY[:100])
            await stream.write(BODY[100:])
            await stream.write_eof()
            return stream
        status, fields, body = SHAPES.get(request.path.removeprefix("/s/"), SHAPES["no-store"])
        fields = {**fields, "Date": DATE, "Content-Type": "application/octet-stream"}
        if state.get("storable"):
            fields = {"Date": DATE, "Cache-Control": "max-age=3600"}
        return web.Response(status=status, body=body, headers=fields)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def two_edges(
    origin_server: Any,
    make_edge: Any,
    tmp_path: Path,
    state: dict[str, Any],
    set_cookie_policy: str = "strip",
) -> tuple[Edge, Edge]:
    """The lane's edge and the full path's, on one origin, each with its access log."""
    url = await origin_server(pass_origin(state))
    edges = [
        await make_edge(
            url,
            log__access_log=str(tmp_path / f"{name}.log"),
            cache__pass_lane_max_entries=size,
            cache__set_cookie_policy=set_cookie_policy,
        )
        for name, size in (("lane", 1024), ("full", 0))
    ]
    lane, full = edges
    return lane, full


_PER_ANSWER = re.compile(rb"(?im)^(x-request-id): [^\r\n]*\r\n")


async def send(edge: Edge, target: str, method: str = "GET") -> bytes:
    """One raw request on its own connection; the answer with its request id line cut (the
    one part of it that differs per request)."""
    raw = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answer = await raw_request(edge.server.port, raw.encode("latin-1"), read_timeout_s=5.0)
    return _PER_ANSWER.sub(b"", answer)


async def both(lane: Edge, full: Edge, target: str, method: str = "GET") -> bytes:
    """The same request to both edges: the answers must be byte for byte the same (but for
    the edge's Date, which may tick between the two)."""
    a, b = await send(lane, target, method), await send(full, target, method)
    date = re.compile(rb"(?m)^Date: [^\r\n]*\r\n")
    assert date.sub(b"", a) == date.sub(b"", b), (target, a[:400], b[:400])
    return a


def log_rows(edge: Edge) -> list[dict[str, Any]]:
    """The edge's access log so far, less the fields that differ per exchange or edge."""
    log = edge.pipeline.access_log
    assert log is not None
    log.flush()
    rows = [json.loads(line) for line in Path(log.dest).read_text().splitlines()]
    for row in rows:
        for field in ("time", "duration_ms", "origin_ms", "request_id"):
            row.pop(field, None)
    return rows


def counters(edge: Edge) -> dict[str, Any]:
    """The worker's counters an operator reads, less latency and the lane's own."""
    keys = ("requests", "bytes", "not_stored", "origin_responses", "blocked", "origin_failures")
    return {k: getattr(edge.stats, k) for k in (*keys, "coalesced", "undecodable_bodies")}


@pytest.mark.parametrize("shape", [*SHAPES, "chunked"])
async def test_the_lane_answers_exactly_as_the_full_path(
    origin_server: Any, make_edge: Any, tmp_path: Path, shape: str
) -> None:
    lane, full = await two_edges(origin_server, make_edge, tmp_path, {})
    target = "/chunked" if shape == "chunked" else f"/s/{shape}"
    # The miss, the first hit-for-miss (the full way; the lane learns the head), then the lane.
    answers = [await both(lane, full, target) for _ in range(4)]
    answers.append(await both(lane, full, target, "HEAD"))  # HEAD is not the lane's
    status, fields, body = SHAPES.get(shape, (200, {}, BODY))
    assert answers[-2].startswith(b"HTTP/1.1 %d " % status) and answers[-2].endswith(body)
    assert b"\r\nVia: " in answers[-2] and b"\r\nCache-Status: " in answers[-2]
    assert lane.stats.pass_lane == (2 if shape in LEARNED else 0)
    assert full.stats.pass_lane == 0
    assert counters(lane) == counters(full)
    assert log_rows(lane) == log_rows(full)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (EntryType.URL, "http://127.0.0.1/s/no-store"),
        (EntryType.PREFIX, "http://127.0.0.1/s/"),
        (EntryType.HOST, "127.0.0.1"),
    ],
    ids=["url", "prefix", "host"],
)
async def test_a_list_change_between_two_lane_requests_refuses_the_next_at_once(
    origin_server: Any, make_edge: Any, tmp_path: Path, type_: EntryType, value: str
) -> None:
    state: dict[str, Any] = {}
    lane, full = await two_edges(origin_server, make_edge, tmp_path, state)
    for _ in range(3):
        await both(lane, full, "/s/no-store")
    assert lane.stats.pass_lane == 1
    for edge in (lane, full):
        edge.block(Entry(id="e18", type=type_, value=value, notice="N-18"))
    before = state["count"]
    for target in ("/s/no-store", "/s/no-store?", "/s//no-store", "/S/NO-STORE"):
        answer = await both(lane, full, target)
        assert answer.startswith(b"HTTP/1.1 451 ") and BODY not in answer, (target, answer)
    assert lane.stats.pass_lane == 1 and state["count"] == before  # none reached the origin
    assert counters(lane) == counters(full)
    assert log_rows(lane) == log_rows(full)


async def test_no_spelling_of_a_listed_target_is_relayed_by_the_lane(
    origin_server: Any, make_edge: Any, tmp_path: Path
) -> None:
    """Every spelling the evasion tests try, first learned by the lane while unlisted, then
    listed: each answered as the full path answers it, none with the protected body."""
    lane, full = await two_edges(origin_server, make_edge, tmp_path, {})
    targets = [*LISTED_VARIANTS, *VARIANTS, "/manga/ch1"]
    for target in targets:
        for _ in range(3):
            await both(lane, full, target)
    assert lane.stats.pass_lane > 0
    for edge in (lane, full):
        edge.block(
            Entry(id="u", type=EntryType.URL, value="http://127.0.0.1/manga/ch1", notice="N"),
            Entry(id="p", type=EntryType.PREFIX, value="http://127.0.0.1/manga/", notice="N"),
            Entry(id="w", type=EntryType.URL, value="http://127.0.0.1/watch?v=42", notice="N"),
        )
    laned = lane.stats.pass_lane
    for target in targets:
        answer = await both(lane, full, target)
        assert PROTECTED not in answer, (target, answer[:300])
        assert answer[9:12] in (b"451", b"400"), (target, answer[:300])
    assert lane.stats.pass_lane == laned
    assert counters(lane) == counters(full)


@pytest.mark.parametrize("shape", ["no-store", "gzip"])
async def test_a_listed_digest_is_refused_at_once_on_the_lane(
    origin_server: Any, make_edge: Any, tmp_path: Path, shape: str
) -> None:
    lane, full = await two_edges(origin_server, make_edge, tmp_path, {})
    for _ in range(3):
        await both(lane, full, f"/s/{shape}")
    digest = hashlib.sha256(BODY).hexdigest()  # of the identity: gzip's too
    for edge in (lane, full):
        edge.block(Entry(id="d18", type=EntryType.SHA256, value=digest, notice="N-d"))
    for _ in range(2):
        answer = await both(lane, full, f"/s/{shape}")
        assert answer.startswith(b"HTTP/1.1 451 ") and BODY not in answer
    assert counters(lane) == counters(full)
    assert log_rows(lane) == log_rows(full)


async def test_an_answer_turned_storable_is_stored_not_relayed(
    origin_server: Any, make_edge: Any, tmp_path: Path
) -> None:
    state: dict[str, Any] = {}
    lane, full = await two_edges(origin_server, make_edge, tmp_path, state)
    for _ in range(3):
        await both(lane, full, "/s/no-store")
    state["storable"] = True
    stored = await both(lane, full, "/s/no-store")
    assert b"; stored" in stored
    count = state["count"]
    hit = await both(lane, full, "/s/no-store")
    assert b"Cache-Status: edgeproxy; hit" in hit and state["count"] == count
    assert lane.stats.pass_lane == 1
    assert counters(lane) == counters(full)


async def test_a_reload_forgets_the_heads_the_lane_knew(
    origin_server: Any, make_edge: Any, tmp_path: Path
) -> None:
    """With `set_cookie_policy = "pass"` a fresh answer with Set-Cookie is not stored; a
    reload to "strip" lets it be stored (without the cookie), and the next request goes the
    full way, which stores it."""
    lane, full = await two_edges(origin_server, make_edge, tmp_path, {}, "pass")
    for _ in range(3):
        await both(lane, full, "/s/fresh-cookie")
    assert lane.stats.pass_lane == 1
    for edge in (lane, full):
        cache = msgspec.structs.replace(edge.cfg.cache, set_cookie_policy="strip")
        cfg = msgspec.structs.replace(edge.cfg, cache=cache)
        edge.pipeline.reconfigure(cfg, SiteTable(cfg))
    assert b"; stored" in await both(lane, full, "/s/fresh-cookie")
    assert b"Cache-Status: edgeproxy; hit" in await both(lane, full, "/s/fresh-cookie")
    assert lane.stats.pass_lane == 1
    assert counters(lane) == counters(full)


async def test_a_lapsed_mark_sends_the_request_the_usual_way(
    origin_server: Any, make_edge: Any, tmp_path: Path
) -> None:
    lane, full = await two_edges(origin_server, make_edge, tmp_path, {})
    for _ in range(3):
        await both(lane, full, "/s/no-store")
    assert lane.stats.pass_lane == 1
    for edge in (lane, full):  # the hit-for-miss marks lapse (cache.hit_for_miss_s later)
        coalescer = edge.pipeline.coalescer
        later = coalescer._clock() + edge.cfg.cache.hit_for_miss_s + 1
        coalescer._clock = lambda later=later: later
    await both(lane, full, "/s/no-store")  # a miss again: coalesced, not the lane
    assert lane.stats.pass_lane == 1
    await both(lane, full, "/s/no-store")  # marked again: the lane
    assert lane.stats.pass_lane == 2
    assert counters(lane) == counters(full)
    assert log_rows(lane) == log_rows(full)
