"""Request bodies (streaming, backpressure, discard, 100-continue) and response bodies
(backpressure, client gone), plus what a failing handler looks like from outside."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Awaitable

from proxy.front.api import ClientGone, FrontRequest, Responder
from tests.front.conftest import OK_RESPONSE, StartFront, closed_by_server, read_response

H = b"Host: example.test\r\n"


def digest_response(body: bytes) -> bytes:
    text = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


async def test_large_body_to_a_slow_consumer_pauses_reading_and_arrives_intact(
    start_front: StartFront,
) -> None:
    buffered_peak: list[int] = []
    go = asyncio.Event()

    def slow(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def consume() -> None:
            await go.wait()
            buffered_peak.append(request.body.buffered)  # type: ignore[attr-defined]
            parts = [chunk async for chunk in request.body]
            responder.send_bytes(digest_response(b"".join(parts)))

        return consume()

    front = await start_front(slow)
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
    reader, writer = await front.connect()
    writer.write(b"POST /up HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(payload))
    writer.write(payload)
    sending = asyncio.ensure_future(writer.drain())
    await asyncio.sleep(0.3)  # the handler is not reading: the server must stop reading too
    assert front.server.read_pauses >= 1
    assert not sending.done()  # the client could not push 4 MiB past a paused server
    go.set()
    await sending
    resp = await read_response(reader)
    assert resp.body == b"%d %s" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
    limits = front.server.limits
    assert buffered_peak[0] <= limits.body_buffer_high_bytes + (256 << 10)
    writer.close()


async def test_chunked_body_streams_in_order(start_front: StartFront) -> None:
    def collect(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def consume() -> None:
            assert request.content_length is None and request.has_body
            responder.send_bytes(digest_response(await request.body.read_all(1 << 20)))

        return consume()

    front = await start_front(collect)
    chunks = [b"a" * 10, b"b" * 1000, b"c" * 5]
    raw = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nTrailer: x\r\n\r\n"
    resp = await front.exchange(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + raw
    )
    whole = b"".join(chunks)
    assert resp.body == b"%d %s" % (len(whole), hashlib.sha256(whole).hexdigest().encode())


async def test_unread_body_is_discarded_before_the_next_pipelined_request(
    start_front: StartFront,
) -> None:
    front = await start_front()  # answers without reading bodies
    big = b"x" * (600 << 10)  # more than the body buffer, so reading pauses and resumes
    chunked = b"".join(b"1000\r\n" + b"y" * 4096 + b"\r\n" for _ in range(10)) + b"0\r\n\r\n"
    reader, writer = await front.connect()
    writer.write(
        b"POST /a HTTP/1.1\r\n"
        + H
        + b"Content-Length: %d\r\n\r\n" % len(big)
        + big
        + b"POST /b HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"GET /c HTTP/1.1\r\n"
        + H
        + b"\r\n"
    )
    for _ in range(3):
        assert (await read_response(reader)).status == 200
    writer.write(b"GET /d HTTP/1.1\r\n" + H + b"\r\n")
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_100_continue_is_sent_when_the_handler_first_reads(start_front: StartFront) -> None:
    go = asyncio.Event()

    def later(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def consume() -> None:
            await go.wait()
            responder.send_bytes(digest_response(await request.body.read_all(100)))

        return consume()

    front = await start_front(later)
    reader, writer = await front.connect()
    writer.write(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    try:
        early = await asyncio.wait_for(reader.read(1), 0.2)
    except TimeoutError:
        early = b""
    assert early == b""  # nothing before the handler asks for the body
    go.set()
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    resp = await read_response(reader)
    assert resp.status == 200 and resp.body.startswith(b"5 ")
    writer.close()


async def test_no_100_continue_when_the_handler_answers_without_the_body(
    start_front: StartFront,
) -> None:
    front = await start_front()
    reader, writer = await front.connect()
    writer.write(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 200 and resp.interim == []
    assert await closed_by_server(reader)  # the client may never send that body


async def test_response_to_a_slow_reader_is_not_buffered_without_bound(
    start_front: StartFront,
) -> None:
    progress = {"written": 0}
    total = 24 << 20
    chunk = b"r" * (64 << 10)

    def big(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def stream() -> None:
            responder.start(200, b"OK", [], content_length=total)
            while progress["written"] < total:
                await responder.write(chunk)
                progress["written"] += len(chunk)
            responder.end()

        return stream()

    front = await start_front(big)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", front.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 << 10)
    writer.write(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.3)  # not reading
    assert front.server.write_pauses >= 1
    # kernel buffers (a few MiB at most) plus the transport's high-water mark, not 24 MiB
    assert progress["written"] <= 8 << 20
    received = 0
    while received < total:
        data = await reader.read(1 << 20)
        assert data
        received += len(data)
    assert received == total and progress["written"] == total
    writer.close()


async def test_client_gone_mid_response_reaches_the_handler(start_front: StartFront) -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def endless(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        if request.raw_target != b"/endless":
            responder.send_bytes(OK_RESPONSE)
            return None

        async def stream() -> None:
            responder.start(200, b"OK", [], content_length=None)
            try:
                while True:
                    await responder.write(b"z" * 65536)
            except ClientGone:
                outcome.set_result("client-gone")
                raise

        return stream()

    front = await start_front(endless)
    reader, writer = await front.connect()
    writer.write(b"GET /endless HTTP/1.1\r\n" + H + b"\r\n")
    await reader.readexactly(100_000)
    writer.transport.abort()
    assert await asyncio.wait_for(outcome, 5) == "client-gone"
    assert front.server.handler_errors == 0
    assert (await front.exchange(b"GET / HTTP/1.1\r\n" + H + b"\r\n")).status == 200


async def test_handler_exception_is_500_then_close_and_the_server_lives(
    start_front: StartFront,
) -> None:
    reported: list[BaseException] = []

    def broken(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        if request.raw_target == b"/sync-bug":
            raise KeyError("sync bug")
        if request.raw_target == b"/async-bug":

            async def fail() -> None:
                await asyncio.sleep(0)
                raise ValueError("async bug")

            return fail()
        if request.raw_target == b"/bug-after-start":

            async def half() -> None:
                responder.start(200, b"OK", [], content_length=None)
                await responder.write(b"partial")
                raise ValueError("late bug")

            return half()
        responder.send_bytes(OK_RESPONSE)
        return None

    front = await start_front(broken)
    front.server.on_handler_error = reported.append
    for target in (b"/sync-bug", b"/async-bug"):
        reader, writer = await front.connect()
        writer.write(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n")
        resp = await read_response(reader)
        assert resp.status == 500 and resp.header("connection") == b"close"
        assert b"Traceback" not in resp.body
        assert await closed_by_server(reader)
    reader, writer = await front.connect()
    writer.write(b"GET /bug-after-start HTTP/1.1\r\n" + H + b"\r\n")
    try:
        truncated = await read_response(reader)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        truncated = None
    assert truncated is None  # a chunked body cut off, never a complete-looking answer
    assert [type(e) for e in reported] == [KeyError, ValueError, ValueError]
    assert front.server.handler_errors == 3
    assert (await front.exchange(b"GET / HTTP/1.1\r\n" + H + b"\r\n")).status == 200
