"""The origin seam: what the phases need from an origin client, and nothing more.

`Origin` is to the fetch phase what httpx's transport is to its client: the pooled llhttp client,
the aiohttp client for https and the tests' in-memory origin all implement it, so fetch,
upstream_response and store are tested without sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol

from multidict import CIMultiDict
from yarl import URL

Interim = Callable[[int, bytes, list[tuple[bytes, bytes]]], None]
"""Told each interim (1xx) head the origin sends before its final one: (status, reason, fields).
It must not raise; it is called from the client's parser callback. 101 is never passed to it
(the edge forwards no Upgrade, so a switch is a protocol error, 502)."""


class UpstreamResponse(Protocol):
    """An origin response whose body has not been read yet."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]

    @property
    def content_length(self) -> int | None: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; raises OriginError on a timeout or broken framing."""
        ...

    async def read_up_to(self, limit_bytes: int) -> tuple[bytes, bool]:
        """Read the body while it fits in `limit_bytes`. Returns (bytes read, complete)."""
        ...

    def body_if_whole(self, limit_bytes: int) -> bytes | None:
        """The whole body, read, when all of it has arrived already and it fits in
        `limit_bytes`; else None, and nothing is read. A shortcut for `read_up_to` (no
        coroutine, no wait) that a client may always decline."""
        ...

    def release(self) -> None:
        """Give the connection back (or close it when the body was not read to the end)."""

    def close(self) -> None: ...


class Origin(Protocol):
    """Send one request, return its final response head. Interim (1xx) heads never surface as
    the answer; each is passed to `interim`, when given, as it arrives. `fields`, when given, is
    `headers` rendered as field lines by `proxy.origin.h1.render_fields` (checked, each ending
    CRLF): a client that writes HTTP/1.1 itself sends them instead of rendering `headers`
    again (the fetch phase renders the fields a client repeats on every request once); the
    others read `headers`."""

    requests: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def request(
        self,
        origin: URL,
        method: str,
        path_query: bytes,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None,
        interim: Interim | None = None,
        fields: bytes | None = None,
    ) -> UpstreamResponse: ...
