"""The same front under uvloop, the loop it runs on in production."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import uvloop

from proxy.front.api import FrontRequest, Responder
from proxy.front.limits import FrontLimits
from proxy.front.server import FrontServer
from tests.front.conftest import OK_RESPONSE, closed_by_server, read_response


def handler(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
    if request.raw_target == b"/slow":

        async def slow() -> None:
            await asyncio.sleep(0.1)
            responder.send_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")

        return slow()
    if request.has_body:

        async def echo() -> None:
            body = await request.body.read_all(1 << 24)
            responder.start(200, b"OK", [], content_length=None)
            await responder.write(body)
            responder.end()

        return echo()
    responder.send_bytes(OK_RESPONSE)
    return None


async def _scenario() -> None:
    server = FrontServer(handler, FrontLimits(header_read_timeout_s=0.2))
    await server.start(host="127.0.0.1", port=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    get = b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n"
    writer.write(get % b"/slow" + get % b"/fast" + get % b"/slow" + get % b"/fast")
    bodies = [(await read_response(reader)).body for _ in range(4)]
    assert bodies == [b"slow", b"hello", b"slow", b"hello"]

    payload = b"p" * (2 << 20)
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(payload))
    writer.write(payload)
    resp = await read_response(reader)
    assert resp.header("transfer-encoding") == b"chunked" and resp.body == payload

    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert (await read_response(reader)).status == 400
    assert await closed_by_server(reader)

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n")
    assert (await read_response(reader)).status == 408
    await server.drain_and_close(1.0)
    assert server.open_connections == 0


def test_front_under_uvloop() -> None:
    uvloop.run(_scenario())
