"""https origins through one pooled aiohttp session per worker, configured for proxying: no
decompression, no cookie jar, no redirects, no automatic headers. Connect, first-byte, read-gap
and total deadlines as in `proxy.origin.h1`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.config import OriginConfig
from proxy.origin.errors import IDEMPOTENT, OriginError, OriginFailure


class AiohttpUpstreamResponse:
    """An origin response whose body has not been read yet. `release()` returns the connection
    to the pool (or closes it if the body was not read to the end)."""

    __slots__ = ("_resp", "status", "reason", "headers", "_read_timeout_s", "_deadline", "started")

    def __init__(
        self, resp: aiohttp.ClientResponse, read_timeout_s: float, deadline: float, started: float
    ) -> None:
        self._resp = resp
        self.status: int = resp.status
        self.reason: bytes = (resp.reason or "").encode("latin-1", "replace")
        self.headers: list[tuple[bytes, bytes]] = list(resp.raw_headers)
        self._read_timeout_s = read_timeout_s
        self._deadline = deadline
        self.started = started

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    raise OriginError(OriginFailure.TIMEOUT, "total timeout reading the body")
                async with asyncio.timeout(min(self._read_timeout_s, remaining)):
                    chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except TimeoutError as e:
            raise OriginError(OriginFailure.TIMEOUT, "body read timeout") from e
        except aiohttp.ClientPayloadError as e:
            raise OriginError(OriginFailure.PROTOCOL, f"bad body framing: {e}") from e
        except aiohttp.ClientError as e:
            raise OriginError(OriginFailure.RESET, f"body read failed: {e}") from e

    async def read_up_to(self, limit_bytes: int) -> tuple[bytes, bool]:
        """Read the body while it fits in `limit_bytes`. Returns (bytes read, complete)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size > limit_bytes:
                return b"".join(parts), False
        return b"".join(parts), True

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class AiohttpOriginPool:
    def __init__(self, cfg: OriginConfig) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.errors: dict[OriginFailure, int] = {k: 0 for k in OriginFailure}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.cfg.pool_connections,
            keepalive_timeout=self.cfg.keepalive_timeout_s,
            ttl_dns_cache=10,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.cfg.connect_timeout_s,
                sock_connect=self.cfg.connect_timeout_s,
                sock_read=None,
                ceil_threshold=1,
            ),
            read_bufsize=256 << 10,
            max_line_size=16384,
            max_field_size=16384,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        origin: URL,
        method: str,
        path_query: bytes,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None,
    ) -> AiohttpUpstreamResponse:
        """Send the request and wait for the final response head (1xx interim answers are
        consumed by the client library and never surface here)."""
        assert self._session is not None
        url = URL(str(origin).rstrip("/") + path_query.decode("ascii"), encoded=True)
        started = time.monotonic()
        deadline = started + self.cfg.total_timeout_s
        attempts = 2 if body is None and method in IDEMPOTENT else 1
        self.requests += 1
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self.cfg.first_byte_timeout_s):
                    resp = await self._session.request(
                        method,
                        url,
                        headers=headers,
                        data=body,
                        allow_redirects=False,
                        compress=None,
                        chunked=None,
                    )
                return AiohttpUpstreamResponse(resp, self.cfg.read_timeout_s, deadline, started)
            except TimeoutError as e:
                self.errors[OriginFailure.TIMEOUT] += 1
                raise OriginError(OriginFailure.TIMEOUT, "no response head in time") from e
            except aiohttp.ServerDisconnectedError as e:
                # A pooled keep-alive connection the origin had already closed: retry once,
                # only for idempotent requests without a body.
                if attempt + 1 < attempts:
                    continue
                self.errors[OriginFailure.RESET] += 1
                raise OriginError(
                    OriginFailure.RESET, str(e) or "origin closed the connection"
                ) from e
            except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionError, OSError) as e:
                if isinstance(e, aiohttp.ClientOSError) and attempt + 1 < attempts:
                    continue
                kind = (
                    OriginFailure.CONNECT
                    if isinstance(e, aiohttp.ClientConnectorError)
                    else OriginFailure.RESET
                )
                self.errors[kind] += 1
                raise OriginError(kind, str(e) or type(e).__name__) from e
            except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError, ValueError) as e:
                self.errors[OriginFailure.PROTOCOL] += 1
                raise OriginError(OriginFailure.PROTOCOL, str(e)) from e
        raise OriginError(OriginFailure.RESET, "retries exhausted")
