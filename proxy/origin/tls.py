"""https origins through one pooled aiohttp session per worker, configured for proxying: no
decompression, no cookie jar, no redirects, no automatic headers. Connect, first-byte, read-gap
and total deadlines as in `proxy.origin.h1`.

Response head limits (proxy.origin.head) as far as aiohttp's parser takes them: it refuses more
than `max_response_header_count` fields (`max_headers`) and a field or reason phrase over
`max_response_header_field_bytes` (`max_field_size`, `max_line_size`) while the head arrives
(its C parser, as used here; the pure-Python fallback counts whole lines, a few bytes stricter).
It has no limit on the fields' total, so `max_response_header_bytes` is checked once the head is
in (`_checked_response`); meanwhile count x field size bounds what it holds. Unlike
`proxy.origin.h1` it counts neither whitespace before a field value nor interim (1xx) answers,
so a head of such whitespace without end, or an endless stream of interim answers, ends at
`first_byte_timeout_s` rather than at a limit (holding nothing meanwhile).

Interim (1xx) heads: aiohttp's `ClientResponse.start` reads and drops them. The checked response
below wraps its connection's `read()` for the length of `start()` and tells the request's
`interim` listener (passed down in a context variable, since aiohttp builds the response object
itself) of each 1xx head but 101, which aiohttp treats as final and which is refused here.

aiohttp parses responses leniently (llhttp's lenient headers): it accepts control characters in
field values, which `proxy.origin.h1` refuses, so they are refused here once the head is in; it
replaces obs-fold with a space, as RFC 9112 §5.2 lets a proxy do, where `proxy.origin.h1` refuses
the response. Whatever is refused fails as `OriginError(PROTOCOL)` with its connection closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextvars import ContextVar
from itertools import chain
from typing import Any

import aiohttp
from aiohttp.connector import Connection
from aiohttp.http_exceptions import LineTooLong
from multidict import CIMultiDict
from yarl import URL

from proxy.config import OriginConfig
from proxy.origin.errors import IDEMPOTENT, OriginError, OriginFailure
from proxy.origin.head import ResponseHeadLimits, transfer_coding_refused
from proxy.origin.protocol import Interim

# RFC 9110 §5.5: of the control characters, a field value may hold HTAB only.
_CTL = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
# The listener for 1xx heads of the request this task is sending (see the module docstring).
_INTERIM: ContextVar[Interim | None] = ContextVar("edgeproxy_origin_interim", default=None)


def _telling_interim(protocol: Any, interim: Interim) -> Any:
    """`protocol.read` that tells `interim` of each interim head it returns."""
    read = protocol.read

    async def read_telling() -> Any:
        message, payload = await read()
        code = message.code
        if 100 <= code < 200 and code != 101:
            interim(
                code, (message.reason or "").encode("latin-1", "replace"), list(message.raw_headers)
            )
        return message, payload

    return read_telling


def _checked_response(limits: ResponseHeadLimits) -> type[aiohttp.ClientResponse]:
    """aiohttp's response, checked for what its parser let through: the fields' total, control
    characters in values. In `start()`, because that is where aiohttp hands the connection of a
    response received whole back to its pool: a refused one is closed before anyone reuses it.
    One join and one translate (~1.2 us for ten fields; a loop over them costs twice that)."""

    class HeadCheckedResponse(aiohttp.ClientResponse):
        async def start(self, connection: Connection) -> aiohttp.ClientResponse:
            protocol = connection.protocol
            interim = _INTERIM.get()
            if interim is None or protocol is None:
                await super().start(connection)
            else:
                protocol.read = _telling_interim(protocol, interim)  # type: ignore[method-assign]
                try:
                    await super().start(connection)
                finally:
                    del protocol.read  # back to the class's method
            if self.status == 101:
                if protocol is not None:
                    protocol.close()
                raise OriginError(OriginFailure.PROTOCOL, "origin switched protocols")
            raw = self.raw_headers
            flat = b"".join(chain.from_iterable(raw))  # names are tokens: no control characters
            try:
                if len(flat) > limits.header_bytes:
                    limits.check_fields(raw)  # raises, naming the first limit a field is over
                if len(flat.translate(None, _CTL)) != len(flat):
                    raise OriginError(
                        OriginFailure.PROTOCOL, "control character in a response field value"
                    )
                codings = ",".join(self.headers.getall("Transfer-Encoding", ["chunked"]))
                if codings.strip().lower() != "chunked":
                    raise transfer_coding_refused()
            except OriginError:
                if protocol is not None:
                    protocol.close()
                raise  # aiohttp closes this response and its connection
            return self

    return HeadCheckedResponse


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

    def body_if_whole(self, limit_bytes: int) -> bytes | None:
        return None  # aiohttp's stream is read through `read_up_to`

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class AiohttpOriginPool:
    def __init__(self, cfg: OriginConfig) -> None:
        self.cfg = cfg
        self.head_limits = ResponseHeadLimits.from_config(cfg)
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
            max_line_size=self.head_limits.field_bytes,  # for a response: its reason phrase
            max_field_size=self.head_limits.field_bytes,
            max_headers=self.head_limits.header_count,
            response_class=_checked_response(self.head_limits),
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
        interim: Interim | None = None,
        fields: bytes | None = None,  # `headers` rendered: this client reads `headers`
    ) -> AiohttpUpstreamResponse:
        """Send the request and wait for the final response head; 1xx interim heads go to
        `interim` as they arrive (never surfacing as the answer)."""
        assert self._session is not None
        url = URL(str(origin).rstrip("/") + path_query.decode("ascii"), encoded=True)
        started = time.monotonic()
        deadline = started + self.cfg.total_timeout_s
        attempts = 2 if body is None and method in IDEMPOTENT else 1
        self.requests += 1
        token = _INTERIM.set(interim)
        try:
            return await self._request(method, url, headers, body, attempts, deadline, started)
        finally:
            _INTERIM.reset(token)

    async def _request(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None,
        attempts: int,
        deadline: float,
        started: float,
    ) -> AiohttpUpstreamResponse:
        assert self._session is not None
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
            except OriginError as e:
                self.errors[e.kind] += 1
                raise
            except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError, ValueError) as e:
                self.errors[OriginFailure.PROTOCOL] += 1
                raise self._refusal(e) from e
        raise OriginError(OriginFailure.RESET, "retries exhausted")

    def _refusal(self, e: Exception) -> OriginError:
        """aiohttp's parse error as the same refusal `proxy.origin.h1` gives, where it is one
        of the head limits; aiohttp's own message otherwise."""
        limits = self.head_limits
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, LineTooLong):
                return limits.line_too_long()
            cause = cause.__cause__
        if isinstance(e, aiohttp.ClientResponseError) and "Too many headers" in e.message:
            return limits.too_many_fields()
        return OriginError(OriginFailure.PROTOCOL, str(e))
