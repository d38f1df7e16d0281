"""Shared pieces for the cache integration tests: a scriptable origin that counts what it sees,
a fake clock injected into the edge, and a small client.

`ScriptedOrigin` answers each path from a list of canned responses (the last one repeats), so a
test states exactly what the origin says on the 1st, 2nd, ... request and then asserts on the
requests it received (method, headers, body).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.metrics import NO_STORE
from proxy.rfc.dates import format_http_date
from tests.integration.scripted import ScriptedOrigin as BytesOrigin


@dataclass
class Canned:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"body"
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes


class ScriptedOrigin:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Canned | Callable[[web.Request], Canned]]] = {}
        self.seen: list[Seen] = []
        self.clock: Callable[[], float] | None = None  # sets Date when a test moves time
        self.handlers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def on(self, path: str, *responses: Canned | Callable[[web.Request], Canned]) -> None:
        self.scripts[path] = list(responses)

    def count(self, path: str | None = None) -> int:
        return sum(1 for s in self.seen if path is None or s.path == path)

    def last(self, path: str) -> Seen:
        return [s for s in self.seen if s.path == path][-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, request.headers, body))
        if request.path in self.handlers:
            return await self.handlers[request.path](request)
        script = self.scripts.get(request.path_qs) or self.scripts.get(request.path)
        if not script:
            return web.Response(status=404, body=b"no script")
        item = script.pop(0) if len(script) > 1 else script[0]
        canned = item(request) if callable(item) else item
        if canned.delay_s:
            await asyncio.sleep(canned.delay_s)
        headers: CIMultiDict[str] = CIMultiDict(canned.headers)
        if self.clock is not None and "Date" not in headers:
            headers["Date"] = format_http_date(self.clock())
        no_body = canned.status in (204, 304) or request.method == "HEAD"
        resp = web.Response(
            status=canned.status, body=None if no_body else canned.body, headers=headers
        )
        return resp


def http_date(offset_s: float = 0.0, now: float | None = None) -> str:
    return format_http_date((now if now is not None else time.time()) + offset_s)


class FakeClock:
    """Injected into the edge's pipeline and fetcher: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def use_clock(edge: Any, origin: ScriptedOrigin | None = None) -> FakeClock:
    clock = FakeClock()
    if origin is not None:
        origin.clock = clock
    edge.pipeline.clock = clock
    return clock


@dataclass
class Got:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def cache_status(self) -> str:
        return self.headers.get("Cache-Status", "")


async def get(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, data: Any = None
) -> Got:
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
    ) as s:
        async with s.request(
            method, url, headers=headers or {}, data=data, allow_redirects=False
        ) as r:
            return Got(r.status, r.headers, await r.read())


def not_stored(edge: Any, reason: str) -> int:
    return int(edge.stats.not_stored[NO_STORE.index(reason)])


async def scripted_edge(
    origin_server: Any, make_edge: Any, **overrides: Any
) -> tuple[ScriptedOrigin, Any]:
    origin = ScriptedOrigin()
    edge = await make_edge(await origin_server(origin.app), **overrides)
    return origin, edge


class RawOrigin(BytesOrigin):
    """A tiny asyncio origin that answers every request with fixed raw bytes (for what aiohttp
    will not send: 1xx interim responses, no Date, Connection-named fields, slow bodies): the
    scripted origin (tests/integration/scripted.py) answering from the request head alone;
    `start` gives its base URL as text."""

    def __init__(self, respond: Callable[[bytes], Iterable[bytes | float]]) -> None:
        # request head -> parts to write (maybe without end); a float pauses that long
        super().__init__(lambda _conn, _req, head, _body: respond(head))

    async def start(self) -> str:  # type: ignore[override]
        await super().start()
        return str(self.url)
