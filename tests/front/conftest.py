"""A real front on 127.0.0.1 and a raw-bytes client for its tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from proxy.front.api import FrontRequest, Handler, Responder
from proxy.front.limits import FrontLimits
from proxy.front.server import FrontServer

OK_BODY = b"hello"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


def ok_handler(request: FrontRequest, responder: Responder) -> None:
    """The fast path: one pre-serialised write, no coroutine."""
    responder.send_bytes(OK_RESPONSE, close=not request.keep_alive)


@dataclass
class Response:
    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    raw_head: bytes = b""
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


async def read_head(
    reader: asyncio.StreamReader,
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    version, status, *reason = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip()))
    return int(status), (reason[0] if reason else b""), version, headers, raw


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> Response:
    """One response; interim 1xx answers are collected into `interim`."""
    interim: list[int] = []
    while True:
        status, reason, version, headers, raw = await read_head(reader)
        if status >= 200:
            break
        interim.append(status)
    resp = Response(status, reason, version, headers, raw_head=raw, interim=interim)
    if head_request or status in (204, 304):
        return resp
    length = resp.header("content-length")
    if length is not None:
        resp.body = await reader.readexactly(int(length))
    elif (resp.header("transfer-encoding") or b"").lower() == b"chunked":
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        resp.body = b"".join(parts)
    else:
        resp.body = await reader.read()
    return resp


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float = 3.0) -> bool:
    """True when the server closed the connection (EOF or reset) within the timeout."""
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout_s)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return data == b""


@dataclass
class Front:
    server: FrontServer
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes, **kw: bool) -> Response:
        """Send raw bytes on a fresh connection and read one response."""
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            await writer.drain()
            return await asyncio.wait_for(read_response(reader, **kw), 5)
        finally:
            writer.close()


StartFront = Callable[..., Awaitable[Front]]


@pytest.fixture
async def start_front() -> AsyncIterator[StartFront]:
    servers: list[FrontServer] = []

    async def start(handler: Handler = ok_handler, **limits: float) -> Front:
        server = FrontServer(handler, FrontLimits(**limits))  # type: ignore[arg-type]
        await server.start(host="127.0.0.1", port=0)
        servers.append(server)
        return Front(server, server.port)

    yield start
    for server in servers:
        await server.drain_and_close(0.5)
