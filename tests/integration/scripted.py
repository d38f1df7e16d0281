"""A scripted origin for the origin client's tests: exact bytes, pauses and closes, request by
request, on 127.0.0.1 (the `scripted` fixture in conftest.py starts and stops them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from yarl import URL

from proxy.origin.h1 import H1OriginPool

Step = bytes | float | None  # bytes: write; float: pause; None: close the connection
MakePool = Callable[..., Awaitable[H1OriginPool]]


class ScriptedOrigin:
    """An origin answering with exact bytes: `respond(conn_no, req_no, head, body)` gives the
    steps for one request (conn_no and req_no count from 0; req_no within the connection),
    taken one at a time (an endless generator writes until the client goes)."""

    def __init__(self, respond: Callable[[int, int, bytes, bytes], Iterable[Step]]) -> None:
        self.respond = respond
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = URL()

    async def start(self) -> ScriptedOrigin:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.url = URL(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}")
        return self

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_no = self.connections
        self.connections += 1
        try:
            req_no = 0
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await _read_body(reader, head)
                self.heads.append(head)
                self.bodies.append(body)
                for step in self.respond(conn_no, req_no, head, body):
                    if step is None:
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
                req_no += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # cancelled: the test is over (3.11's start_server logs a cancelled handler)
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":", 1)[1]))
    return b""
