"""Issue 18 (h-miss): the pass-through reads its body's content codings once and hashes the
body only when a digest could match it; the memory tier files fewer index keys per store.
What must not change: a listed body is still refused (451) once a digest is listed, a coded
body is still judged by its identity (an undecodable one refused, 502), every stored body is
still indexed by its digest, and every purge still finds exactly what it found before."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

from proxy.blocklist.keys import match_keys
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.memory import MemoryTier
from proxy.origin.memory import MemoryResponse
from proxy.phases import upstream_response
from proxy.rfc.target import canonical_target
from tests.cache.test_memory_fanout import entry
from tests.phases.client import fetch

BODY = b"a work, " * 100
NO_STORE = [(b"Cache-Control", b"no-store"), (b"Content-Type", b"text/plain")]


def origin(method, path_query, headers, data):  # type: ignore[no-untyped-def]
    if path_query.startswith(b"/stored"):
        return MemoryResponse(200, [(b"Cache-Control", b"max-age=60")], BODY)
    if path_query.startswith(b"/gz"):
        return MemoryResponse(
            200, [*NO_STORE, (b"Content-Encoding", b"gzip")], gzip.compress(BODY, mtime=0)
        )
    if path_query.startswith(b"/corrupt"):
        return MemoryResponse(200, [*NO_STORE, (b"Content-Encoding", b"gzip")], b"not gzip")
    return MemoryResponse(200, NO_STORE, BODY)


def count_hashes(monkeypatch: Any) -> list[bytes]:
    """The bodies upstream_response's judgement hashes (its SHA-256 of an uncoded body)."""
    hashed: list[bytes] = []

    def counting(data: bytes) -> Any:
        hashed.append(data)
        return hashlib.sha256(data)

    monkeypatch.setattr(upstream_response, "sha256", counting)
    return hashed


def list_digest(w: Any, body: bytes) -> None:
    listed = BlockEntry(id="d18", type=EntryType.SHA256, value=hashlib.sha256(body).hexdigest())
    w.parts.pipeline.enforcer.apply(Snapshot.compile([listed], 1, 0.0))


async def test_a_pass_through_hashes_its_body_only_while_a_digest_is_listed(
    make_worker, monkeypatch
) -> None:
    hashed = count_hashes(monkeypatch)
    w = await make_worker(origin)
    for _ in range(2):  # the miss's leader, then hit-for-miss
        r = await fetch(w, "GET", "/free")
        assert r.status == 200 and r.body == BODY
        assert r.cache_status == "edgeproxy; fwd=miss; fwd-status=200; detail=no-store"
    assert hashed == []
    list_digest(w, BODY)
    r = await fetch(w, "GET", "/free")
    assert r.status == 451 and BODY not in r.body
    assert hashed == [BODY]


async def test_a_stored_body_is_hashed_for_its_index_with_no_digest_listed(
    make_worker, monkeypatch
) -> None:
    hashed = count_hashes(monkeypatch)
    w = await make_worker(origin)
    r = await fetch(w, "GET", "/stored")
    assert r.status == 200 and "stored" in r.cache_status
    assert hashed == [BODY]
    stored = w.parts.pipeline.cache.memory.entries()
    assert [e.sha256 for e in stored] == [hashlib.sha256(BODY).digest()]


async def test_a_coded_pass_through_is_judged_by_its_identity_with_no_digest_listed(
    make_worker,
) -> None:
    """The codings read_response found travel on the outcome: the gzip body is decoded to be
    judged (an undecodable one refused, as before), and refused once its identity is listed."""
    w = await make_worker(origin)
    r = await fetch(w, "GET", "/corrupt")
    assert r.status == 502
    r = await fetch(w, "GET", "/gz")
    assert r.status == 200 and r.body == gzip.compress(BODY, mtime=0)
    list_digest(w, BODY)
    r = await fetch(w, "GET", "/gz")
    assert r.status == 451


# -- the memory tier's indexes ------------------------------------------------------------


def _stored(host: bytes, path: bytes, variant: tuple[str, ...] = ()) -> Any:
    t = canonical_target(path, host)
    e = entry(
        (t.authority, t.raw_path_query), path, variant, ("accept-encoding",) if variant else ()
    )
    e.target = t
    e.keys = match_keys(t.host, t.path, t.query)
    return e


def test_an_item_without_vary_is_purged_by_primary_without_the_primary_index() -> None:
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    plain, other = _stored(b"a.example", b"/p"), _stored(b"a.example", b"/q")
    gz, br = _stored(b"a.example", b"/v", ("gzip",)), _stored(b"a.example", b"/v", ("br",))
    for e in (plain, other, gz, br):
        tier.put(e)
    assert tier.index_sizes()["primary"] == (1, 2)  # only /v's two variants are filed
    assert tier.vary_fields(plain.primary) == () and tier.vary_fields(gz.primary) == (
        "accept-encoding",
    )
    assert tier.purge_primary(plain.primary) == 1
    assert tier.vary_fields(plain.primary) is None
    assert tier.purge_primary(gz.primary) == 2
    assert tier.entries() == [other]


def test_a_host_key_finds_the_items_of_every_host_spelled_to_it() -> None:
    """Two target hosts with one blocklist host key (a numeric IPv4 spelling): the host keys
    map to the hosts stored under them, and a host or prefix purge finds the items of both,
    until the last item of either host leaves."""
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    dotted, numeric = _stored(b"127.0.0.1", b"/a/1"), _stored(b"2130706433", b"/a/2")
    assert dotted.host != numeric.host and dotted.keys.host == numeric.keys.host
    tier.put(dotted)
    tier.put(numeric)
    assert tier.index_sizes()["hosts_of_key"] == (1, 2)
    assert set(tier.under_host_key("127.0.0.1")) == {dotted, numeric}
    assert set(tier.under_prefix_key("127.0.0.1/")) == {dotted, numeric}
    assert tier.under_prefix_key("127.0.0.1/a") == [dotted, numeric]
    tier.remove(dotted)
    assert tier.under_host_key("127.0.0.1") == [numeric]
    tier.remove(numeric)
    assert tier.under_host_key("127.0.0.1") == []
    assert all(n == (0, 0) for n in tier.index_sizes().values())


def test_a_prefix_finds_its_url_keys_through_their_directories() -> None:
    """The ordered index holds directories ("host/a" for "host/a/1"): many url keys in one
    directory are one ordered entry, and a prefix still takes exactly the url key itself and
    those below it, not a sibling that only shares its spelling ("/ab")."""
    tier = MemoryTier(max_bytes=1 << 20, max_object_bytes=1 << 20)
    paths = [b"/a", b"/ab", b"/a/1", b"/a/2", b"/a/1/x", b"/a/b", b"/b/a", b"/a0/x"]
    stored = {p: _stored(b"example.com", p) for p in paths}
    for e in stored.values():
        tier.put(e)
    sizes = tier.index_sizes()
    assert sizes["dirs_ordered"][0] == 5  # example.com, …/a, …/a/1, …/b, …/a0
    assert sizes["url_key_dirs"] == (5, len(paths))
    under_a = {p for p, e in stored.items() if e in tier.under_prefix_key("example.com/a")}
    assert under_a == {b"/a", b"/a/1", b"/a/2", b"/a/1/x", b"/a/b"}
    assert tier.under_prefix_key("example.com/a/1") == [stored[b"/a/1"], stored[b"/a/1/x"]]
    tier.remove(stored[b"/a/1/x"])
    assert tier.index_sizes()["dirs_ordered"][0] == 4
    assert tier.under_prefix_key("example.com/a/1") == [stored[b"/a/1"]]
