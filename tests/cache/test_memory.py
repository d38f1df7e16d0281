"""The byte-bounded memory tier (issue 2, item 5): byte bound, LRU order, Vary variants and
the host / digest / primary indexes that purges use."""

from __future__ import annotations

import hashlib

from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.rfc.target import canonical_target


def entry(host: str, path: str, body: bytes, variant: tuple[str, ...] = (), vary=()) -> Entry:  # type: ignore[no-untyped-def]
    t = canonical_target(path.encode(), host.encode())
    e = Entry(
        primary=(t.authority, t.raw_path_query),
        variant=variant,
        target=t,
        status=200,
        reason=b"OK",
        headers=((b"Cache-Control", b"max-age=60"),),
        body=body,
        sha256=hashlib.sha256(body).digest(),
        request_time=0.0,
        response_time=0.0,
        corrected_initial_age=0.0,
        lifetime=60.0,
        stale_while_revalidate_s=0.0,
        stale_if_error_s=0.0,
        must_revalidate=False,
        no_cache=False,
        etag=None,
        last_modified=None,
        date=None,
        vary_fields=tuple(vary),
    )
    e.render_head(100, b"1.1 edgeproxy")
    return e


def test_byte_bound_respected_under_many_stores() -> None:
    tier = MemoryTier(max_bytes=50_000, max_object_bytes=10_000)
    for i in range(500):
        assert tier.put(entry("a.example", f"/{i}", bytes(1000)))
        assert tier.stats().bytes <= 50_000
    s = tier.stats()
    assert 0 < s.objects < 50 and s.evictions == 500 - s.objects


def test_the_byte_bound_holds_for_entries_of_long_urls() -> None:
    """An entry's size counts its key (the target, cache key and match keys hold about four
    copies of the path): a tier of entries for 8,000-byte targets holds, measured by
    tracemalloc, no more than one of the same bound for short targets. It counted heads and
    bodies only, and entries of long URLs held up to 27 times what it counted."""
    import gc
    import tracemalloc

    from proxy.blocklist import keys
    from proxy.rfc.target import clear_memo

    bound = 2 << 20
    held = {}
    for path_bytes in (10, 8000):
        tier = MemoryTier(max_bytes=bound, max_object_bytes=bound)
        gc.collect()
        tracemalloc.start()
        for i in range(2000):
            tier.put(entry("a.example", f"/{i}/" + "p" * path_bytes, bytes(1000)))
        clear_memo()  # what the request path's memos hold is theirs, not the tier's
        keys._match_keys_memo.cache_clear()
        gc.collect()
        held[path_bytes] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert tier.stats().bytes <= bound
        del tier
    assert held[8000] < 1.5 * held[10], held


def test_too_large_objects_refused() -> None:
    tier = MemoryTier(max_bytes=50_000, max_object_bytes=2_000)
    assert not tier.put(entry("a.example", "/big", bytes(5_000)))
    assert tier.stats().objects == 0


def test_lru_evicts_least_recently_used() -> None:
    e = [entry("a.example", f"/{i}", bytes(1000)) for i in range(4)]
    tier = MemoryTier(max_bytes=3 * e[0].size + 10, max_object_bytes=10_000)
    for x in e[:3]:
        tier.put(x)
    assert tier.get(e[0].primary, ()) is e[0]  # /0 becomes most recent
    tier.put(e[3])
    assert tier.get(e[1].primary, ()) is None  # /1 was least recent
    assert tier.get(e[0].primary, ()) is e[0] and tier.get(e[3].primary, ()) is e[3]


def test_purge_by_host_digest_and_primary_keeps_indexes_true() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    a1 = entry("a.example", "/1", b"same")
    a2 = entry("a.example", "/2", b"other")
    b1 = entry("b.example", "/1", b"same")
    for x in (a1, a2, b1):
        tier.put(x)
    assert sorted(tier.hosts()) == ["a.example", "b.example"]
    assert tier.purge_digest(hashlib.sha256(b"same").digest()) == 2
    assert tier.get(a1.primary, ()) is None and tier.get(b1.primary, ()) is None
    assert tier.hosts() == ["a.example"]
    assert tier.purge_host("a.example") == 1
    assert tier.stats().objects == 0 and tier.digests() == set()
    assert tier.stats().evictions == 0 and tier.stats().purged == 3


def test_vary_variants_stored_apart_and_purged_together_rfc9111_s4_1() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    g = entry("a.example", "/v", b"g", ("gzip",), vary=("accept-encoding",))
    i = entry("a.example", "/v", b"i", ("identity",), vary=("accept-encoding",))
    tier.put(g)
    tier.put(i)
    assert tier.vary_fields(g.primary) == ("accept-encoding",)
    assert tier.get(g.primary, ("gzip",)) is g and tier.get(g.primary, ("identity",)) is i
    assert tier.purge_primary(g.primary) == 2
    assert tier.vary_fields(g.primary) is None


def test_vary_change_drops_old_variants_rfc9111_s4_1() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    tier.put(entry("a.example", "/v", b"g", ("gzip",), vary=("accept-encoding",)))
    plain = entry("a.example", "/v", b"p")
    tier.put(plain)
    assert tier.vary_fields(plain.primary) == ()
    assert tier.get(plain.primary, ()) is plain and tier.stats().objects == 1


def test_replacing_an_entry_is_not_an_eviction() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    tier.put(entry("a.example", "/r", b"1"))
    new = entry("a.example", "/r", b"2")
    tier.put(new)
    assert tier.get(new.primary, ()) is new and tier.stats().evictions == 0
    assert tier.digests() == {new.sha256}


def test_a_touch_refreshes_an_entry_and_a_listing_does_not() -> None:
    """Issue 18 (the LRU without cachetools): a hit's touch makes the entry most recent; a
    purge's listing (`with_url_key`, `entries`) leaves the order as it was."""
    e = [entry("a.example", f"/{i}", bytes(1000)) for i in range(5)]
    tier = MemoryTier(max_bytes=3 * e[0].size + 10, max_object_bytes=10_000)
    for x in e[:3]:
        tier.put(x)
    keys = e[0].keys
    assert keys is not None
    assert tier.with_url_key(keys.url_key) == [e[0]] and len(tier.entries()) == 3
    tier.touch(e[1])
    tier.put(e[3])  # evicts /0: listed, never touched
    assert tier.get(e[0].primary, ()) is None
    tier.put(e[4])  # evicts /2; /1 was touched after it was stored
    assert tier.get(e[2].primary, ()) is None and tier.get(e[1].primary, ()) is e[1]
    assert tier.stats().evictions == 2 and tier.stats().objects == 3


def test_a_removal_gives_back_the_size_the_entry_was_admitted_with() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    a = entry("a.example", "/a", bytes(1000))
    admitted = a.size
    tier.put(a)
    a.size = 1  # whatever happens to the entry later, the tier's byte count stays true
    assert tier.stats().bytes == admitted
    assert tier.remove(a) == 1 and tier.stats().bytes == 0
