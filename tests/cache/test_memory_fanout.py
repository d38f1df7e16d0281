"""Issue 19: the memory tier's indexes cost O(1) per insert and removal whatever their fan-out
(many URLs with one body, many Vary variants of one URL, many query strings under one blocklist
url key, many objects of one host), and stay exact through removals, evictions and purges.

The fills count operations, not time: the keys hold a `str` that counts its `__hash__` and
`__eq__` calls, i.e. every probe and comparison the tier and its indexes make on a key. An index
that rescans or rebuilds the members sharing an index key (the tuples of issue 19) compares the
new key with each of them, so its last 10k inserts cost n/10k times what its first 10k did; an
O(1) index costs the same for both. A generous budget per chunk keeps a quadratic index from
running for hours before it fails.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.blocklist.keys import match_keys
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.rfc.target import canonical_target
from tests.cache.opcount import BUDGET_PER_OP, CountingStr, assert_flat, counted_chunks


def entry(
    primary: tuple[str, bytes],
    body: bytes,
    variant: tuple[str, ...] = (),
    vary: tuple[str, ...] = (),
    query: str | None = None,
    path: str = "/p",
) -> Entry:
    target = canonical_target(b"/p", b"a.example")
    e = Entry(
        primary=primary,
        variant=variant,
        target=target,
        status=200,
        reason=b"OK",
        headers=(),
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
        vary_fields=vary,
        keys=match_keys("a.example", path, query),
    )
    e.size = len(body) + 100
    return e


BODY = b"x" * 4096  # one placeholder body, as in the issue


def same_body(n: int) -> Iterator[Entry]:
    """n URLs (each with its own authority object, so comparing keys reaches the counter)."""
    for i in range(n):
        yield entry((CountingStr("a.example"), b"/p/%d" % i), BODY)


def variants(n: int) -> Iterator[Entry]:
    primary = (CountingStr("a.example"), b"/p")
    for i in range(n):
        yield entry(primary, BODY, (CountingStr(f"v{i}"),), ("x-variant",))


def query_strings(n: int) -> Iterator[Entry]:
    """n query strings of /p: one blocklist url key ("a.example/p"), n primary keys."""
    for i in range(n):
        q = f"id={i}"
        yield entry((CountingStr("a.example"), f"/p?{q}".encode()), BODY, query=q)


def one_host(n: int) -> Iterator[Entry]:
    """n objects of one host, each with its own body and blocklist url key."""
    for i in range(n):
        yield entry((CountingStr("a.example"), b"/p/%d" % i), b"%d" % i, path=f"/p/{i}")


def fill_then_remove(entries: list[Entry]) -> tuple[list[int], list[int], MemoryTier]:
    tier = MemoryTier(max_bytes=1 << 40, max_object_bytes=1 << 20)
    puts = counted_chunks(len(entries), lambda i: tier.put(entries[i]))
    assert tier.stats().objects == len(entries) and tier.stats().evictions == 0
    removals = counted_chunks(len(entries), lambda i: tier.remove(entries[i]))
    assert tier.stats().objects == 0 and tier.stats().purged == len(entries)
    return puts, removals, tier


def test_issue19_100k_urls_with_one_body_cost_the_same_per_insert() -> None:
    puts, removals, tier = fill_then_remove(list(same_body(100_000)))
    assert_flat(puts, "insert, one digest")
    assert_flat(removals, "removal, one digest")
    assert all(n == (0, 0) for n in tier.index_sizes().values())


def test_issue19_20k_vary_variants_of_one_url_cost_the_same_per_insert() -> None:
    puts, removals, tier = fill_then_remove(list(variants(20_000)))
    assert_flat(puts, "insert, one primary key")
    assert_flat(removals, "removal, one primary key")
    assert all(n == (0, 0) for n in tier.index_sizes().values())


def test_issue19_many_query_strings_under_one_url_key_cost_the_same_per_insert() -> None:
    entries = list(query_strings(30_000))
    puts, removals, tier = fill_then_remove(entries)
    assert_flat(puts, "insert, one url key")
    assert_flat(removals, "removal, one url key")
    assert all(n == (0, 0) for n in tier.index_sizes().values())


def test_issue19_100k_objects_of_one_host_cost_the_same_per_insert() -> None:
    puts, removals, tier = fill_then_remove(list(one_host(100_000)))
    assert_flat(puts, "insert, one host")
    assert_flat(removals, "removal, one host")
    assert all(n == (0, 0) for n in tier.index_sizes().values())


def test_issue19_purging_a_crowded_index_key_costs_its_members_only() -> None:
    """Purging a digest, a primary key or a host does work in proportion to what it purges,
    and leaves the indexes empty."""
    cases: list[tuple[Callable[[int], Iterator[Entry]], Callable[[MemoryTier], int]]] = [
        (same_body, lambda t: t.purge_digest(hashlib.sha256(BODY).digest())),
        (variants, lambda t: t.purge_primary(t.entries()[0].primary)),
        (one_host, lambda t: t.purge_host("a.example")),
    ]
    for make, purge in cases:
        costs = []
        for entries in (list(make(2_000)), list(make(20_000))):
            tier = MemoryTier(max_bytes=1 << 40, max_object_bytes=1 << 20)
            for e in entries:
                tier.put(e)
            before = CountingStr.ops
            CountingStr.limit = before + BUDGET_PER_OP * len(entries)
            assert purge(tier) == len(entries)
            costs.append((CountingStr.ops - before) / len(entries))
            CountingStr.limit = 1 << 62
            assert tier.stats().objects == 0
            assert all(n == (0, 0) for n in tier.index_sizes().values())
        assert costs[1] <= costs[0] * 1.25 + 1, costs


def test_issue19_evictions_keep_a_crowded_index_exact() -> None:
    """A tier far smaller than the fill: every eviction leaves the indexes true."""
    entries = list(same_body(5_000))
    tier = MemoryTier(max_bytes=200 * entries[0].size, max_object_bytes=1 << 20)
    for e in entries:
        tier.put(e)
    assert tier.stats().objects == 200 and tier.stats().evictions == 4_800
    sizes = tier.index_sizes()
    assert sizes["digest"] == (1, 200) and sizes["host"] == (1, 200)
    # Items without Vary values are not filed by primary (issue 18): found as (primary, ()).
    assert sizes["primary"] == (0, 0) and sizes["url_key"] == (1, 200)
    assert sizes["vary"] == (200, 200)
    assert tier.purge_digest(entries[0].sha256) == 200
    assert all(n == (0, 0) for n in tier.index_sizes().values())


# -- any sequence of operations leaves the indexes exact ----------------------------------

_bodies = st.sampled_from([b"a", b"b", b"c"])
_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "remove", "primary", "digest", "host", "prefix"]),
        st.integers(0, 5),  # path
        st.sampled_from(["a.example", "b.example"]),
        st.sampled_from([(), ("gzip",), ("br",)]),  # variant; () means no Vary
        _bodies,
    ),
    max_size=60,
)


def _real_entry(host: str, path: int, variant: tuple[str, ...], body: bytes) -> Entry:
    t = canonical_target(b"/d/%d?q=%d" % (path % 2, path), host.encode())
    e = entry(
        (t.authority, t.raw_path_query), body, variant, ("accept-encoding",) if variant else ()
    )
    e.target = t
    e.keys = match_keys(t.host, t.path, t.query)
    return e


@settings(max_examples=200, deadline=None)
@given(_ops, st.integers(3, 12))
def test_indexes_match_what_is_stored_after_any_operations(
    ops: list[tuple[str, int, str, tuple[str, ...], bytes]], capacity: int
) -> None:
    probe = _real_entry("a.example", 0, (), b"a")
    tier = MemoryTier(max_bytes=capacity * probe.size, max_object_bytes=1 << 20)
    for op, path, host, variant, body in ops:
        e = _real_entry(host, path, variant, body)
        if op == "put":
            tier.put(e)
        elif op == "remove":
            tier.remove(e)
        elif op == "primary":
            tier.purge_primary(e.primary)
            assert all(x.primary != e.primary for x in tier.entries())
        elif op == "digest":
            tier.purge_digest(e.sha256)
        elif op == "host":
            tier.purge_host(host)
        else:
            tier.purge_where([host], lambda x: x.target.path == "/d/0")
        stored = tier.entries()
        sizes = tier.index_sizes()
        n = len(stored)
        varied = [x for x in stored if x.variant]
        assert sizes["primary"] == (len({x.primary for x in varied}), len(varied))
        assert sizes["host"] == (len({x.host for x in stored}), n)
        assert sizes["digest"] == (len({x.sha256 for x in stored}), n)
        assert sizes["url_key"] == (len({x.keys.url_key for x in stored if x.keys}), n)
        assert sizes["vary"][0] == len({x.primary for x in stored})
        host_keys = {x.keys.host for x in stored if x.keys}
        assert sizes["hosts_of_key"] == (len(host_keys), len({x.host for x in stored}))
        for x in stored:
            assert x in tier.with_url_key(x.keys.url_key if x.keys else "")
            assert x in tier.under_host_key(x.keys.host if x.keys else "")
    tier.purge_where(None, lambda x: True)
    assert all(n == (0, 0) for n in tier.index_sizes().values())
