"""Ambiguous or malformed requests: 400 (505 for versions) with `Connection: close`, then a close.
Never a 500, never a dead server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable

import pytest

from proxy.front.api import FrontRequest, Responder
from tests.front.conftest import OK_RESPONSE, StartFront, closed_by_server, read_response

H = b"Host: example.test\r\n"

ATTACKS = {
    "cl-and-te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate-cl-same": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    "duplicate-cl-differing": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "cl-list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-negative": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "cl-plus": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "cl-overflow": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n"
    b"\r\n0\r\n\r\n",
    "te-chunked-identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity"
    b"\r\n\r\n0\r\n\r\n",
    "te-xchunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-twice": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : example.test\r\n\r\n",
    "bad-header-name": b"GET / HTTP/1.1\r\n" + H + b"X(Y): 1\r\n\r\n",
    "nul-in-target": b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n",
    "control-in-target": b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "control-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x07b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\n" + H + b"\n",
    "bare-cr": b"GET / HTTP/1.1\rHost: example.test\r\n\r\n",
    "leading-space-header": b"GET / HTTP/1.1\r\n Host: example.test\r\n\r\n",
    "double-host": b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    "double-host-case": b"GET / HTTP/1.1\r\nHost: a.test\r\nhOST: a.test\r\n\r\n",
    "bad-method-token": b"G(T / HTTP/1.1\r\n" + H + b"\r\n",
    "upgrade-with-body": b"POST / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: 3\r\n\r\nabc",
}

VERSIONS = {
    "http-2.0": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "http-1.2": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
    "http-3.1": b"GET / HTTP/3.1\r\n" + H + b"\r\n",
    "http-0.9": b"GET /\r\n\r\n",
}


def echo(request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
    """Sync for body-less requests, reads the body first otherwise."""
    if not request.has_body:
        responder.send_bytes(OK_RESPONSE, close=not request.keep_alive)
        return None

    async def read() -> None:
        body = await request.body.read_all(limit_bytes=1 << 20)
        responder.send_bytes(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
            close=not request.keep_alive,
        )

    return read()


@pytest.mark.parametrize("raw", ATTACKS.values(), ids=ATTACKS.keys())
async def test_attack_is_400_then_close(start_front: StartFront, raw: bytes) -> None:
    front = await start_front(echo)
    reader, writer = await front.connect()
    writer.write(raw)
    resp = await read_response(reader)
    assert resp.status == 400
    assert resp.header("connection") == b"close"
    assert resp.body.startswith(b"400 Bad Request: ")
    assert await closed_by_server(reader)
    assert (await front.exchange(b"GET / HTTP/1.1\r\n" + H + b"\r\n")).status == 200


@pytest.mark.parametrize("raw", VERSIONS.values(), ids=VERSIONS.keys())
async def test_other_versions_are_505(start_front: StartFront, raw: bytes) -> None:
    front = await start_front()
    resp = await front.exchange(raw)
    assert resp.status == 505 and resp.header("connection") == b"close"


async def test_attack_after_a_good_pipelined_request_answers_the_good_one_first(
    start_front: StartFront,
) -> None:
    front = await start_front()
    reader, writer = await front.connect()
    writer.write(b"GET / HTTP/1.1\r\n" + H + b"\r\n" + ATTACKS["cl-and-te"])
    assert (await read_response(reader)).status == 200
    assert (await read_response(reader)).status == 400
    assert await closed_by_server(reader)


async def test_bad_body_after_the_answer_just_closes(start_front: StartFront) -> None:
    front = await start_front()  # answers at the end of the head, never reads the body
    reader, writer = await front.connect()
    writer.write(ATTACKS["bad-chunk-size"] + b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert (await read_response(reader)).status == 200
    assert await closed_by_server(reader)  # no second answer: the stream cannot be trusted


async def test_missing_host_is_left_to_the_pipeline(start_front: StartFront) -> None:
    front = await start_front()
    assert (await front.exchange(b"GET / HTTP/1.1\r\n\r\n")).status == 200


async def test_header_values_are_stripped_and_names_kept(start_front: StartFront) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    def record(request: FrontRequest, responder: Responder) -> None:
        seen.append(request.headers)
        responder.send_bytes(OK_RESPONSE)

    front = await start_front(record)
    await front.exchange(b"GET / HTTP/1.1\r\nHost:   a.test  \r\nX-Mixed-Case:\tv w\t\r\n\r\n")
    assert seen == [[(b"Host", b"a.test"), (b"X-Mixed-Case", b"v w")]]


def _fuzz_inputs(count: int) -> list[bytes]:
    rng = random.Random(20240607)
    seeds = [
        b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ]
    alphabet = b"\r\n :;,\t\x00\x7f\xffGETPOST/HTTP1.0chunkedContent-Length0123456789"
    out = []
    for i in range(count):
        if i % 3 == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            pos = rng.randrange(len(data) + 1)
            op = rng.randrange(4)
            if op == 0:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 8)))
            elif op == 1:
                del data[pos : pos + rng.randrange(1, 8)]
            elif op == 2 and data:
                data[min(pos, len(data) - 1)] = rng.choice(alphabet)
            else:
                data = data * 2  # pipelining
        out.append(bytes(data))
    return out


async def test_random_bytes_never_get_a_5xx_nor_kill_the_server(start_front: StartFront) -> None:
    front = await start_front(echo, header_read_timeout_s=0.5, body_read_timeout_s=0.5)
    statuses: list[bytes] = []

    async def one(raw: bytes) -> None:
        reader, writer = await front.connect()
        writer.write(raw)
        writer.write_eof()
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            data = b""
        writer.close()
        for line in data.split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 "):
                statuses.append(line[9:12])

    inputs = _fuzz_inputs(300)
    for start in range(0, len(inputs), 30):
        await asyncio.gather(*(one(raw) for raw in inputs[start : start + 30]))
    server_errors = [s for s in statuses if s.startswith(b"5") and s != b"505"]
    assert server_errors == []
    assert b"200" in statuses and b"400" in statuses
    assert front.server.handler_errors == 0
    assert (await front.exchange(b"GET / HTTP/1.1\r\n" + H + b"\r\n")).status == 200
