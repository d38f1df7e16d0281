"""Issue 18: the pass-through lane answered from the origin connection's callbacks.

A lane request (a plain GET whose answer head the full path already judged not storable) is
written on an idle pooled origin connection at once and settled from the head's future, with
no task and no coroutine (`Pipeline._Relay`, `ExpressLane.express_send`). Everything that is
not the plain case goes on in the walk: the body still arriving, an unknown head, a pooled
connection the origin had dropped, a timeout, a refused answer, an answer the worker's body
budget cannot hold, a client gone before the answer. Each must come out as the awaited lane
and the full path answer it.

The origin here is a raw asyncio server, so a test decides exactly what each request gets:
its head and body in one write or two, nothing, a close, a 206, an interim head.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any

import pytest

from tests.integration.conftest import Edge, raw_request

DATE = formatdate(usegmt=True)  # fixed: the lane knows a head by every field as sent
BODY = bytes(range(256)) * 4
HEAD = (
    b"HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/octet-stream\r\n"
    b"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n" % (DATE.encode(), len(BODY))
)

Behaviour = Callable[[asyncio.StreamWriter, int], Awaitable[bool]]


class ScriptedOrigin:
    """Answers each request by its path's script: the nth request for a path (from 1) gets
    `scripts[path](writer, n)`, which returns False to close the connection. Counts what it
    was sent and the connections it took."""

    def __init__(self) -> None:
        self.scripts: dict[str, Behaviour] = {}
        self.seen: dict[str, int] = {}
        self.connections = 0
        self.release = asyncio.Event()  # what a held answer waits for
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                path = head.split(b" ", 2)[1].decode()
                n = self.seen[path] = self.seen.get(path, 0) + 1
                if not await self.scripts.get(path, answer)(writer, n):
                    return
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        self.release.set()


async def answer(writer: asyncio.StreamWriter, n: int) -> bool:
    writer.write(HEAD + BODY)
    return True


def on_third(act: Behaviour) -> Behaviour:
    """A path's script: `act` for its third request (the first the lane sends itself), a
    plain answer for every other."""

    async def script(writer: asyncio.StreamWriter, n: int) -> bool:
        return await act(writer, n) if n == 3 else await answer(writer, n)

    return script


async def sent_and_held(
    edge: Edge, origin: ScriptedOrigin, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET for `path` on a connection kept open, once the origin has it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(5):
        while origin.seen.get(path, 0) < 3:
            await asyncio.sleep(0.01)
    return reader, writer


@pytest.fixture
async def origin() -> AsyncIterator[ScriptedOrigin]:
    o = ScriptedOrigin()
    yield o
    await o.close()


async def get(edge: Edge, path: str, *, timeout_s: float = 5.0) -> tuple[bytes, bytes]:
    """One GET on its own connection: (head, body) of the answer."""
    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    data = await raw_request(edge.server.port, raw, read_timeout_s=timeout_s)
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def learn(edge: Edge, path: str) -> None:
    """Two requests: the first marks the key hit-for-miss, the second (the lane's, sent the
    full way) teaches the lane the head. Both answered in full."""
    for _ in range(2):
        head, body = await get(edge, path)
        assert head.startswith(b"HTTP/1.1 200") and body == BODY, head


def logged(edge: Edge) -> int:
    """Requests the worker has counted (and logged), every site, method and result."""
    return sum(n for site in edge.stats.requests for method in site for n in method)


def lane_sent_now(edge: Edge) -> list[int]:
    """Counts the lane's requests written with no coroutine (a spy on `express_send`)."""
    fetcher = edge.pipeline.fetcher
    calls = [0]
    real = fetcher.express_send

    def spy(ctx: Any) -> Any:
        sent = real(ctx)
        calls[0] += sent is not None
        return sent

    fetcher.express_send = spy  # type: ignore[method-assign]
    return calls


async def test_a_known_head_with_its_body_is_relayed_from_the_callback(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    edge = await make_edge(await origin.start())
    await learn(edge, "/a")
    sent_now = lane_sent_now(edge)
    before = edge.stats.pass_lane
    for _ in range(5):
        head, body = await get(edge, "/a")
        assert head.startswith(b"HTTP/1.1 200 OK") and body == BODY
        assert b"detail=no-store" in head and b"fwd=miss" in head
    assert edge.stats.pass_lane - before == 5
    assert sent_now[0] == 5
    assert origin.seen["/a"] == 7  # one origin request per client request


async def test_a_body_that_comes_after_its_head_is_read_in_the_walk(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    async def split(writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(HEAD)
        await writer.drain()
        if n > 2:
            await origin.release.wait()
        writer.write(BODY)
        return True

    origin.scripts["/split"] = split
    edge = await make_edge(await origin.start())
    await learn(edge, "/split")
    sent_now = lane_sent_now(edge)
    pending = asyncio.ensure_future(get(edge, "/split"))
    while origin.seen["/split"] < 3:  # the origin has the request and sent the head
        await asyncio.sleep(0.01)
    origin.release.set()
    head, body = await pending
    assert head.startswith(b"HTTP/1.1 200 OK") and body == BODY
    assert sent_now[0] == 1 and edge.stats.pass_lane >= 1


async def test_a_pooled_connection_the_origin_dropped_sends_the_request_again(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    """The origin closes each connection on the request after the learning ones without a
    byte of answer: the request was not seen, so the edge sends it again on a new one."""

    async def drop(writer: asyncio.StreamWriter, n: int) -> bool:
        return False

    origin.scripts["/d"] = on_third(drop)
    edge = await make_edge(await origin.start())
    await learn(edge, "/d")
    sent_now = lane_sent_now(edge)
    errors = edge.origin.errors
    head, body = await get(edge, "/d")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == BODY
    assert sent_now[0] == 1
    assert origin.seen["/d"] == 4 and origin.connections == 2
    assert edge.origin.errors == errors  # a resend, not a failure


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("silent", b"504"),  # no head within first_byte_timeout_s
        ("reset", b"502"),  # closed after a byte of the head
        ("partial", b"502"),  # a 206 never asked for
        ("garbage", b"502"),  # not HTTP
    ],
)
async def test_an_origin_failure_on_a_sent_request_is_answered_as_the_walk_answers_it(
    origin: ScriptedOrigin, make_edge: Any, script: str, status: bytes
) -> None:
    async def fail(writer: asyncio.StreamWriter, n: int) -> bool:
        if script == "silent":
            await origin.release.wait()
            return False
        if script == "reset":
            writer.write(b"HTTP/1.1 20")
            await writer.drain()
            return False
        if script == "partial":
            writer.write(
                b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/1024\r\n"
                b"Content-Length: 4\r\n\r\nabcd"
            )
            return True
        writer.write(b"\x00\x01 not http\r\n\r\n")
        return False

    origin.scripts["/f"] = on_third(fail)
    edge = await make_edge(await origin.start(), origin__first_byte_timeout_s=0.3)
    await learn(edge, "/f")
    sent_now = lane_sent_now(edge)
    requests = logged(edge)
    head, _body = await get(edge, "/f")
    assert head.startswith(b"HTTP/1.1 " + status), head
    assert sent_now[0] == 1
    assert logged(edge) == requests + 1  # logged once
    # The edge goes on: the next request is answered (on a new connection).
    origin.release.set()
    head, body = await get(edge, "/f")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY


async def test_an_answer_the_body_budget_cannot_hold_gets_503(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    edge = await make_edge(await origin.start())
    await learn(edge, "/b")
    budget = edge.pipeline.fetcher.budget
    held = budget.max_bytes - 100  # what other answers under way hold
    budget.used += held
    try:
        head, body = await get(edge, "/b")
    finally:
        budget.used -= held
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"Retry-After" in head and BODY not in body
    assert budget.used == 0  # nothing of the refused answer is still held
    head, body = await get(edge, "/b")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY


async def test_a_client_gone_before_the_answer_leaves_the_origin_connection_whole(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    """As on the walk: the exchange under way is read to its end (the answer goes nowhere),
    the request is logged, and the origin connection goes back to the pool for the next."""

    async def hold(writer: asyncio.StreamWriter, n: int) -> bool:
        await origin.release.wait()
        return await answer(writer, n)

    origin.scripts["/h"] = on_third(hold)
    edge = await make_edge(await origin.start())
    await learn(edge, "/h")
    sent_now = lane_sent_now(edge)
    requests = logged(edge)
    _reader, writer = await sent_and_held(edge, origin, "/h")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()  # a reset: the connection is lost, not half-closed
    async with asyncio.timeout(5):
        while edge.server.open_connections:
            await asyncio.sleep(0.01)
    origin.release.set()
    async with asyncio.timeout(5):
        while logged(edge) == requests:
            await asyncio.sleep(0.01)
    assert sent_now[0] == 1
    assert edge.origin.h1.open_connections == 1
    head, body = await get(edge, "/h")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY
    assert origin.connections == 1  # the same connection, reused


async def test_a_drain_that_aborts_a_waiting_lane_request_ends_its_origin_exchange(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    """The front gives up on the request (the drain's deadline): the origin connection that
    would carry its answer is closed, not left waiting for an answer nobody reads."""

    async def hold(writer: asyncio.StreamWriter, n: int) -> bool:
        await origin.release.wait()
        return False

    origin.scripts["/w"] = on_third(hold)
    edge = await make_edge(await origin.start())
    await learn(edge, "/w")
    sent_now = lane_sent_now(edge)
    reader, writer = await sent_and_held(edge, origin, "/w")
    await edge.server.drain_and_close(0.05)
    async with asyncio.timeout(5):
        # Closed by the edge while the origin still holds its answer back.
        while edge.origin.h1.open_connections:
            await asyncio.sleep(0.01)
        assert await reader.read() == b""  # the client got nothing, not a torn answer
    assert not origin.release.is_set()
    assert sent_now[0] == 1
    writer.close()


async def test_interim_heads_reach_the_client_of_a_lane_request(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    async def hints(writer: asyncio.StreamWriter, n: int) -> bool:
        if n > 2:
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        return await answer(writer, n)

    origin.scripts["/i"] = hints
    edge = await make_edge(await origin.start())
    await learn(edge, "/i")
    sent_now = lane_sent_now(edge)
    raw = b"GET /i HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    data = await raw_request(edge.server.port, raw)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n"), data[:200]
    assert b"Link: </s.css>; rel=preload" in data
    assert b"\r\n\r\nHTTP/1.1 200 OK\r\n" in data and data.endswith(BODY)
    assert sent_now[0] == 1


async def test_pipelined_lane_requests_are_answered_in_order(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    for p in ("/p1", "/p2"):
        origin.scripts[p] = answer
    edge = await make_edge(await origin.start())
    await learn(edge, "/p1")
    await learn(edge, "/p2")
    sent_now = lane_sent_now(edge)
    raw = b"".join(
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-N: %d\r\n\r\n" % (p, i)
        for i, p in enumerate([b"/p1", b"/p2", b"/p1", b"/p2"])
    )
    raw += b"GET /p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    data = await raw_request(edge.server.port, raw)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 5 and data.count(BODY) == 5
    assert sent_now[0] == 5


async def test_a_fault_while_relaying_is_a_500_not_a_hung_request(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    """A bug in the relay (here the answer's judgement raising) is answered as the walk
    answers a failing step, 500; the worker goes on."""
    edge = await make_edge(await origin.start())
    await learn(edge, "/x")
    sent_now = lane_sent_now(edge)
    fetcher = edge.pipeline.fetcher
    real = fetcher.express_answer

    def broken(*args: Any) -> Any:
        fetcher.express_answer = real  # type: ignore[method-assign]
        raise RuntimeError("a bug")

    fetcher.express_answer = broken  # type: ignore[method-assign]
    errors = edge.server.handler_errors
    head, _body = await get(edge, "/x")
    assert head.startswith(b"HTTP/1.1 500"), head
    assert edge.server.handler_errors == errors + 1 and sent_now[0] == 1
    head, body = await get(edge, "/x")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY


async def test_a_fault_in_the_log_after_the_answer_ends_the_exchange(
    origin: ScriptedOrigin, make_edge: Any
) -> None:
    """The answer went out whole, then its log raised: the fault is counted and the
    connection closed after the answer, as the walk's failing handler is (not left waiting
    for a handler that will never end)."""
    edge = await make_edge(await origin.start())
    await learn(edge, "/y")
    sent_now = lane_sent_now(edge)
    pipeline = edge.pipeline
    real = pipeline._log

    def broken(ctx: Any) -> None:
        pipeline._log = real  # type: ignore[method-assign]
        raise RuntimeError("a bug")

    pipeline._log = broken  # type: ignore[method-assign]
    errors = edge.server.handler_errors
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.server.port)
    try:
        writer.write(b"GET /y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert await reader.readexactly(len(BODY)) == BODY
            assert await reader.read() == b""  # closed: nothing more will come on it
    finally:
        writer.close()
    assert edge.server.handler_errors == errors + 1 and sent_now[0] == 1
    head, body = await get(edge, "/y")
    assert head.startswith(b"HTTP/1.1 200") and body == BODY
