"""FrontServer(fast_answer=…): a whole response decided before any request object exists.
Asked only for body-less, unflagged requests with nothing pending on the connection, so
pipelined answers stay in order."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.front.api import FrontRequest, Responder
from proxy.front.limits import FrontLimits
from proxy.front.server import FrontServer
from tests.front.conftest import read_response

FAST = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast"


async def start(seen: list[str]) -> FrontServer:
    def fast(
        method: str,
        target: bytes,
        host: bytes | None,
        keep_alive: bool,
        version: str,
        fields: bytes,
        request: object = None,
    ):
        assert request is None  # built only for a server that logs its fast answers
        seen.append(f"fast {method} {target.decode()} {host!r} {keep_alive} {version}")
        return FAST if target == b"/fast" else None

    async def slow(request: FrontRequest, responder: Responder) -> None:
        seen.append(f"handler {request.raw_target.decode()}")
        await asyncio.sleep(0.1)
        body = b"slow " + request.raw_target
        responder.send_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = FrontServer(slow, FrontLimits(), flag_headers=[b"range"], fast_answer=fast)
    await server.start()
    return server


async def test_fast_answer_and_fallback_keep_order() -> None:
    seen: list[str] = []
    server = await start(seen)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"  # pipelined behind a slow one: not fast
        b"GET /fast HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n"  # flagged: not fast
    )
    bodies = [(await read_response(reader)).body for _ in range(4)]
    assert bodies == [b"fast", b"slow /other", b"slow /fast", b"slow /fast"]
    assert seen[0] == "fast GET /fast b'a' True 1.1"
    assert seen.count("handler /fast") == 2
    # Connection: close is honoured on a fast answer.
    writer.write(b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (await read_response(reader)).body == b"fast"
    assert await reader.read() == b""
    writer.close()
    await server.drain_and_close(1.0)


async def test_a_server_that_logs_hands_its_fast_answer_the_request() -> None:
    """With an access log (`fast_answer_logs`) the fast answer still answers, and gets the
    request object to log: from the strict head and from llhttp's callbacks alike."""
    got: list[Any] = []

    def fast(method, target, host, keep_alive, version, fields, request=None):
        got.append(request)
        return FAST

    async def handler(request: FrontRequest, responder: Responder) -> None:
        raise AssertionError("every request here has a fast answer")

    server = FrontServer(
        handler, FrontLimits(), flag_headers=[b"range"], fast_answer=fast, fast_answer_logs=True
    )
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    heads = [
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\n\r\n",
        # Host not first: the strict head declines, llhttp parses
        b"GET /b HTTP/1.1\r\nUser-Agent: ua/2\r\nHost: h\r\n\r\n",
        b"HEAD /c HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    ]
    for head in heads:
        writer.write(head)
        assert (await read_response(reader, head_request=head.startswith(b"HEAD"))).status == 200
    writer.close()
    await server.drain_and_close(1.0)
    assert [(r.method, r.raw_target, r.host, r.http_version) for r in got] == [
        ("GET", b"/a?x=1", b"h", "1.1"),
        ("GET", b"/b", b"h", "1.1"),
        ("HEAD", b"/c", b"h", "1.0"),
    ]
    assert got[0].headers == [(b"Host", b"h"), (b"User-Agent", b"ua/1"), (b"Referer", b"http://r/")]
    assert (b"User-Agent", b"ua/2") in got[1].headers
    assert all(r.client_ip == "127.0.0.1" and r.received_at > 0 and not r.has_body for r in got)
