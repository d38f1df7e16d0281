"""Issue 10, upstream hygiene: origin response heads over `max_response_header_*` give 502 and a
closed connection, in both origin clients (llhttp for http origins, aiohttp for https; the
aiohttp client is run against a plain-http origin here, its parser is the same), against raw
origins on 127.0.0.1; then one head fed to the llhttp client a byte at a time, so that counting
across reads is exact whatever TCP does with the origin's writes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from yarl import URL

from proxy.config import OriginConfig
from proxy.origin import OriginError, OriginFailure
from proxy.origin.h1 import H1OriginPool, _Conn
from proxy.origin.head import ResponseHeadLimits
from proxy.origin.tls import AiohttpOriginPool
from tests.integration.scripted import ScriptedOrigin, Step
from tests.integration.test_origin_h1 import hdrs

LIMITS = {
    "max_response_header_bytes": 400,
    "max_response_header_count": 10,
    "max_response_header_field_bytes": 100,
}
HEAD_LIMITS = ResponseHeadLimits(400, 10, 100)
Client = H1OriginPool | AiohttpOriginPool
Respond = Callable[[int, int, bytes, bytes], list[Step] | Iterator[Step]]


def fields(*sizes: int) -> bytes:
    """Fields whose name + value are `sizes` bytes each ("X-07: vvv...")."""
    return b"".join(b"X-%02d: %b\r\n" % (i, b"v" * (size - 4)) for i, size in enumerate(sizes))


def answer(extra: bytes, reason: bytes = b"OK", body: bytes = b"fine") -> bytes:
    """A 200 with `extra` fields; its Content-Length field adds one field of 15 bytes."""
    assert len(body) < 10
    return b"HTTP/1.1 200 %b\r\n%bContent-Length: %d\r\n\r\n%b" % (reason, extra, len(body), body)


AT_LIMITS = answer(fields(100, *[36] * 7, 33), reason=b"R" * 100)  # 10 fields, 400 bytes


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await clients(H1OriginPool or AiohttpOriginPool, **origin config)`: a started client
    with LIMITS and a first-byte timeout far beyond what any of these tests should take."""
    made: list[Client] = []

    async def make(cls: type[Client], **cfg: Any) -> Client:
        client = cls(OriginConfig(**{**LIMITS, "first_byte_timeout_s": 10.0, **cfg}))
        await client.start()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture(params=[H1OriginPool, AiohttpOriginPool], ids=["h1", "tls"])
def make_client(request: Any, clients: Any) -> Callable[..., Awaitable[Client]]:
    return lambda **cfg: clients(request.param, **cfg)


@pytest.fixture
def make_h1(clients: Any) -> Callable[..., Awaitable[H1OriginPool]]:
    return lambda **cfg: clients(H1OriginPool, **cfg)


@pytest.fixture
def origin(scripted: Any) -> Callable[[Respond], Awaitable[ScriptedOrigin]]:
    """`await origin(bad)`: a scripted origin (conftest's, stopped after the test) where `bad`
    answers /bad and /good gets a small 200."""

    def start(bad: Respond) -> Awaitable[ScriptedOrigin]:
        def respond(c: int, r: int, head: bytes, body: bytes) -> list[Step] | Iterator[Step]:
            if head.startswith(b"GET /bad "):
                return bad(c, r, head, body)
            return [answer(b"")]

        return scripted(respond)

    return start


async def get(client: Client, origin: ScriptedOrigin, path: bytes) -> tuple[int, bytes]:
    resp = await client.request(origin.url, "GET", path, hdrs(), None)
    body, complete = await resp.read_up_to(1 << 20)
    assert complete
    resp.release()
    return resp.status, body


async def assert_refused(client: Client, origin: ScriptedOrigin, limit: str) -> None:
    """/bad is a protocol 502 naming `limit`; its connection is not used again."""
    async with asyncio.timeout(5):  # far below first_byte_timeout_s: a limit, not the timer
        with pytest.raises(OriginError) as e:
            await get(client, origin, b"/bad")
    assert e.value.kind is OriginFailure.PROTOCOL and e.value.status == 502
    assert limit in e.value.detail, e.value.detail
    assert client.errors[OriginFailure.PROTOCOL] == 1
    assert await get(client, origin, b"/good") == (200, b"fine")
    assert origin.connections == 2


# -- over a limit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "limit"),
    [
        (answer(fields(*[10] * 10)), "max_response_header_count"),  # 11 with Content-Length
        (answer(fields(101)), "max_response_header_field_bytes"),
        (answer(fields(*[50] * 8)), "max_response_header_bytes"),  # 415 bytes in 9 fields
        (answer(b"", reason=b"R" * 101), "max_response_header_field_bytes"),
    ],
    ids=["too-many-fields", "one-field-too-large", "total-over-many-small-fields", "reason"],
)
async def test_head_over_a_limit_is_protocol_502_and_closed(
    make_client, origin, bad: bytes, limit: str
) -> None:
    o = await origin(lambda c, r, h, b: [bad])
    client = await make_client()
    await assert_refused(client, o, limit)


@pytest.mark.parametrize("pieces", ["whole", "byte-by-byte"])
async def test_head_exactly_at_the_limits_passes_and_is_pooled(make_client, origin, pieces) -> None:
    if pieces == "whole":
        o = await origin(lambda c, r, h, b: [AT_LIMITS])
    else:
        o = await origin(lambda c, r, h, b: [AT_LIMITS[i : i + 1] for i in range(len(AT_LIMITS))])
    client = await make_client()
    assert await get(client, o, b"/bad") == (200, b"fine")
    assert await get(client, o, b"/good") == (200, b"fine")
    assert o.connections == 1 and sum(client.errors.values()) == 0


async def test_limits_are_the_configured_ones(make_client, origin) -> None:
    o = await origin(lambda c, r, h, b: [answer(fields(*[10] * 10))])
    client = await make_client(max_response_header_count=11)
    assert await get(client, o, b"/bad") == (200, b"fine")


# -- heads that never end ---------------------------------------------------------------------


def endless_fields(c: int, r: int, head: bytes, body: bytes) -> Iterator[Step]:
    yield b"HTTP/1.1 200 OK\r\n"
    for i in itertools.count():
        yield b"X-%d: y\r\n" % i


def endless_value(c: int, r: int, head: bytes, body: bytes) -> Iterator[Step]:
    yield b"HTTP/1.1 200 OK\r\nX-Endless: "
    while True:
        yield b"v" * 7


def endless_reason(c: int, r: int, head: bytes, body: bytes) -> Iterator[Step]:
    yield b"HTTP/1.1 200 "
    while True:
        yield b"R" * 7


@pytest.mark.parametrize(
    ("bad", "limit"),
    [
        (endless_fields, "max_response_header_count"),
        (endless_value, "max_response_header_field_bytes"),
        (endless_reason, "max_response_header_field_bytes"),
    ],
    ids=["fields", "one-value", "reason"],
)
async def test_endless_head_is_cut_at_a_limit_not_the_timeout(
    make_client, origin, bad: Respond, limit: str
) -> None:
    o = await origin(bad)
    client = await make_client()
    await assert_refused(client, o, limit)


def endless_whitespace(c: int, r: int, head: bytes, body: bytes) -> Iterator[Step]:
    yield b"HTTP/1.1 200 OK\r\nX-Blank:"
    while True:
        yield b" " * 7


def endless_interim(c: int, r: int, head: bytes, body: bytes) -> Iterator[Step]:
    while True:
        yield b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    ("bad", "limit"),
    [
        (endless_whitespace, "max_response_header_field_bytes"),
        (endless_interim, "max_response_header_count"),
    ],
    ids=["whitespace", "interim-answers"],
)
async def test_h1_cuts_what_no_field_counts(make_h1, origin, bad: Respond, limit) -> None:
    """llhttp reports no field for whitespace before a value, nor for an interim answer: the
    llhttp client counts bytes and interim heads. (aiohttp does neither: there the first-byte
    timeout ends these, as proxy/origin/tls.py says.)"""
    o = await origin(bad)
    await assert_refused(await make_h1(), o, limit)


@pytest.mark.parametrize("bad", [endless_whitespace, endless_interim], ids=["ws", "interim"])
async def test_tls_leaves_what_no_field_counts_to_the_first_byte_timeout(
    clients, origin, bad
) -> None:
    """The known gap proxy/origin/tls.py documents: aiohttp counts neither (should it start
    to, this fails and that docstring is due for an update)."""
    o = await origin(bad)
    client = await clients(AiohttpOriginPool, first_byte_timeout_s=0.2)
    with pytest.raises(OriginError) as e:
        await get(client, o, b"/bad")
    assert e.value.kind is OriginFailure.TIMEOUT and e.value.status == 504


async def test_interim_heads_count_towards_the_final_one(make_h1, origin) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\n" + fields(50, 50) + b"\r\n"
    final = answer(fields(*[50] * 6))  # alone: 7 fields, 315 bytes
    o = await origin(lambda c, r, h, b: [early, final])
    pool = await make_h1()
    await assert_refused(pool, o, "max_response_header_bytes")  # with it: 10 fields, 415 bytes


# -- malformed heads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [b"X A: 1", b"X-A : 1", b": 1", b"X\xe9: 1", b"X-A: o\x00ne", b"X-A: o\x01ne", b"X-A: o\rne"],
    ids=["space-in-name", "space-before-colon", "no-name", "non-token", "nul", "ctl", "bare-cr"],
)
async def test_malformed_field_is_protocol_502_and_closed(make_client, origin, field) -> None:
    o = await origin(lambda c, r, h, b: [answer(field + b"\r\n")])
    client = await make_client()
    await assert_refused(client, o, "")


async def test_htab_in_a_value_is_the_one_control_character_allowed(make_client, origin) -> None:
    o = await origin(lambda c, r, h, b: [answer(b"X-A: one\ttwo\r\n")])
    client = await make_client()
    resp = await client.request(o.url, "GET", b"/bad", hdrs(), None)
    resp.release()
    assert resp.status == 200 and (b"X-A", b"one\ttwo") in resp.headers


async def test_obs_fold_refused_or_joined_never_relayed(make_client, origin) -> None:
    """RFC 9112 §5.2: a proxy refuses obs-fold with 502 (llhttp) or replaces it with spaces
    (aiohttp's lenient parser); either way no line break reaches the client."""
    o = await origin(lambda c, r, h, b: [answer(b"X-A: one\r\n two\r\n")])
    client = await make_client()
    if isinstance(client, H1OriginPool):
        await assert_refused(client, o, "")
        return
    resp = await client.request(o.url, "GET", b"/bad", hdrs(), None)
    resp.release()
    assert (b"X-A", b"one two") in resp.headers


# -- fed a byte at a time ---------------------------------------------------------------------


class _Wire(asyncio.Transport):
    """A transport that takes the request and nothing else: the test feeds the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.request: asyncio.Future[bytes] = loop.create_future()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.request.done():
            self.request.set_result(bytes(data))

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def feed_bytewise(pool: H1OriginPool, data: bytes) -> tuple[asyncio.Task[Any], int, _Wire]:
    """Run one exchange on a connection whose reads are one byte each; stop feeding once the
    connection is closed. Returns the exchange, the bytes fed and the wire."""
    loop = asyncio.get_running_loop()
    conn = _Conn(pool, pool._host(URL("http://127.0.0.1:9")), loop)
    pool._open += 1
    pool._conns.add(conn)
    wire = _Wire(loop)
    conn.connection_made(wire)
    task = asyncio.ensure_future(
        conn.exchange(b"GET / HTTP/1.1\r\n\r\n", None, None, False, time.monotonic(), 1e12)
    )
    await wire.request  # the exchange now waits for its answer
    fed = 0
    for i in range(len(data)):
        if conn.closed:
            break
        conn.data_received(data[i : i + 1])
        fed += 1
    return task, fed, wire


async def test_bytewise_head_at_the_limits_passes(make_h1) -> None:
    pool = await make_h1()
    task, fed, wire = await feed_bytewise(pool, AT_LIMITS)
    resp = await task
    assert fed == len(AT_LIMITS) and not wire.closed
    assert resp.status == 200 and len(resp.headers) == 10 and resp.reason == b"R" * 100
    assert await resp.read_up_to(100) == (b"fine", True)


@pytest.mark.parametrize(
    ("bad", "limit"),
    [
        (answer(fields(*[10] * 10)), "max_response_header_count"),
        (answer(fields(101)), "max_response_header_field_bytes"),
        (answer(fields(*[50] * 8)), "max_response_header_bytes"),
    ],
    ids=["too-many-fields", "one-field-too-large", "total-over-many-small-fields"],
)
async def test_bytewise_head_over_a_limit_is_refused_as_it_arrives(
    make_h1, bad: bytes, limit: str
) -> None:
    pool = await make_h1()
    task, fed, wire = await feed_bytewise(pool, bad)
    with pytest.raises(OriginError) as e:
        await task
    assert e.value.kind is OriginFailure.PROTOCOL and limit in e.value.detail
    assert wire.closed and fed < len(bad) and pool.open_connections == 0


@pytest.mark.parametrize("filler", [b"v", b" "], ids=["value", "whitespace"])
async def test_bytewise_endless_field_is_cut_at_the_stall_bound(make_h1, filler) -> None:
    pool = await make_h1()
    status = b"HTTP/1.1 200 OK\r\n"
    data = status + b"X-Endless: " + filler * (4 * HEAD_LIMITS.stall_bytes)
    task, fed, wire = await feed_bytewise(pool, data)
    with pytest.raises(OriginError) as e:
        await task
    assert e.value.kind is OriginFailure.PROTOCOL and "max_response_header_field_bytes" in str(e)
    # Cut once stall_bytes came without a field completing, not later, and never before.
    assert HEAD_LIMITS.stall_bytes < fed <= HEAD_LIMITS.stall_bytes + len(status)
    assert wire.closed


# -- transfer codings (issue 10) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "te",
    [b"gzip, chunked", b"deflate,chunked", b"x-unknown, chunked", b"GZIP ,  chunked"],
)
async def test_a_transfer_coding_other_than_chunked_is_refused(
    make_client: Any, origin: Any, te: bytes
) -> None:
    """Both clients refuse a body under a transfer coding the edge would relay unlabelled
    (Transfer-Encoding is hop-by-hop) and judge as coded bytes."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    o = await origin(
        lambda c, r, h, b: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %b\r\n\r\n%b" % (te, body)]
    )
    client = await make_client()
    await assert_refused(client, o, "transfer coding")


async def test_chunked_alone_is_relayed(make_client: Any, origin: Any) -> None:
    o = await origin(
        lambda c, r, h, b: [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ]
    )
    client = await make_client()
    assert await get(client, o, b"/bad") == (200, b"hello")
