"""A client for phase tests: one request over the fake transport of `conftest.Worker`, and the
answer as a client would read it (status, header fields, body), parsed with llhttp as the front
writes it (whole, Content-Length framed, or chunked)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httptools


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def header(self, name: str) -> str | None:
        values = [v.decode("latin-1") for n, v in self.headers if n.decode().lower() == name]
        return ", ".join(values) if values else None

    @property
    def cache_status(self) -> str:
        return self.header("cache-status") or ""


class _Parser:
    def __init__(self) -> None:
        self.reply = Reply()
        self._body: list[bytes] = []
        self._p = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> None:
        self._p.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.reply.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.reply.status = self._p.get_status_code()

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        self.reply.body = b"".join(self._body)
        self.reply.complete = True


def request_bytes(
    method: str = "GET",
    target: str = "/a",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: edge.test"]
    lines += [f"{n}: {v}" for n, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll (yielding to the loop) until `predicate` holds; fails after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


class Exchange:
    """One request sent on its own connection; `reply()` waits for the whole answer."""

    def __init__(self, worker: Any, data: bytes) -> None:
        self.conn, self.transport = worker.connect()
        self.conn.data_received(data)

    def _parsed(self) -> Reply:
        p = _Parser()
        p.feed(b"".join(self.transport.writes))
        return p.reply

    def done(self) -> bool:
        return self._parsed().complete

    async def reply(self, timeout_s: float = 5.0) -> Reply:
        await until(self.done, timeout_s)
        self.conn.connection_lost(None)
        return self._parsed()


def send(
    worker: Any,
    method: str = "GET",
    target: str = "/a",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Exchange:
    return Exchange(worker, request_bytes(method, target, headers, body))


async def fetch(
    worker: Any,
    method: str = "GET",
    target: str = "/a",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Reply:
    return await send(worker, method, target, headers, body).reply()
