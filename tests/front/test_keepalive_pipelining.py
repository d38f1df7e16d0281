"""Keep-alive, pipelining in order, HTTP/1.0, streaming answers and the connection lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from proxy.front.api import FrontRequest, Responder
from tests.front.conftest import StartFront, closed_by_server, read_response


def path_response(target: bytes, close: bool) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(target), extra, target)


def by_path(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
    """Answers with the request target; `/slow...` answers after a delay (async path)."""
    close = not request.keep_alive
    if request.raw_target.startswith(b"/slow"):

        async def slow() -> None:
            await asyncio.sleep(0.2)
            responder.send_bytes(path_response(request.raw_target, close), close=close)

        return slow()
    responder.send_bytes(path_response(request.raw_target, close), close=close)
    return None


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: example.test\r\n" + extra + b"\r\n"


async def test_keep_alive_reuses_one_connection(start_front: StartFront) -> None:
    front = await start_front(by_path)
    reader, writer = await front.connect()
    for path in (b"/one", b"/two", b"/three"):
        writer.write(get(path))
        resp = await read_response(reader)
        assert resp.status == 200 and resp.body == path
        assert resp.header("connection") is None
    assert front.server.open_connections == 1
    writer.close()


async def test_pipelined_answers_keep_request_order_with_slow_and_fast(
    start_front: StartFront,
) -> None:
    front = await start_front(by_path)
    reader, writer = await front.connect()
    paths = [b"/slow-1", b"/fast-2", b"/fast-3", b"/slow-4", b"/fast-5"]
    writer.write(b"".join(get(p) for p in paths))
    bodies = [(await read_response(reader)).body for _ in paths]
    assert bodies == paths
    writer.write(get(b"/after"))
    assert (await read_response(reader)).body == b"/after"
    writer.close()


async def test_pipelining_beyond_the_queue_pauses_reading_and_still_answers_all(
    start_front: StartFront,
) -> None:
    front = await start_front(by_path, max_pipelined_requests=2)
    reader, writer = await front.connect()
    paths = [b"/slow-a", b"/b", b"/c", b"/d", b"/e", b"/f"]
    for p in paths:  # separate reads, so the server can pause between them
        writer.write(get(p))
        await writer.drain()
        await asyncio.sleep(0.01)
    bodies = [(await read_response(reader)).body for _ in paths]
    assert bodies == paths
    assert front.server.read_pauses >= 1
    writer.close()


async def test_more_pipelined_in_one_read_than_queued_answers_some_then_closes(
    start_front: StartFront,
) -> None:
    front = await start_front(by_path, max_pipelined_requests=2)
    reader, writer = await front.connect()
    writer.write(b"".join(get(p) for p in (b"/slow", b"/2", b"/3", b"/4", b"/5")))
    first = [await read_response(reader) for _ in range(3)]
    assert [r.body for r in first] == [b"/slow", b"/2", b"/3"]
    assert first[-1].header("connection") == b"close"  # the last answer says it is the last
    assert await closed_by_server(reader)


async def test_connection_close_from_client_is_honoured(start_front: StartFront) -> None:
    front = await start_front(by_path)
    reader, writer = await front.connect()
    writer.write(get(b"/x", b"Connection: close\r\n"))
    resp = await read_response(reader)
    assert resp.status == 200 and resp.header("connection") == b"close"
    assert await closed_by_server(reader)


async def test_close_from_handler_is_honoured(start_front: StartFront) -> None:
    def closing(request: FrontRequest, responder: Responder) -> None:
        responder.send_bytes(path_response(b"/bye", True), close=True)

    front = await start_front(closing)
    reader, writer = await front.connect()
    writer.write(get(b"/x") + get(b"/never-answered"))
    assert (await read_response(reader)).body == b"/bye"
    assert await closed_by_server(reader)


async def test_http10_closes_unless_keep_alive_asked(start_front: StartFront) -> None:
    seen: list[tuple[str, bool]] = []

    def streaming(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        seen.append((request.http_version, request.keep_alive))

        async def answer() -> None:
            responder.start(200, b"OK", [(b"Content-Type", b"text/plain")], content_length=2)
            await responder.write(b"ok")
            responder.end()

        return answer()

    front = await start_front(streaming)
    reader, writer = await front.connect()
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 200 and resp.header("connection") == b"close"
    assert await closed_by_server(reader)

    reader, writer = await front.connect()
    for _ in range(2):
        writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = await read_response(reader)
        assert resp.body == b"ok" and resp.header("connection") == b"keep-alive"
    writer.close()
    assert seen == [("1.0", False), ("1.0", True), ("1.0", True)]


async def test_unknown_length_is_chunked_in_11_and_close_delimited_in_10(
    start_front: StartFront,
) -> None:
    def streaming(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def answer() -> None:
            responder.start(200, b"OK", [], content_length=None)
            for part in (b"abc", b"", b"defg"):
                await responder.write(part)
            responder.end()

        return answer()

    front = await start_front(streaming)
    reader, writer = await front.connect()
    writer.write(get(b"/"))
    resp = await read_response(reader)
    assert resp.header("transfer-encoding") == b"chunked" and resp.body == b"abcdefg"
    writer.write(get(b"/again"))  # chunked framing leaves the connection usable
    assert (await read_response(reader)).body == b"abcdefg"
    writer.close()

    resp = await front.exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert resp.header("transfer-encoding") is None and resp.header("connection") == b"close"
    assert resp.body == b"abcdefg"


async def test_no_body_response_keeps_length_and_sends_no_body(start_front: StartFront) -> None:
    def head(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def answer() -> None:
            no_body = request.method == "HEAD"
            responder.start(200, b"OK", [], content_length=10, no_body=no_body)
            await responder.write(b"0123456789")
            responder.end()

        return answer()

    front = await start_front(head)
    reader, writer = await front.connect()
    writer.write(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + get(b"/"))
    resp = await read_response(reader, head_request=True)
    assert resp.status == 200 and resp.header("content-length") == b"10"
    resp = await read_response(reader)  # would be garbled if the HEAD answer carried a body
    assert resp.body == b"0123456789"
    writer.close()


async def test_idle_keep_alive_connection_is_closed_silently(start_front: StartFront) -> None:
    front = await start_front(by_path, keepalive_timeout_s=0.2)
    reader, writer = await front.connect()
    writer.write(get(b"/x"))
    assert (await read_response(reader)).status == 200
    assert await reader.read() == b""  # no 408 or other bytes, just the close
    await asyncio.sleep(0.05)
    assert front.server.open_connections == 0


async def test_request_then_half_close_still_gets_its_answer(start_front: StartFront) -> None:
    front = await start_front(by_path)
    reader, writer = await front.connect()
    writer.write(get(b"/slow-half"))
    writer.write_eof()
    assert (await read_response(reader)).body == b"/slow-half"
    assert await closed_by_server(reader)


async def test_connections_beyond_the_limit_are_closed(start_front: StartFront) -> None:
    counts: list[int] = []
    front = await start_front(by_path, max_connections=2)
    front.server.on_connection_count = counts.append
    held = []
    for path in (b"/1", b"/2"):
        reader, writer = await front.connect()
        writer.write(get(path))
        assert (await read_response(reader)).body == path
        held.append(writer)
    reader, writer = await front.connect()
    writer.write(get(b"/3"))
    assert await closed_by_server(reader)
    assert front.server.rejected_connections == 1
    assert counts == [1, 2]
    for w in held:
        w.close()
