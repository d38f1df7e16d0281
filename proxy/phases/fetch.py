"""fetch: the one (coalesced) origin request per key.

fetch builds the one upstream request from the canonical target (never the raw bytes):
hop-by-hop fields and URL/method override fields dropped, `Via` added, `X-Forwarded-For`
appended, `Forwarded` replaced, `Max-Forwards` decremented; with a stored entry, a conditional
request with its validators. What the origin answers goes to upstream_response
(proxy/phases/upstream_response.py), what is kept to store (proxy/phases/store.py), what is
streamed unstored to deliver (proxy/phases/deliver.py); `Fetcher` composes the three.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from multidict import CIMultiDict

from proxy.blocklist.digest import DecodeLimits
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, RequestCtx, RequestFields
from proxy.metrics import WorkerStats
from proxy.origin import Origin, OriginError, UpstreamResponse
from proxy.phases.deliver import StreamDelivery
from proxy.phases.store import StorePhase
from proxy.phases.upstream_response import UpstreamResponsePhase
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.storable import NoStoreReason
from proxy.rfc.vary import vary_key

# Never forwarded upstream: they would let a client change what the origin serves apart from
# what the edge checked (the canonical-target rule), or they are ours to set.
DROP_UPSTREAM = frozenset(
    {
        b"host",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-for",
        b"forwarded",  # RFC 7239: replaced by ours, a client's for=/host=/proto= are unchecked
        b"max-forwards",  # RFC 9110 §7.6.2: decremented below, never passed on as received
        b"via",
        b"content-length",
        b"expect",
    }
)
CONDITIONAL = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)


class Fetcher(UpstreamResponsePhase, StorePhase, StreamDelivery):
    """fetch, composed with upstream_response, store and the streamed part of deliver: one
    object per worker holding what they share (config, cache facade, counters, the snapshot
    getter, the origin)."""

    def __init__(
        self,
        cfg: Config,
        origin: Origin,
        cache: TieredCache,
        stats: WorkerStats,
        via: bytes,
        blocklist: Callable[[], Snapshot] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.origin = origin
        self.cache = cache
        self.stats = stats
        self.via = via
        self.via_str = via.decode()
        self.blocklist: Callable[[], Snapshot] = blocklist or (lambda: Snapshot.compile([], 0, 0.0))
        self.decode_limits = DecodeLimits.from_config(cfg.blocklist)
        self.clock = clock

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def variant(fields: tuple[str, ...], req: RequestFields) -> tuple[str, ...]:
        return vary_key(fields, req.values)

    # -- fetch --------------------------------------------------------------------------------

    def upstream_headers(self, ctx: RequestCtx, *, for_cache: bool) -> CIMultiDict[str]:
        site = ctx.site
        target = ctx.target
        assert site is not None and target is not None
        out: CIMultiDict[str] = CIMultiDict()
        xff = []
        via = []
        max_forwards: list[bytes] = []
        for name, value in strip_hop_by_hop(ctx.request.headers):
            n = name.lower()
            if n in DROP_UPSTREAM:
                if n == b"x-forwarded-for":
                    xff.append(value.decode("latin-1"))
                elif n == b"via":
                    via.append(value.decode("latin-1"))
                elif n == b"max-forwards":
                    max_forwards.append(value.strip())
                continue
            if for_cache and n in CONDITIONAL:
                continue
            out.add(name.decode("latin-1"), value.decode("latin-1"))
        out["Host"] = target.authority if site.forward_host else site.origin_host
        via.append(self.via_str)
        out["Via"] = ", ".join(via)
        xff.append(ctx.request.client_ip)
        out["X-Forwarded-For"] = ", ".join(xff)
        out["X-Forwarded-Proto"] = target.scheme
        out["X-Forwarded-Host"] = target.authority
        out["Forwarded"] = forwarded_element(ctx.request.client_ip, target.authority, target.scheme)
        if len(max_forwards) == 1 and max_forwards[0].isdigit():
            out["Max-Forwards"] = str(max(0, int(max_forwards[0]) - 1))
        if ctx.request.has_body and ctx.request.content_length is not None and not for_cache:
            out["Content-Length"] = str(ctx.request.content_length)
        return out

    async def _send(
        self, ctx: RequestCtx, method: str, headers: CIMultiDict[str], body: bool
    ) -> UpstreamResponse:
        site = ctx.site
        target = ctx.target
        assert site is not None and target is not None
        started = time.monotonic()
        stream = _body(ctx) if body else None
        up = await self.origin.request(site.origin, method, target.raw_path_query, headers, stream)
        elapsed = time.monotonic() - started
        ctx.origin_s += elapsed
        stats = self.stats
        stats.observe_origin(site.index, elapsed)
        stats.origin_responses[site.index][min(up.status // 100, 5) - 1] += 1
        return up

    async def fetch_for_cache(
        self, ctx: RequestCtx, entry: Entry | None, *, background: bool = False
    ) -> FetchOutcome:
        """One GET for the cache (HEAD misses fill the cache too). With a stored entry, a
        conditional request with its validators (RFC 9111 §4.3.1)."""
        headers = self.upstream_headers(ctx, for_cache=True)
        if entry is not None:
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            lm = entry.header(b"last-modified")
            if lm:
                headers["If-Modified-Since"] = lm.decode("latin-1")
        request_time = self.clock()
        try:
            up = await self._send(ctx, "GET", headers, body=False)
        except OriginError as e:
            return FetchOutcome(error=e, stale_candidate=entry)
        response_time = self.clock()
        try:
            return await self.upstream_response(ctx, up, entry, request_time, response_time)
        except OriginError as e:
            up.close()
            return FetchOutcome(error=e, stale_candidate=entry)
        except BaseException:
            up.close()
            raise

    async def fetch_pass(self, ctx: RequestCtx) -> FetchOutcome:
        headers = self.upstream_headers(ctx, for_cache=False)
        try:
            up = await self._send(ctx, ctx.method, headers, body=ctx.request.has_body)
        except OriginError as e:
            return FetchOutcome(error=e)
        hdrs = strip_hop_by_hop(up.headers)
        return FetchOutcome(
            upstream=up,
            headers=hdrs,
            fwd_status=up.status,
            not_stored=NoStoreReason.BYPASS,
            method=ctx.method,
        )

    # -- upstream_response, store and streamed delivery live in their phase modules -----------


def forwarded_element(client_ip: str, authority: str, scheme: str) -> str:
    """RFC 7239 §4: this hop's element; IPv6 addresses are bracketed and quoted (§6)."""
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    host = authority if _TOKEN_CHARS.issuperset(authority) else f'"{authority}"'
    return f"for={node};host={host};proto={scheme}"


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


async def _body(ctx: RequestCtx) -> AsyncIterator[bytes]:
    async for chunk in ctx.request.body:
        yield chunk
    await asyncio.sleep(0)
