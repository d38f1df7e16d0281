"""The supervisor ↔ worker control channel, against a real Worker in this process (its front not
listening) over a real Unix socketpair: typed round trips, many requests in flight, errors
reported as errors, a closed channel, and the decoder refusing what is not a known message."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import msgspec
import pytest

from proxy.blocklist.model import Entry
from proxy.node.control import (
    Applied,
    BlocklistDelta,
    Channel,
    ControlError,
    Failed,
    Ping,
    Pong,
    Purge,
    Purged,
    Ready,
    StatsReply,
    StatsRequest,
    read_frame,
    reply_decoder,
    request_decoder,
)
from proxy.node.worker import Worker
from tests.integration.conftest import config


class Pair:
    def __init__(self, worker: Worker, channel: Channel, task: asyncio.Future[None]) -> None:
        self.worker = worker
        self.channel = channel
        self.task = task


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """A Worker serving its end of a socketpair; the test holds the supervisor's Channel."""
    worker = Worker(config("http://127.0.0.1:9"), 0)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    task = asyncio.ensure_future(worker.serve_control(child.detach()))
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    channel = Channel(reader, writer)
    async with asyncio.timeout(5):
        ready = await channel.ready
    assert ready.worker == 0
    yield Pair(worker, channel, task)
    channel.close()
    task.cancel()
    await worker.origin.close()


async def test_typed_round_trips(pair: Pair) -> None:
    pong = await pair.channel.call(Ping(), Pong, timeout_s=5)
    assert pong.pid > 0
    entry = Entry(id="e1", type="url", value="http://a.test/x")  # type: ignore[arg-type]
    ack = await pair.channel.call(BlocklistDelta(version=7, add=[entry]), Applied, timeout_s=5)
    assert ack.version == 7 and ack.applied_at > 0
    assert pair.worker.pipeline.blocklist.version == 7
    stats = await pair.channel.call(StatsRequest(), StatsReply, timeout_s=5)
    assert stats.blocklist.version == 7 and stats.worker == 0
    assert set(stats.stats["sites"]) == {"test", "-"}
    purged = await pair.channel.call(Purge(host="a.test"), Purged, timeout_s=5)
    assert purged.purged == 0


async def test_many_requests_in_flight_get_their_own_answers(pair: Pair) -> None:
    calls = []
    for i in range(30):
        if i % 3 == 0:
            calls.append(pair.channel.call(StatsRequest(), StatsReply, timeout_s=5))
        elif i % 3 == 1:
            calls.append(pair.channel.call(Ping(), Pong, timeout_s=5))
        else:
            calls.append(pair.channel.call(Purge(url="not a url"), Purged, timeout_s=5))
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, r in enumerate(results):
        expected = (StatsReply, Pong, ControlError)[i % 3]
        assert isinstance(r, expected), (i, r)


@pytest.mark.parametrize(
    "purge, message",
    [
        (Purge(url="/no-host"), "needs a scheme and a host"),
        (Purge(prefix="http://a.test/a%00b"), "not a valid URL"),
    ],
)
async def test_a_failing_op_is_an_error_and_the_worker_keeps_answering(
    pair: Pair, purge: Purge, message: str
) -> None:
    with pytest.raises(ControlError, match=message):
        await pair.channel.call(purge, Purged, timeout_s=5)
    assert isinstance(await pair.channel.call(Ping(), Pong, timeout_s=5), Pong)


async def test_an_answer_of_the_wrong_type_is_an_error(pair: Pair) -> None:
    with pytest.raises(ControlError, match="expected Applied, worker answered Pong"):
        await pair.channel.call(Ping(), Applied, timeout_s=5)


async def test_a_closed_channel_fails_pending_and_later_calls() -> None:
    """The worker's end goes away (the process died) with a request in flight: that call and
    every later one fail with ControlError instead of hanging until their timeouts."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    channel = Channel(reader, writer)
    try:
        child.setblocking(False)
        pending = asyncio.ensure_future(channel.call(Ping(), Pong, timeout_s=30))
        async with asyncio.timeout(5):
            # The request reached the worker's end.
            assert await asyncio.get_running_loop().sock_recv(child, 4)
        child.close()
        async with asyncio.timeout(5):
            with pytest.raises(ControlError, match="channel closed"):
                await pending
            with pytest.raises(ControlError, match="channel closed"):
                await channel.ready
            with pytest.raises(ControlError, match="channel closed"):
                await channel.call(Ping(), Pong, timeout_s=30)
    finally:
        channel.close()


async def test_an_unreadable_reply_closes_the_channel_with_the_reason() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    channel = Channel(reader, writer)
    try:
        pending = asyncio.ensure_future(channel.call(Ping(), Pong, timeout_s=30))
        body = b'{"op": "launch", "id": 1}'
        child.sendall(struct.pack("!I", len(body)) + body)
        async with asyncio.timeout(5):
            with pytest.raises(ControlError, match="unreadable frame"):
                await pending
    finally:
        child.close()
        channel.close()


# -- the decoders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame, fault",
    [
        (b'{"op": "blocklist.nuke", "id": 1}', "Invalid value 'blocklist.nuke'"),
        (b'{"op": "ping", "id": 1, "extra": 2}', "unknown field `extra`"),
        (b'{"op": "blocklist.delta", "id": 1}', "missing required field `version`"),
        (b'{"op": "blocklist.delta", "id": 1, "version": "7"}', "Expected `int`"),
        (b'{"id": 1}', "missing required field `op`"),
        (b'{"op": "applied", "id": 1, "version": 1, "applied_at": 1, "pid": 1}', "Invalid value"),
        (b"[1, 2]", "Expected `object`"),
        (b"{not json", "malformed"),
    ],
)
def test_request_decoder_refuses_what_is_no_known_request(frame: bytes, fault: str) -> None:
    with pytest.raises(msgspec.DecodeError, match=fault):
        request_decoder.decode(frame)


def test_reply_decoder_refuses_requests_and_unknown_replies() -> None:
    with pytest.raises(msgspec.ValidationError):
        reply_decoder.decode(b'{"op": "ping", "id": 3}')
    with pytest.raises(msgspec.ValidationError):
        reply_decoder.decode(b'{"op": "pong", "id": 3}')  # no pid
    assert reply_decoder.decode(b'{"op": "pong", "id": 3, "pid": 9}') == Pong(id=3, pid=9)


async def test_worker_answers_an_unknown_op_with_an_error_carrying_its_id() -> None:
    """Raw frames into a worker's end: an op it does not know gets `Failed` with the request's
    id (so the supervisor's caller gets the error), and the worker keeps answering."""
    worker = Worker(config("http://127.0.0.1:9"), 0)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    task = asyncio.ensure_future(worker.serve_control(child.detach()))
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    try:
        async with asyncio.timeout(5):
            assert isinstance(reply_decoder.decode(await read_frame(reader)), Ready)
        for body in (b'{"op": "blocklist.nuke", "id": 41}', b'{"op": "ping", "id": 42}'):
            writer.write(struct.pack("!I", len(body)) + body)
        await writer.drain()
        async with asyncio.timeout(5):
            first = reply_decoder.decode(await read_frame(reader))
            second = reply_decoder.decode(await read_frame(reader))
        answers = {m.id: m for m in (first, second)}
        assert isinstance(answers[41], Failed) and "blocklist.nuke" in answers[41].error
        assert isinstance(answers[42], Pong)
    finally:
        writer.close()
        task.cancel()
        await worker.origin.close()
