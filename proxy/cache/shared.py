"""The shared cache tier: stored responses shared by the workers of a node and the nodes of a
fleet, behind each worker's memory tier (Redis on redis-py's connections, `shared_redis.py`;
Memcached through aiocache).

It is an optimisation and never a source of truth. Reads are bounded by
`cache.shared_tier_timeout_s` and any failure is a miss (counted, never raised into a request);
after a failure, reads are skipped for `shared_tier_retry_after_s` so a dead tier costs nothing.
Writes are fire-and-forget into a bounded queue drained by one task; a full queue drops (counted).
A purge drops the URL's queued stores by its own list of them (issue 19: walking the queue per
purged URL made a host purge O(n^2)); they leave the queue as empty places.

Keys (versioned: bump `KEY_VERSION` whenever `Record` changes):

- `ep1:p:<H(authority, path+query)>` holds either the `Record` of a response without Vary, or an
  `Index` naming the Vary fields and a generation.
- `ep1:v:<H(primary)>:<generation>:<H(fields, values)>` holds the `Record` of one variant. A purge
  deletes the primary key; a later store of any variant starts a new generation, so variants
  stored before the purge are never reachable again (they expire on their own TTL).
- `ep1:h:<H(host)>` (Redis only) lists what is stored for a host, so a host or prefix purge on
  any node deletes what every node stored (`purge_soon`); `ep1:h:…:t` holds the same members
  by expiry, so each store drops a few expired ones.

The record layout is msgpack (msgspec, `array_like`: field positions, no names), already
binary; a store writes the record and its indexes in one round trip.
A record is only returned when it proves it is the one asked for: same authority and
path+query, the request's values of the record's Vary fields equal the record's, and the body
hashes to the stored digest (its identity representation's, content codings removed, as the
store judged it: `digest.stored_digests`). Anything else is rejected and deleted. Site, `Via` and the parsed
Cache-Control are this node's to add (`Fetcher.adopt_shared`).

Only this module and `shared_redis.py` know the backends (aiocache pinned 0.12.3, redis-py);
the rest of the proxy sees `SharedTier`, and a backend change (valkey-glide) replaces a `Store`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from yarl import URL

from proxy.blocklist.digest import stored_digests
from proxy.cache.entry import Entry, PrimaryKey, VariantKey
from proxy.cache.shared_redis import KeyOf, Put, RedisOptions, RedisStore, VaryPut
from proxy.metrics import WorkerStats
from proxy.rfc.target import BadTarget, Target, canonical_target

log = logging.getLogger("edgeproxy.shared")

KEY_VERSION = "ep1"
SCHEMES = ("redis", "rediss", "memcached")

VariantOf = Callable[[tuple[str, ...]], VariantKey]


# -- what is stored ---------------------------------------------------------------------------


class Record(msgspec.Struct, tag="r", array_like=True):
    """Everything needed to rebuild an `Entry` (times are absolute wall-clock seconds)."""

    authority: str
    raw_path_query: bytes
    vary_fields: tuple[str, ...]
    variant: tuple[str, ...]
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    sha256: bytes
    request_time: float
    response_time: float
    corrected_initial_age: float
    lifetime: float
    stale_while_revalidate_s: float
    stale_if_error_s: float
    must_revalidate: bool
    no_cache: bool
    etag: str | None
    last_modified: float | None
    date: float | None
    upstream_cache_status: bytes
    stored_at: float


class Index(msgspec.Struct, tag="i", array_like=True):
    """Under a primary key whose responses vary: their field names and current generation."""

    fields: tuple[str, ...]
    generation: str
    until: float  # wall time the longest-lived variant expires


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record | Index).decode


def record_of(entry: Entry) -> Record:
    return Record(
        authority=entry.primary[0],
        raw_path_query=entry.primary[1],
        vary_fields=entry.vary_fields,
        variant=entry.variant,
        status=entry.status,
        reason=entry.reason,
        headers=entry.headers,
        body=entry.body,
        sha256=entry.sha256,
        request_time=entry.request_time,
        response_time=entry.response_time,
        corrected_initial_age=entry.corrected_initial_age,
        lifetime=entry.lifetime,
        stale_while_revalidate_s=entry.stale_while_revalidate_s,
        stale_if_error_s=entry.stale_if_error_s,
        must_revalidate=entry.must_revalidate,
        no_cache=entry.no_cache,
        etag=entry.etag,
        last_modified=entry.last_modified,
        date=entry.date,
        upstream_cache_status=entry.upstream_cache_status,
        stored_at=entry.stored_at,
    )


class Rejected(Exception):
    """A stored value that is not what was asked for, or not intact."""


def entry_of(
    rec: Record,
    primary: PrimaryKey,
    variant_of: VariantOf,
    *,
    verify_body: bool = True,
    target: Target | None = None,
) -> Entry:
    """Rebuild an Entry, checking everything the pipeline would otherwise trust. Raises Rejected.

    `verify_body=False` skips re-hashing the body, for a record whose envelope already proves
    that its body and digest are the ones written (the node tier's xxh3-128 seal: 18 µs of
    sha256 at 4 KiB saved per read). The shared tier crosses machines and trust boundaries:
    it keeps the default. `target`: the canonical target of `primary` when the caller holds
    it already (the memo's node-tier hits: admit parsed it), so it is not parsed again."""
    if (rec.authority, rec.raw_path_query) != primary:
        raise Rejected("primary key mismatch")
    if variant_of(rec.vary_fields) != rec.variant:
        raise Rejected("variant mismatch")
    if verify_body and rec.sha256 not in stored_digests(rec.body, _codings(rec)):
        raise Rejected("body does not match its digest")
    if target is None or (target.authority, target.raw_path_query) != primary:
        try:
            target = canonical_target(rec.raw_path_query, rec.authority.encode("ascii"))
        except (BadTarget, UnicodeEncodeError) as e:
            raise Rejected("target") from e
        if (target.authority, target.raw_path_query) != primary:
            raise Rejected("target is not canonical")
    return Entry(
        primary=primary,
        variant=rec.variant,
        target=target,
        status=rec.status,
        reason=rec.reason,
        headers=rec.headers,
        body=rec.body,
        sha256=rec.sha256,
        request_time=rec.request_time,
        response_time=rec.response_time,
        corrected_initial_age=rec.corrected_initial_age,
        lifetime=rec.lifetime,
        stale_while_revalidate_s=rec.stale_while_revalidate_s,
        stale_if_error_s=rec.stale_if_error_s,
        must_revalidate=rec.must_revalidate,
        no_cache=rec.no_cache,
        etag=rec.etag,
        last_modified=rec.last_modified,
        date=rec.date,
        vary_fields=rec.vary_fields,
        upstream_cache_status=rec.upstream_cache_status,
        stored_at=rec.stored_at,
    )


def _codings(rec: Record) -> list[bytes]:
    """The Content-Encoding the body was judged under (a 206 part is judged as received)."""
    if rec.status == 206:
        return []
    return [v for n, v in rec.headers if n.lower() == b"content-encoding"]


def ttl_s(entry: Entry, now: float, grace_s: float = 0.0) -> float:
    """Remaining freshness plus the longest stale window (at least 1 s)."""
    remaining = entry.lifetime - entry.age(now)
    stale = max(entry.stale_while_revalidate_s, entry.stale_if_error_s, grace_s)
    return max(1.0, remaining + stale)


def _h(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def primary_key(primary: PrimaryKey, prefix: str = KEY_VERSION) -> str:
    return f"{prefix}:p:{_h(primary[0].encode('utf-8') + b' ' + primary[1])}"


def host_key(host: str, prefix: str = KEY_VERSION) -> str:
    """The sorted set of what is stored for `host` (a canonical host name, no port)."""
    return f"{prefix}:h:{_h(host.encode('utf-8'))}"


def variant_key(
    primary: PrimaryKey,
    generation: str,
    fields: tuple[str, ...],
    variant: VariantKey,
    prefix: str = KEY_VERSION,
) -> str:
    p = _h(primary[0].encode("utf-8") + b" " + primary[1])
    return f"{prefix}:v:{p}:{generation}:{_h(_encode((fields, variant)))}"


# -- the backend seam -------------------------------------------------------------------------


class Store(Protocol):
    """Bytes in, bytes out, with a TTL. Raises on failure; SharedTier bounds the time."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, p: Put) -> None:
        """Store a record under `p.pkey`, or (`p.vary`) under its variant key with `p.pkey`
        holding the index (its generation kept when its fields are the same), and file it in
        its host's index where the store has one."""

    async def purge(self, hkey: str, path: str | None, key_of: KeyOf, step_timeout_s: float) -> int:
        """Delete what the host index `hkey` lists (under `path`); 0 without host indexes."""

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...


async def put_in_steps(store: KeyValueStore, p: Put) -> None:
    """`Store.put` for a store without scripts or sorted sets (Memcached): read the index,
    write the record, write the index; three round trips where Redis makes one
    (`shared_redis.PUT`), and no host index (host and prefix purges reach only the keys the
    purging worker holds)."""
    vary = p.vary
    if vary is None:
        await store.set(p.pkey, p.record, p.ttl_s)
        return
    generation, until = vary.generation, vary.until
    raw = await store.get(p.pkey)
    if raw is not None:
        try:
            old = _decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            old = None
        if isinstance(old, Index) and old.fields == vary.fields:
            generation, until = old.generation, max(old.until, until)
    await store.set(vary.head + generation + vary.tail, p.record, p.ttl_s)
    await store.set(p.pkey, _encode(Index(vary.fields, generation, until)), until - p.now)


class AiocacheStore:
    """aiocache 0.12.3 (Memcached): raw bytes (`NullSerializer(encoding=None)`), no aiocache
    timeout (its `wait_for` costs ~10 µs a call; SharedTier bounds time itself), whole seconds,
    and never `clear(namespace)` (it runs `KEYS`)."""

    def __init__(self, cache: Any, *, whole_seconds: bool) -> None:
        self.cache = cache
        self.whole_seconds = whole_seconds

    async def get(self, key: str) -> bytes | None:
        value = await self.cache.get(key)
        return value if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        # Memcached reads an exptime above 30 days as an absolute Unix time.
        ttl: float = min(math.ceil(ttl_s), 2_592_000) if self.whole_seconds else max(0.001, ttl_s)
        await self.cache.set(key, value, ttl=ttl)

    async def put(self, p: Put) -> None:
        await put_in_steps(self, p)

    async def purge(self, hkey: str, path: str | None, key_of: KeyOf, step_timeout_s: float) -> int:
        return 0  # Memcached has no index to find other nodes' keys by

    async def delete(self, key: str) -> None:
        await self.cache.delete(key)

    async def close(self) -> None:
        await self.cache.close()


def parse_url(url: str) -> URL:
    """Check a `cache.shared_tier_url`. Raises ValueError naming what is wrong."""
    u = URL(url)
    if u.scheme not in SCHEMES:
        raise ValueError(
            f"shared_tier_url must be redis://, rediss:// or memcached://, got {url!r}"
        )
    if not u.host:
        raise ValueError(f"shared_tier_url needs a host: {url!r}")
    if u.scheme != "memcached" and u.path not in ("", "/") and not u.path[1:].isdigit():
        raise ValueError(f"shared_tier_url path must be a database number: {url!r}")
    return u


def store_from_url(url: str, options: RedisOptions | None = None) -> Store:
    """The store for a `cache.shared_tier_url`: Redis on redis-py's connections
    (`shared_redis.RedisStore`), Memcached through aiocache."""
    u = parse_url(url)
    options = options or RedisOptions()
    if u.scheme != "memcached":
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as e:
            raise ValueError("redis:// needs redis-py (edgeproxy[shared])") from e
        return RedisStore(u, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from aiocache.backends.memcached import MemcachedCache
            from aiocache.serializers import NullSerializer
        except ImportError as e:
            raise ValueError(
                "memcached:// needs aiocache and aiomcache (aiocache[memcached])"
            ) from e
        cache: Any = MemcachedCache(
            serializer=NullSerializer(encoding=None),
            timeout=None,
            endpoint=u.host,
            port=u.port or 11211,
            pool_size=options.max_connections,
        )
    return AiocacheStore(cache, whole_seconds=True)


def redis_options(cache: Any) -> RedisOptions:
    """The `cache.shared_tier_*` options of a `CacheConfig` (the password read from its file,
    so it is not written in the config; the URL's userinfo works too)."""
    password = ""
    if cache.shared_tier_password_file:
        with open(cache.shared_tier_password_file, encoding="utf-8") as f:
            password = f.read().strip()
    return RedisOptions(
        max_connections=cache.shared_tier_max_connections,
        connect_timeout_s=cache.shared_tier_connect_timeout_s,
        tls_ca_file=cache.shared_tier_tls_ca_file,
        tls_cert_file=cache.shared_tier_tls_cert_file,
        tls_key_file=cache.shared_tier_tls_key_file,
        username=cache.shared_tier_username,
        password=password,
    )


# -- the tier ---------------------------------------------------------------------------------

_PUT, _DELETE, _PURGE = 0, 1, 2


class SharedTier:
    def __init__(
        self,
        store: Store,
        stats: WorkerStats,
        *,
        timeout_s: float = 0.05,
        write_timeout_s: float = 1.0,
        retry_after_s: float = 1.0,
        max_object_bytes: int = 1 << 20,
        queue_max_items: int = 256,
        queue_max_bytes: int = 32 << 20,
        stale_grace_s: float = 0.0,
        prefix: str = KEY_VERSION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.stats = stats
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s
        self.retry_after_s = retry_after_s
        self.max_object_bytes = max_object_bytes
        self.queue_max_items = queue_max_items
        self.queue_max_bytes = queue_max_bytes
        self.stale_grace_s = stale_grace_s
        self.prefix = prefix
        self.clock = clock
        self._ops: deque[list[Any]] = deque()  # [op, item]; a dropped store's item is None
        self._dropped = 0  # dropped stores still in _ops
        self._queued_bytes = 0
        self._pending: dict[PrimaryKey, list[list[Any]]] = {}  # queued stores, oldest first
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, stats: WorkerStats, options: RedisOptions | None = None, **kw: Any
    ) -> SharedTier:
        return cls(store_from_url(url, options), stats, **kw)

    @classmethod
    def from_config(cls, cache: Any, stats: WorkerStats) -> SharedTier:
        """From a `CacheConfig` whose `shared_tier_url` is set."""
        return cls.from_url(
            cache.shared_tier_url,
            stats,
            redis_options(cache),
            timeout_s=cache.shared_tier_timeout_s,
            write_timeout_s=cache.shared_tier_write_timeout_s,
            retry_after_s=cache.shared_tier_retry_after_s,
            max_object_bytes=cache.shared_tier_max_object_bytes,
            queue_max_items=cache.shared_tier_queue_max_items,
            queue_max_bytes=cache.shared_tier_queue_max_bytes,
            stale_grace_s=cache.max_stale_serve_s,
        )

    # -- read (in a request's fetch: bounded, never raises) -----------------------------------

    async def get(self, primary: PrimaryKey, variant_of: VariantOf) -> Entry | None:
        """The stored response for `primary` whose Vary values match this request's
        (`variant_of(fields)` computes them), or None on a miss, a timeout or any error."""
        stats = self.stats
        if self._closed or time.monotonic() < self._down_until:
            stats.shared_errors += 1
            return None
        pkey = primary_key(primary, self.prefix)
        key = pkey
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.store.get(pkey)
                value = _decode(raw) if raw is not None else None
                if isinstance(value, Index):
                    fields = value.fields
                    key = variant_key(
                        primary, value.generation, fields, variant_of(fields), self.prefix
                    )
                    raw = await self.store.get(key)
                    value = _decode(raw) if raw is not None else None
                    if isinstance(value, Record) and value.vary_fields != fields:
                        raise Rejected("variant stored under another Vary")
                if value is None:
                    stats.shared_misses += 1
                    return None
                if not isinstance(value, Record):
                    raise Rejected("index where a record belongs")
                entry = entry_of(value, primary, variant_of)
        except (msgspec.DecodeError, msgspec.ValidationError, Rejected) as e:
            log.warning("shared tier: rejected %s: %s", key, e)
            stats.shared_errors += 1
            self._enqueue_delete(key)
            return None
        except Exception as e:  # noqa: BLE001 - timeouts, connection errors: a miss
            self._failed("get", e)
            return None
        stats.shared_hits += 1
        return entry

    def _failed(self, op: str, e: BaseException) -> None:
        self.stats.shared_errors += 1
        self._down_until = time.monotonic() + self.retry_after_s
        log.debug("shared tier %s failed: %r", op, e)

    # -- write (fire-and-forget into a bounded queue) -----------------------------------------

    def put(self, entry: Entry) -> bool:
        """Queue `entry` for storing; False when it was not queued (too large, queue full)."""
        if self._closed or len(entry.body) > self.max_object_bytes:
            return False
        size = entry.size or len(entry.body)
        if self.queued >= self.queue_max_items or self._queued_bytes + size > self.queue_max_bytes:
            self.stats.shared_drops += 1
            return False
        self._queued_bytes += size
        cell = [_PUT, entry]
        self._pending.setdefault(entry.primary, []).append(cell)
        self._push(cell)
        return True

    def _dequeued(self, cell: list[Any]) -> None:
        entry: Entry = cell[1]
        self._queued_bytes -= entry.size or len(entry.body)
        stores = self._pending[entry.primary]
        del stores[0]  # the queue is FIFO: the oldest store of this primary is `cell`
        if not stores:
            del self._pending[entry.primary]

    def delete_soon(self, primary: PrimaryKey) -> None:
        """Queue the removal of every stored response for `primary` (operator purge, blocklist
        purge, unsafe-method invalidation). Queued stores for it are dropped; deletions are
        never dropped."""
        if self._closed:
            return
        for cell in self._pending.pop(primary, ()):
            entry: Entry = cell[1]
            self._queued_bytes -= entry.size or len(entry.body)
            cell[1] = None  # left in the queue as an empty place
            self._dropped += 1
        self._enqueue_delete(primary_key(primary, self.prefix))

    async def delete(self, primary: PrimaryKey) -> None:
        """delete_soon, then wait (bounded) until the queue has drained."""
        self.delete_soon(primary)
        await self.flush()

    def purge_soon(self, host: str, path: str | None = None) -> None:
        """Queue the removal of everything stored for `host` (or under its `path` prefix) by
        any node, found through the host index; queued stores it covers are dropped."""
        if self._closed:
            return
        under = None if path is None else path.rstrip("/") + "/"
        for primary in list(self._pending):
            cells = self._pending[primary]
            t = cells[0][1].target
            if t.host == host and (path is None or t.path == path or t.path.startswith(under)):
                for cell in self._pending.pop(primary):
                    self._queued_bytes -= cell[1].size or len(cell[1].body)
                    cell[1] = None
                    self._dropped += 1
        self._push([_PURGE, (host_key(host, self.prefix), path)])

    def _enqueue_delete(self, key: str) -> None:
        self._push([_DELETE, key])

    def _push(self, cell: list[Any]) -> None:
        self._ops.append(cell)
        if self._task is None:
            self._start()
        assert self._wake is not None and self._idle is not None
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        """Start the writer and open a first connection (bounded), so the first request's
        lookup does not pay for the connection handshake."""
        if self._task is None:
            self._start()
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.store.get(f"{self.prefix}:warm")
        except Exception as e:  # noqa: BLE001 - a tier that is down at start is a miss later
            self._failed("connect", e)

    def _start(self) -> None:
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.ensure_future(self._drain())

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued write has been attempted; False on timeout."""
        if self._task is None or self._idle is None:
            return True
        try:
            async with asyncio.timeout(timeout_s if timeout_s is not None else 5.0):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _drain(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            if not self._ops:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            cell = self._ops.popleft()
            op, item = cell
            if item is None:
                self._dropped -= 1
                continue
            if op == _PUT:
                self._dequeued(cell)
            try:
                if op == _PURGE:
                    hkey, path = item
                    await self.store.purge(hkey, path, self._key_of, self.write_timeout_s)
                else:
                    async with asyncio.timeout(self.write_timeout_s):
                        if op == _PUT:
                            await self._write(item)
                        else:
                            await self.store.delete(item)
            except Exception as e:  # noqa: BLE001 - counted; the tier is only an optimisation
                self._failed(("put", "delete", "purge")[op], e)
                continue
            if op == _PUT:
                self.stats.shared_stores += 1

    async def _write(self, entry: Entry) -> None:
        """One `Store.put`: one round trip on Redis, the indexes included."""
        now = self.clock()
        ttl = ttl_s(entry, now, self.stale_grace_s)
        primary = entry.primary
        fields = entry.vary_fields
        vary = None
        if fields:
            head, tail = variant_key(primary, "\0", fields, entry.variant, self.prefix).split("\0")
            vary = VaryPut(fields, head, tail, os.urandom(6).hex(), now + ttl)
        member = primary[1] + b" " + primary[0].encode("utf-8")
        p = Put(primary_key(primary, self.prefix), _encode(record_of(entry)), ttl, now,
                host_key(entry.target.host, self.prefix), member, vary)  # fmt: skip
        await self.store.put(p)

    def _key_of(self, member: bytes) -> str:
        """The primary key of a host index member ("path?query authority")."""
        raw_path_query, _, authority = member.partition(b" ")
        return primary_key((authority.decode("utf-8"), raw_path_query), self.prefix)

    # -- lifecycle ----------------------------------------------------------------------------

    async def close(self, flush_timeout_s: float = 1.0) -> None:
        """Attempt what is queued (bounded), then stop and close the connections."""
        if self._closed:
            return
        await self.flush(flush_timeout_s)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self.store.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            log.debug("shared tier close failed", exc_info=True)

    @property
    def queued(self) -> int:
        """Stores and deletions waiting (dropped stores excluded)."""
        return len(self._ops) - self._dropped
