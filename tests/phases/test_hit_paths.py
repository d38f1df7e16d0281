"""Issue 9: one hit path. Every way a hit is answered (the front's fast answer, the memo in
front of admit when an access log needs the request, the synchronous lookup of the first hit,
pipelined requests) sends the same bytes; and the phases walk miss → store → hit → revalidate
with a fake clock and an in-memory origin, no sockets."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from proxy.front.wire import WRITEV_MIN_BYTES
from proxy.origin.memory import MemoryResponse
from tests.integration.helpers_cache import http_date

REQUEST = b"GET /a HTTP/1.1\r\nHost: edge.test\r\n\r\n"


def origin_handler(seen: list[tuple[str, bytes]], payload: bytes = b"hello"):  # type: ignore[no-untyped-def]
    def handler(method, path_query, headers, body):  # type: ignore[no-untyped-def]
        seen.append((method, path_query))
        if headers.get("If-None-Match") == '"v1"':
            return MemoryResponse(304, [(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=60")])
        return MemoryResponse(
            200,
            [
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"v1"'),
                (b"Date", http_date(0, 1_000_000.0).encode()),
            ],
            payload,
        )

    return handler


async def until(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


_REQUEST_ID = re.compile(rb"X-Request-Id: [a-z2-7]{8}-[0-9a-f]+\r\n")


async def answers(worker, n: int, *, pipelined: bool = False) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The answers' bytes, each with its one request id line (unique per request) cut out."""
    conn, t = worker.connect()
    if pipelined:
        conn.data_received(REQUEST * n)
    else:
        for _ in range(n):
            conn.data_received(REQUEST)
    await until(lambda: len(t.writes) >= n)
    conn.connection_lost(None)
    worker.gathered = getattr(worker, "gathered", 0) + t.gathered
    out = []
    for data in t.writes:
        cut, found = _REQUEST_ID.subn(b"", data, count=1)
        assert found == 1, data[:300]
        out.append(cut)
    return out


# A large body goes out apart from its head (`wire.wire`: one writelines): the same bytes.
BODIES = [b"hello", b"hello" + bytes(range(256)) * 400]


@pytest.mark.parametrize("body", BODIES, ids=["5B", "100KiB"])
async def test_every_way_a_hit_is_answered_sends_identical_bytes(
    make_worker, tmp_path: Path, body: bytes
) -> None:
    seen: list[tuple[str, bytes]] = []
    fast = await make_worker(origin_handler(seen, body))
    logged = await make_worker(
        origin_handler(seen, body), log__access_log=str(tmp_path / "access.log")
    )
    # Both answer hits before any request object; the logging one is handed one to log.
    assert fast.parts.server.fast_answer is not None and logged.parts.server.fast_answer_logs
    assert not fast.parts.server.fast_answer_logs
    for w in (fast, logged):
        w.clock.now = 1_000_000.0
        miss, first_hit, memo_hit = await answers(w, 3)
        assert b"fwd=miss" in miss and miss.endswith(body)
        assert first_hit == memo_hit, "the synchronous lookup and the memo differ"
        piped = await answers(w, 3, pipelined=True)
        assert piped == [memo_hit] * 3
        w.hit = memo_hit  # type: ignore[attr-defined]
    assert fast.hit == logged.hit  # type: ignore[attr-defined]
    assert (
        fast.hit.startswith(b"HTTP/1.1 200 OK\r\n")
        and b"Cache-Status: edgeproxy; hit; ttl=60" in fast.hit
        and fast.hit.endswith(b"\r\n\r\n" + body)
    )  # type: ignore[attr-defined]
    # Every answer with the large body (the spooled miss, 2 hits, 3 pipelined hits per worker)
    # went out head and body apart; the small one always as one write.
    large = len(body) >= WRITEV_MIN_BYTES
    assert [fast.gathered, logged.gathered] == ([6, 6] if large else [0, 0])
    assert [p for _, p in seen] == [b"/a", b"/a"]  # one miss per worker, nothing more
    # The logging worker's fast answers are logged like any other: a line per request.
    assert logged.parts.access_log is not None
    logged.parts.access_log.flush()
    lines = [json.loads(x) for x in (tmp_path / "access.log").read_text().splitlines()]
    assert [r["result"] for r in lines] == ["miss"] + ["hit"] * 5
    assert all(r["target"] == "/a" and r["request_id"] and r["status"] == 200 for r in lines)


async def test_phases_walk_miss_store_hit_revalidate(make_worker) -> None:
    seen: list[tuple[str, bytes]] = []
    w = await make_worker(origin_handler(seen))
    w.clock.now = 1_000_000.0
    miss, hit = await answers(w, 2)
    assert b"fwd=miss; fwd-status=200; stored; ttl=60" in miss and b"; hit; ttl=60" in hit
    w.clock.advance(61)  # stale: the next request validates with the stored ETag
    (revalidated,) = await answers(w, 1)
    assert b"fwd=stale; fwd-status=304; stored" in revalidated and revalidated.endswith(b"hello")
    assert w.origin.requests[-1].headers.get("If-None-Match") == '"v1"'
    assert len(seen) == 2
