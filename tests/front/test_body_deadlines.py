"""Issue 10, "Exhaustion": a request body trickled just fast enough to beat the silence deadline
(`body_read_timeout_s`) is still cut off, by its average rate (`body_min_rate_bytes_per_s` after
`body_min_rate_grace_s`) or by the time the whole of it may take (`body_total_timeout_s`).

The client paces its trickle with sleeps, but nothing waits on a sleep: the assertions are what
the client reads (408 and a close), the handler's error and the server's counters, and "not cut
off" is shown by polling until the server's deadline sweep has run past the deadline in question.
Every pace is far from the limit it tests, so a loaded machine only moves it further away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from proxy.front.api import FrontRequest, Responder
from proxy.front.limits import FrontTimeout
from tests.front.conftest import Front, StartFront, closed_by_server, read_head, read_response
from tests.front.test_limits import assert_refused

FRAMINGS = ["content-length", "chunked"]


def head(framing: str, length: int) -> bytes:
    """A POST head; with Content-Length, `length` is what the body promises."""
    if framing == "chunked":
        return b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    return b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length


def frame(framing: str, part: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(part), part) if framing == "chunked" else part


def last(framing: str) -> bytes:
    return b"0\r\n\r\n" if framing == "chunked" else b""


Handler = Callable[[FrontRequest, Responder], Awaitable[None] | None]


def reading(seen: list[str], go: asyncio.Event | None = None) -> Handler:
    """Reads the whole body (after `go`, if given) and answers with its length; records the
    error a cut-off body raises in the handler."""

    def handler(request: FrontRequest, responder: Responder) -> Awaitable[None]:
        async def read() -> None:
            if go is not None:
                await go.wait()
            try:
                body = await request.body.read_all(1 << 24)
            except ConnectionError as exc:
                seen.append(type(exc).__name__)
                raise
            text = b"%d" % len(body)
            responder.send_bytes(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
            )

        return read()

    return handler


async def trickle(writer: asyncio.StreamWriter, parts: list[bytes], every_s: float) -> None:
    """Send `parts` one by one, `every_s` apart, until they run out or the server closes."""
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(every_s)
    except ConnectionError:
        pass


async def swept_past(front: Front, when: float) -> None:
    """Until the server's deadline sweep has run at loop time `when` or later: every deadline
    due by then has been looked at."""
    async with asyncio.timeout(10):
        while front.server.clock < when:
            await asyncio.sleep(front.server.limits.tick_s)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_body_trickled_below_the_minimum_rate_is_408_and_closed(
    start_front: StartFront, framing: str
) -> None:
    seen: list[str] = []
    front = await start_front(
        reading(seen),
        body_read_timeout_s=10.0,  # a byte every 20 ms always beats this one
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.3,
    )
    reader, writer = await front.connect()
    writer.write(head(framing, 100_000))
    sender = asyncio.ensure_future(trickle(writer, [frame(framing, b"x")] * 1000, 0.02))
    try:
        assert_refused(await asyncio.wait_for(read_response(reader), 10), 408)
        assert await closed_by_server(reader)
    finally:
        sender.cancel()
        writer.close()
    assert seen == ["ClientGone"]  # the body the handler read failed: its upstream is aborted
    assert front.server.timeouts == {FrontTimeout.BODY_RATE: 1}
    assert front.server.rejected == {408: 1}


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_body_past_the_total_deadline_is_408_even_at_a_good_rate(
    start_front: StartFront, framing: str
) -> None:
    seen: list[str] = []
    front = await start_front(
        reading(seen),
        body_read_timeout_s=10.0,
        body_total_timeout_s=0.5,
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.1,  # checked, and passed: each part buys 4 s at this rate
    )
    reader, writer = await front.connect()
    writer.write(head(framing, 10 << 20))
    sender = asyncio.ensure_future(trickle(writer, [frame(framing, b"y" * 4000)] * 2000, 0.02))
    try:
        assert_refused(await asyncio.wait_for(read_response(reader), 10), 408)
        assert await closed_by_server(reader)
    finally:
        sender.cancel()
        writer.close()
    assert seen == ["ClientGone"]
    assert front.server.timeouts == {FrontTimeout.BODY_TOTAL: 1}


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_body_at_a_good_rate_within_the_deadlines_arrives_and_keeps_the_connection(
    start_front: StartFront, framing: str
) -> None:
    seen: list[str] = []
    front = await start_front(
        reading(seen),
        body_read_timeout_s=10.0,
        body_total_timeout_s=30.0,
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.1,
    )
    parts = [frame(framing, b"z" * 10_000)] * 10  # each part buys 10 s at the minimum rate
    reader, writer = await front.connect()
    writer.write(head(framing, 100_000))
    await trickle(writer, parts, 0.05)
    writer.write(last(framing))
    resp = await asyncio.wait_for(read_response(reader), 10)
    assert resp.status == 200 and resp.body == b"100000"
    # The body's deadlines ended with it: the next request on the connection is served.
    writer.write(head(framing, 5) + frame(framing, b"hello") + last(framing))
    again = await asyncio.wait_for(read_response(reader), 10)
    assert again.status == 200 and again.body == b"5"
    writer.close()
    assert seen == [] and front.server.timeouts == {}


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_minimum_rate_zero_disables_the_rate_check(
    start_front: StartFront, framing: str
) -> None:
    seen: list[str] = []
    front = await start_front(
        reading(seen),
        body_read_timeout_s=10.0,
        body_min_rate_bytes_per_s=0,
        body_min_rate_grace_s=0.1,
    )
    reader, writer = await front.connect()
    writer.write(head(framing, 2) + frame(framing, b"a"))
    await writer.drain()
    sent = asyncio.get_running_loop().time()
    # One byte in well over the grace: far below any rate, and not cut off.
    await swept_past(front, sent + 0.1 + 4 * front.server.limits.tick_s)
    writer.write(frame(framing, b"b") + last(framing))
    resp = await asyncio.wait_for(read_response(reader), 10)
    assert resp.status == 200 and resp.body == b"2"
    writer.close()
    assert seen == [] and front.server.timeouts == {}


async def test_body_cut_off_after_the_answer_started_aborts_the_answer(
    start_front: StartFront,
) -> None:
    """An answer under way cannot become a 408: the connection ends without its last chunk, so
    the client cannot take the truncated answer for a whole one."""
    seen: list[str] = []

    def echo_as_it_comes(request: FrontRequest, responder: Responder) -> Awaitable[None]:
        async def stream() -> None:
            responder.start(200, b"OK", [], content_length=None)
            await responder.write(b"started")
            try:
                async for chunk in request.body:
                    await responder.write(chunk)
            except BaseException as exc:
                seen.append(type(exc).__name__)
                raise
            responder.end()

        return stream()

    front = await start_front(
        echo_as_it_comes,
        body_read_timeout_s=10.0,
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.3,
    )
    reader, writer = await front.connect()
    writer.write(head("content-length", 100_000))
    sender = asyncio.ensure_future(trickle(writer, [b"x"] * 1000, 0.02))
    try:
        status, *_ = await asyncio.wait_for(read_head(reader), 10)
        assert status == 200
        received = b""
        try:
            async with asyncio.timeout(10):
                while chunk := await reader.read(65536):
                    received += chunk
        except ConnectionResetError:
            pass
    finally:
        sender.cancel()
        writer.close()
    assert b"started" in received and not received.endswith(b"0\r\n\r\n")
    # The body failed and the handler was cancelled (the abort): either ends its read.
    assert len(seen) == 1 and seen[0] in ("ClientGone", "CancelledError")
    assert front.server.timeouts == {FrontTimeout.BODY_RATE: 1}
    assert front.server.rejected == {}  # no 408 went out: the answer had started


async def test_trickled_body_being_discarded_ends_the_connection(start_front: StartFront) -> None:
    """The handler answered without reading the body; the front reads it to its end to get to the
    next request, but not at any pace: the connection closes after the answer already sent."""
    front = await start_front(  # the default handler answers at once, reading nothing
        body_read_timeout_s=10.0,
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.3,
    )
    reader, writer = await front.connect()
    writer.write(head("content-length", 100_000))
    sender = asyncio.ensure_future(trickle(writer, [b"x"] * 1000, 0.02))
    try:
        assert (await asyncio.wait_for(read_response(reader), 10)).status == 200
        assert await closed_by_server(reader, timeout_s=10)
    finally:
        sender.cancel()
        writer.close()
    assert front.server.timeouts == {FrontTimeout.BODY_RATE: 1}
    assert front.server.rejected == {}


async def test_waiting_for_100_continue_does_not_count_against_the_body(
    start_front: StartFront,
) -> None:
    """A client that asked to wait for 100 (Continue) sends nothing until the handler wants the
    body: the body's deadlines start when the 100 goes out, not at the end of the head."""
    seen: list[str] = []
    go = asyncio.Event()
    front = await start_front(
        reading(seen, go),
        body_read_timeout_s=10.0,
        body_total_timeout_s=0.3,
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.1,
    )
    reader, writer = await front.connect()
    writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    await writer.drain()
    sent = asyncio.get_running_loop().time()
    await swept_past(front, sent + 0.3 + 4 * front.server.limits.tick_s)
    go.set()
    status, *_ = await asyncio.wait_for(read_head(reader), 10)
    assert status == 100
    writer.write(b"hello")
    resp = await asyncio.wait_for(read_response(reader), 10)
    assert resp.status == 200 and resp.body == b"5"
    writer.close()
    assert seen == [] and front.server.timeouts == {}


async def test_time_reading_is_paused_for_backpressure_does_not_count(
    start_front: StartFront,
) -> None:
    """While the handler does not take the body, the front stops reading it (backpressure): the
    client cannot send, so that time is not held against its body."""
    seen: list[str] = []
    go = asyncio.Event()
    front = await start_front(
        reading(seen, go),
        body_read_timeout_s=10.0,
        body_total_timeout_s=1.0,
        body_min_rate_bytes_per_s=1000,
        body_min_rate_grace_s=0.1,
    )
    payload = b"p" * (2 << 20)  # more than one read and the body buffer: reading pauses
    reader, writer = await front.connect()
    writer.write(head("content-length", len(payload) + 1) + payload)
    sending = asyncio.ensure_future(writer.drain())
    async with asyncio.timeout(10):
        while not front.server.read_pauses:
            await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    await swept_past(front, loop.time() + 1.0 + 4 * front.server.limits.tick_s)
    go.set()
    await sending
    # Reading resumed; the body is not over yet while the sweep looks at it again.
    await swept_past(front, loop.time() + 4 * front.server.limits.tick_s)
    writer.write(b"!")
    resp = await asyncio.wait_for(read_response(reader), 10)
    assert resp.status == 200 and resp.body == b"%d" % (len(payload) + 1)
    writer.close()
    assert seen == [] and front.server.timeouts == {}
