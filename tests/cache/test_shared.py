"""The shared cache tier against a real redis-server on 127.0.0.1 (tests/redis_server.py): round
trips, TTLs, Vary variants and purge generations, and every way it fails without raising: a
silent server (timeout), a closed port, a full write queue, corrupt or tampered records."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
import redis

from proxy.cache.entry import Entry
from proxy.cache.shared import (
    Index,
    SharedTier,
    host_key,
    parse_url,
    primary_key,
    put_in_steps,
    record_of,
    variant_key,
)
from proxy.cache.shared_redis import Put
from proxy.metrics import WorkerStats
from proxy.rfc.target import canonical_target
from tests.cache.opcount import CountingStr, assert_flat, counted_chunks
from tests.redis_server import RedisServer

NOW = 1_700_000_000.0


def entry(
    path: str = "/a",
    body: bytes = b"hello",
    *,
    host: str = "example.com",
    vary: tuple[str, ...] = (),
    variant: tuple[str, ...] = (),
    lifetime: float = 60.0,
    swr: float = 0.0,
    age: float = 0.0,
) -> Entry:
    t = canonical_target(path.encode(), host.encode())
    e = Entry(
        primary=(t.authority, t.raw_path_query),
        variant=variant,
        target=t,
        status=200,
        reason=b"OK",
        headers=((b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"')),
        body=body,
        sha256=hashlib.sha256(body).digest(),
        request_time=NOW - 0.01,
        response_time=NOW,
        corrected_initial_age=age,
        lifetime=lifetime,
        stale_while_revalidate_s=swr,
        stale_if_error_s=0.0,
        must_revalidate=False,
        no_cache=False,
        etag='"v1"',
        last_modified=None,
        date=NOW,
        vary_fields=vary,
        upstream_cache_status=b"up; hit",
        stored_at=NOW,
    )
    e.render_head(100, b"1.1 edgeproxy")
    return e


def no_vary(fields: tuple[str, ...]) -> tuple[str, ...]:
    return ()


@pytest.fixture
def redis_port(redis_server: RedisServer) -> int:
    return redis_server.port


@pytest.fixture
def direct(redis_port: int) -> Iterator[redis.Redis]:
    r = redis.Redis(host="127.0.0.1", port=redis_port, protocol=2)
    yield r
    r.close()


@pytest.fixture
async def tier(redis_port: int) -> AsyncIterator[SharedTier]:
    t = SharedTier.from_url(
        f"redis://127.0.0.1:{redis_port}/0", WorkerStats([]), timeout_s=1.0, clock=lambda: NOW
    )
    yield t
    await t.close()


async def test_round_trip_rebuilds_the_entry(tier: SharedTier) -> None:
    e = entry()
    assert await tier.get(e.primary, no_vary) is None
    assert tier.put(e)
    assert await tier.flush()
    got = await tier.get(e.primary, no_vary)
    assert got is not None and got is not e
    for name in (
        "primary", "variant", "status", "reason", "headers", "body", "sha256", "request_time",
        "response_time", "corrected_initial_age", "lifetime", "etag", "date", "vary_fields",
        "upstream_cache_status", "stored_at",
    ):  # fmt: skip
        assert getattr(got, name) == getattr(e, name), name
    assert got.target == e.target and got.expires_at == e.expires_at
    s = tier.stats
    assert (s.shared_misses, s.shared_hits, s.shared_stores, s.shared_errors) == (1, 1, 1, 0)
    other = canonical_target(b"/a", b"other.example")
    assert await tier.get((other.authority, other.raw_path_query), no_vary) is None


async def test_ttl_is_remaining_freshness_plus_stale_window(
    tier: SharedTier, direct: redis.Redis
) -> None:
    tier.put(entry("/fresh", lifetime=60.0, swr=30.0, age=10.0))  # 50 s fresh + 30 s stale
    tier.put(entry("/stale", lifetime=5.0, age=100.0))  # long stale: at least 1 s
    await tier.flush()
    fresh = direct.pttl(primary_key(entry("/fresh").primary))
    stale = direct.pttl(primary_key(entry("/stale").primary))
    assert 79_000 < fresh <= 80_000
    assert 0 < stale <= 1_000


async def test_vary_variants_never_cross(tier: SharedTier, direct: redis.Redis) -> None:
    gz = entry("/v", b"gzip-body", vary=("accept-encoding",), variant=("gzip",))
    br = entry("/v", b"br-body", vary=("accept-encoding",), variant=("br",))
    tier.put(gz)
    tier.put(br)
    await tier.flush()

    def asks(value: str):  # type: ignore[no-untyped-def]
        return lambda fields: (value,) * len(fields)

    got_gz = await tier.get(gz.primary, asks("gzip"))
    got_br = await tier.get(gz.primary, asks("br"))
    assert got_gz is not None and got_gz.body == b"gzip-body"
    assert got_br is not None and got_br.body == b"br-body"
    assert await tier.get(gz.primary, asks("identity")) is None

    # A purge makes every stored variant unreachable, also after a new variant is stored.
    await tier.delete(gz.primary)
    assert await tier.get(gz.primary, asks("gzip")) is None
    tier.put(br)
    await tier.flush()
    assert await tier.get(gz.primary, asks("br")) is not None
    assert await tier.get(gz.primary, asks("gzip")) is None
    index = msgspec.msgpack.decode(direct.get(primary_key(gz.primary)), type=Index)
    assert index.fields == ("accept-encoding",)


async def test_a_variant_stored_under_the_wrong_variant_key_is_rejected(
    tier: SharedTier, direct: redis.Redis
) -> None:
    gz = entry("/w", b"gzip-body", vary=("accept-encoding",), variant=("gzip",))
    tier.put(gz)
    await tier.flush()
    index = msgspec.msgpack.decode(direct.get(primary_key(gz.primary)), type=Index)
    # Someone writes the gzip record where the br variant belongs.
    wrong = variant_key(gz.primary, index.generation, ("accept-encoding",), ("br",))
    direct.set(wrong, msgspec.msgpack.encode(record_of(gz)))
    assert await tier.get(gz.primary, lambda f: ("br",)) is None
    assert tier.stats.shared_errors == 1
    await tier.flush()
    assert direct.get(wrong) is None


@pytest.mark.parametrize("damage", ["garbage", "sha256", "primary", "truncated"])
async def test_corrupt_or_tampered_records_are_rejected_and_deleted(
    tier: SharedTier, direct: redis.Redis, damage: str
) -> None:
    e = entry("/c", b"the real body")
    key = primary_key(e.primary)
    rec = record_of(e)
    if damage == "garbage":
        data = b"\xc1 not msgpack"
    elif damage == "sha256":
        data = msgspec.msgpack.encode(msgspec.structs.replace(rec, body=b"another body"))
    elif damage == "primary":
        data = msgspec.msgpack.encode(record_of(entry("/other", b"the real body")))
    else:
        data = msgspec.msgpack.encode(rec)[:-5]
    direct.set(key, data)
    assert await tier.get(e.primary, no_vary) is None
    assert tier.stats.shared_errors == 1 and tier.stats.shared_hits == 0
    await tier.flush()
    assert direct.get(key) is None


async def test_silent_server_times_out_then_lookups_skip_it() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stats = WorkerStats([])
    t = SharedTier.from_url(
        f"redis://127.0.0.1:{port}", stats, timeout_s=0.05, write_timeout_s=0.05
    )
    try:
        started = time.monotonic()
        assert await t.get(entry().primary, no_vary) is None
        assert time.monotonic() - started < 1.0
        assert stats.shared_errors == 1 and stats.shared_misses == 0
        assert await t.get(entry().primary, no_vary) is None  # skipped: the tier is down
        assert stats.shared_errors == 2 and len(accepted) == 1
        assert t.put(entry())
        assert await t.flush(2.0)
        assert stats.shared_errors == 3 and stats.shared_stores == 0
    finally:
        await t.close(0.1)
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_down_server_is_a_counted_miss() -> None:
    from tests.integration.conftest import free_port

    stats = WorkerStats([])
    t = SharedTier.from_url(f"redis://127.0.0.1:{free_port()}", stats, retry_after_s=0.0)
    try:
        for _ in range(3):
            assert await t.get(entry().primary, no_vary) is None
        assert stats.shared_errors == 3 and stats.shared_misses == 0
        t.put(entry())
        t.delete_soon(entry("/b").primary)
        assert await t.flush(2.0)
        assert stats.shared_errors == 5 and stats.shared_stores == 0
    finally:
        await t.close(0.1)


async def test_full_queue_drops_and_counts(redis_port: int) -> None:
    stats = WorkerStats([])
    t = SharedTier.from_url(f"redis://127.0.0.1:{redis_port}", stats, queue_max_items=2)
    try:
        queued = [t.put(entry(f"/q{i}")) for i in range(5)]  # the writer has not run yet
        assert queued == [True, True, False, False, False]
        assert stats.shared_drops == 3
        assert await t.flush()
        assert stats.shared_stores == 2
        assert not t.put(entry("/big", b"x" * (t.max_object_bytes + 1)))  # too large: not queued
        assert stats.shared_drops == 3
    finally:
        await t.close()


async def test_queue_bounded_in_bytes(redis_port: int) -> None:
    stats = WorkerStats([])
    t = SharedTier.from_url(f"redis://127.0.0.1:{redis_port}", stats, queue_max_bytes=3000)
    try:
        queued = [t.put(entry(f"/b{i}", b"y" * 1000)) for i in range(4)]
        assert queued == [True, True, False, False] and stats.shared_drops == 2
    finally:
        await t.close()


async def test_delete_soon_drops_queued_stores_of_that_url(tier: SharedTier) -> None:
    e = entry("/gone")
    tier.put(e)
    tier.put(entry("/kept"))
    tier.delete_soon(e.primary)
    await tier.flush()
    assert await tier.get(e.primary, no_vary) is None
    assert await tier.get(entry("/kept").primary, no_vary) is not None
    assert tier.stats.shared_stores == 1


def test_url_checks() -> None:
    assert parse_url("redis://127.0.0.1:6379/2").port == 6379
    assert parse_url("memcached://cache.internal:11211").host == "cache.internal"
    for bad in ("http://127.0.0.1/", "redis:///0", "redis://127.0.0.1/x"):
        with pytest.raises(ValueError):
            parse_url(bad)


async def test_start_opens_a_connection_or_counts_the_failure(redis_port: int) -> None:
    from tests.integration.conftest import free_port

    up = SharedTier.from_url(f"redis://127.0.0.1:{redis_port}", WorkerStats([]))
    down = SharedTier.from_url(f"redis://127.0.0.1:{free_port()}", WorkerStats([]))
    try:
        await up.start()
        await down.start()
        assert up.stats.shared_errors == 0 and down.stats.shared_errors == 1
        assert await down.get(entry().primary, no_vary) is None  # skipped while down
        assert down.stats.shared_errors == 2
    finally:
        await up.close()
        await down.close()


# -- issue 19: dropping queued stores costs the URL's own stores, not the queue's length ----


class DictStore:
    """A `Store` in a dict: the queue's bookkeeping without a server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.data[key] = value

    async def put(self, p: Put) -> None:
        await put_in_steps(self, p)

    async def purge(self, *args: object) -> int:
        return 0

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def close(self) -> None:
        pass


async def test_issue19_purging_urls_with_queued_stores_costs_the_same_per_url() -> None:
    """A host purge calls delete_soon per URL; each one used to walk the whole queue (stores
    and the deletions queued before it) to drop that URL's stores: O(n^2) for n URLs."""
    stats = WorkerStats([])
    t = SharedTier(DictStore(), stats, queue_max_items=1 << 20, queue_max_bytes=1 << 40)
    CountingStr.limit = 1 << 62  # uncounted set-up (the class starts at 0: run alone, it failed)
    base = entry("/p")
    entries = [
        dataclasses.replace(base, primary=(CountingStr(base.primary[0]), b"/p/%d" % i))
        for i in range(20_000)
    ]
    assert all(t.put(e) for e in entries)
    counts = counted_chunks(len(entries), lambda i: t.delete_soon(entries[i].primary), 2_000)
    assert_flat(counts, "delete_soon with stores queued")
    assert t.queued == 20_000  # the deletions; the dropped stores no longer count
    assert await t.flush()
    assert stats.shared_stores == 0 and t.store.data == {}  # type: ignore[attr-defined]
    await t.close()


async def test_dropped_stores_free_their_place_in_the_queue() -> None:
    stats = WorkerStats([])
    store = DictStore()
    t = SharedTier(store, stats, queue_max_items=3)
    a, b = entry("/a", b"1"), entry("/b")
    assert t.put(a) and t.put(b) and t.put(entry("/a", b"2"))
    assert not t.put(entry("/c"))  # full
    t.delete_soon(a.primary)  # both stores of /a dropped, one deletion queued
    assert t.queued == 2
    assert t.put(entry("/c"))
    assert t.queued == 3 and not t.put(entry("/d"))
    assert await t.flush()
    assert stats.shared_stores == 2 and stats.shared_drops == 2
    assert await t.get(a.primary, no_vary) is None
    assert await t.get(b.primary, no_vary) is not None
    assert await t.get(entry("/c").primary, no_vary) is not None
    await t.close()


# -- issue 13: host and prefix purges reach what any node stored (the host index) -----------


async def test_host_and_prefix_purges_reach_what_another_node_stored(
    redis_port: int, direct: redis.Redis
) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    a = SharedTier.from_url(url, WorkerStats([]), timeout_s=1.0, clock=lambda: NOW)
    b = SharedTier.from_url(url, WorkerStats([]), timeout_s=1.0, clock=lambda: NOW)
    # Lifetimes against the paths' order: an index scored by expiry would list them out of
    # order, and a lexical range over it would miss some (it did, once).
    stored = {
        "/p": entry("/p", lifetime=900),
        "/p/1": entry("/p/1", lifetime=100),
        "/p/2?x=1": entry("/p/2?x=1", lifetime=50),
        "/p?q": entry("/p?q", lifetime=800),
        "/pa": entry("/pa", lifetime=20),
        "/q": entry("/q", lifetime=10),
        "/p/v": entry("/p/v", vary=("accept-encoding",), variant=("gzip",), lifetime=70),
        "other": entry("/p/1", host="other.example"),
    }
    try:
        for e in stored.values():
            assert a.put(e)
        assert await a.flush() and a.stats.shared_stores == len(stored)

        async def left() -> set[str]:
            found = set()
            for name, e in stored.items():
                if await b.get(e.primary, lambda f: ("gzip",) * len(f)) is not None:
                    found.add(name)
            return found

        assert await left() == set(stored)
        b.purge_soon("example.com", "/p")  # b never held any of them
        assert await b.flush()
        assert await left() == {"/pa", "/q", "other"}
        b.purge_soon("example.com")
        assert await b.flush()
        assert await left() == {"other"}
        assert b.stats.shared_errors == 0
        assert direct.zcard(host_key("example.com")) == 0
        assert direct.zcard(host_key("other.example")) == 1
    finally:
        await a.close()
        await b.close()


async def test_a_purge_drops_queued_stores_it_covers(tier: SharedTier) -> None:
    tier.put(entry("/d/1"))
    tier.put(entry("/e/1"))
    tier.purge_soon("example.com", "/d")
    assert tier.queued == 2  # the /e store and the purge
    assert await tier.flush()
    assert await tier.get(entry("/d/1").primary, no_vary) is None
    assert await tier.get(entry("/e/1").primary, no_vary) is not None


async def test_expired_members_leave_the_host_index(redis_port: int, direct: redis.Redis) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    now = [NOW]
    t = SharedTier.from_url(url, WorkerStats([]), timeout_s=1.0, clock=lambda: now[0])
    try:
        for i in range(3):
            t.put(entry(f"/old/{i}", lifetime=10))
        assert await t.flush()
        assert direct.zcard(host_key("example.com")) == 3
        now[0] = NOW + 100  # every /old one has expired by the index's clock
        t.put(entry("/new", lifetime=1000, age=-100))
        assert await t.flush()
        assert direct.zrange(host_key("example.com"), 0, -1) == [b"/new example.com"]
        assert direct.zcard(host_key("example.com") + ":t") == 1
    finally:
        await t.close()


async def test_a_connection_that_died_with_a_restarted_redis_is_replaced(
    redis_server: RedisServer,
) -> None:
    """After Redis restarts, the worker's idle connection is dead: the lookup goes once more on
    a new connection and is an ordinary miss, not an error that skips the tier for a while."""
    stats = WorkerStats([])
    t = SharedTier.from_url(redis_server.url, stats, timeout_s=2.0, clock=lambda: NOW)
    try:
        e = entry("/r")
        assert t.put(e) and await t.flush()
        assert await t.get(e.primary, no_vary) is not None  # leaves an idle connection
        redis_server.restart(empty=True)
        assert await t.get(e.primary, no_vary) is None
        assert (stats.shared_misses, stats.shared_errors) == (1, 0)
        assert t.put(e) and await t.flush()
        assert await t.get(e.primary, no_vary) is not None
        assert stats.shared_errors == 0
        redis_server.kill()  # gone for good: the retry fails too, and it is one counted error
        assert await t.get(e.primary, no_vary) is None
        assert stats.shared_errors == 1
    finally:
        await t.close(0.1)
