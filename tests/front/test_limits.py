"""Size limits and deadlines: 408, 413, 414, 431, each answered and followed by a close; and the
limits themselves (which may be zero, and that the example config lists them all)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable
from dataclasses import fields
from pathlib import Path

import msgspec
import pytest

from proxy.config import Limits
from proxy.front.api import BodyTooLarge, FrontRequest, Responder
from proxy.front.limits import FrontLimits
from tests.front.conftest import Response, StartFront, closed_by_server, read_response


def assert_refused(resp: Response, status: int) -> None:
    assert resp.status == status
    assert resp.header("connection") == b"close"
    assert resp.header("content-type") == b"text/plain; charset=utf-8"
    assert resp.header("date") is not None
    assert int(resp.header("content-length") or b"-1") == len(resp.body)


async def test_long_request_target_is_414(start_front: StartFront) -> None:
    front = await start_front()
    resp = await front.exchange(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert_refused(resp, 414)
    ok = await front.exchange(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert ok.status == 200


async def test_long_request_target_arriving_slowly_is_414(start_front: StartFront) -> None:
    front = await start_front(max_request_line_bytes=100)
    reader, writer = await front.connect()
    writer.write(b"GET /")
    for _ in range(5):
        writer.write(b"b" * 30)
        await writer.drain()
        await asyncio.sleep(0.01)
    assert_refused(await read_response(reader), 414)
    assert await closed_by_server(reader)


async def test_too_many_headers_is_431(start_front: StartFront) -> None:
    front = await start_front()
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
    assert_refused(await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n"), 431)
    fine = b"".join(b"X-H%d: v\r\n" % i for i in range(99))
    assert (await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + fine + b"\r\n")).status == 200


async def test_large_headers_in_one_read_are_431(start_front: StartFront) -> None:
    front = await start_front()
    big = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 7000) for i in range(5))  # ~35 KB
    assert_refused(await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n"), 431)
    one = b"X-One: " + b"v" * 40000 + b"\r\n"
    assert_refused(await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + one + b"\r\n"), 431)


async def test_header_that_never_ends_is_431_before_the_deadline(start_front: StartFront) -> None:
    front = await start_front(max_header_bytes=2000)
    reader, writer = await front.connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
    for _ in range(20):
        writer.write(b"v" * 500)
        await writer.drain()
    assert_refused(await read_response(reader), 431)


async def test_declared_body_over_limit_is_413_before_reading_it(start_front: StartFront) -> None:
    called: list[bool] = []

    def handler(request: FrontRequest, responder: Responder) -> None:
        called.append(True)

    front = await start_front(handler, max_body_bytes=1000)
    resp = await front.exchange(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")
    assert_refused(resp, 413)
    assert called == []


async def test_chunked_body_crossing_limit_is_413(start_front: StartFront) -> None:
    errors: list[BaseException] = []

    def reader_handler(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def consume() -> None:
            try:
                async for _ in request.body:
                    pass
            except BodyTooLarge as exc:
                errors.append(exc)
                raise
            responder.send_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        return consume()

    front = await start_front(reader_handler, max_body_bytes=1000)
    chunk = b"258\r\n" + b"z" * 600 + b"\r\n"
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3
    reader, writer = await front.connect()
    writer.write(raw)
    assert_refused(await read_response(reader), 413)
    assert await closed_by_server(reader)
    assert len(errors) == 1
    assert front.server.handler_errors == 0


async def test_handler_body_limit_becomes_413(start_front: StartFront) -> None:
    def small(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def read() -> None:
            await request.body.read_all(limit_bytes=10)
            responder.send_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        return read()

    front = await start_front(small)
    resp = await front.exchange(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
    )
    assert_refused(resp, 413)


async def test_slow_request_head_is_408(start_front: StartFront) -> None:
    front = await start_front(header_read_timeout_s=0.2)
    reader, writer = await front.connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finished
    assert_refused(await read_response(reader), 408)
    assert await closed_by_server(reader)


async def test_stalled_request_body_is_408_and_the_handler_learns_the_client_is_gone(
    start_front: StartFront,
) -> None:
    seen: list[str] = []

    def consume(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        async def read() -> None:
            try:
                await request.body.read_all(limit_bytes=100)
            except ConnectionError as exc:
                seen.append(type(exc).__name__)
                raise

        return read()

    front = await start_front(consume, body_read_timeout_s=0.2)
    reader, writer = await front.connect()
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    assert_refused(await read_response(reader), 408)
    assert await closed_by_server(reader)
    assert seen == ["ClientGone"]
    assert front.server.handler_errors == 0


async def test_fresh_connection_sending_nothing_is_closed(start_front: StartFront) -> None:
    front = await start_front(header_read_timeout_s=0.2)
    reader, writer = await front.connect()
    assert await reader.read() == b""


def test_zero_turns_off_only_the_limits_that_say_so() -> None:
    FrontLimits(max_connections=0, body_min_rate_bytes_per_s=0)
    for name in ("body_total_timeout_s", "body_min_rate_grace_s", "body_read_timeout_s"):
        with pytest.raises(ValueError, match=f"limits.{name} must be positive"):
            FrontLimits(**{name: 0})


def test_the_example_config_lists_every_limit_at_its_default() -> None:
    """config/edgeproxy.example.toml is where an operator looks a limit up."""
    example = Path(__file__).resolve().parents[2] / "config" / "edgeproxy.example.toml"
    listed = tomllib.loads(example.read_text())["limits"]
    assert listed == {f.name: getattr(FrontLimits(), f.name) for f in fields(FrontLimits)}
    assert Limits() == msgspec.convert(listed, Limits)
