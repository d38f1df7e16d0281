"""Graceful stop: in-flight answers complete, idle connections close, new ones are refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from proxy.front.api import FrontRequest, Responder
from proxy.front.limits import FrontLimits
from proxy.front.server import FrontServer
from tests.front.conftest import OK_RESPONSE, StartFront, closed_by_server, read_response

GET = b"GET /%s HTTP/1.1\r\nHost: example.test\r\n\r\n"


def slow_or_fast(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
    if request.raw_target == b"/slow":

        async def slow() -> None:
            await asyncio.sleep(0.3)
            responder.send_bytes(OK_RESPONSE, close=not request.keep_alive)

        return slow()
    if request.raw_target == b"/forever":
        return asyncio.sleep(3600)
    responder.send_bytes(OK_RESPONSE, close=not request.keep_alive)
    return None


async def test_drain_finishes_in_flight_closes_idle_and_refuses_new(
    start_front: StartFront,
) -> None:
    front = await start_front(slow_or_fast)
    idle_reader, idle_writer = await front.connect()
    idle_writer.write(GET % b"fast")
    assert (await read_response(idle_reader)).status == 200

    busy_reader, busy_writer = await front.connect()
    busy_writer.write(GET % b"slow")
    await asyncio.sleep(0.05)  # the slow request is in its handler
    drain = asyncio.ensure_future(front.server.drain_and_close(5.0))
    await asyncio.sleep(0.05)

    assert await closed_by_server(idle_reader, timeout_s=1.0)
    with pytest.raises(OSError):
        await front.connect()
    assert not drain.done()
    resp = await read_response(busy_reader)  # the in-flight answer completes
    assert resp.status == 200 and resp.body == b"hello"
    assert await closed_by_server(busy_reader)
    busy_writer.close()
    idle_writer.close()
    await asyncio.wait_for(drain, 3)
    assert front.server.open_connections == 0


async def test_drain_timeout_aborts_what_is_left(start_front: StartFront) -> None:
    front = await start_front(slow_or_fast)
    reader, writer = await front.connect()
    writer.write(GET % b"forever")
    await asyncio.sleep(0.05)
    await front.server.drain_and_close(0.2)
    assert await closed_by_server(reader, timeout_s=1.0)
    assert front.server.open_connections == 0


async def test_start_accepts_an_already_bound_socket() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = FrontServer(slow_or_fast, FrontLimits())
    await server.start(sock=sock)
    assert server.port == port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET % b"fast")
    assert (await read_response(reader)).status == 200
    writer.close()
    await server.drain_and_close(1.0)
