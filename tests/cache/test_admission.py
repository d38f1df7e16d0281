"""Issue 11, which node-tier reads a worker adopts into memory (proxy/cache/admission.py): an
object read again within about one memory tier's worth of reads, not one read once."""

from __future__ import annotations

from proxy.cache.admission import Doorkeeper


def test_an_object_is_adopted_when_read_again_within_the_window() -> None:
    d = Doorkeeper(window_bytes=10_000)
    assert not d.seen_again("a", 1_000)
    assert d.seen_again("a", 1_000)


def test_an_object_read_again_only_after_two_windows_is_not_adopted() -> None:
    d = Doorkeeper(window_bytes=10_000)
    assert not d.seen_again("a", 1_000)
    for i in range(25):  # 25,000 bytes of other reads: two generations closed since "a"
        assert not d.seen_again(i, 1_000)
    assert not d.seen_again("a", 1_000)


def test_the_window_spans_the_generation_before() -> None:
    d = Doorkeeper(window_bytes=10_000)
    assert not d.seen_again("a", 1_000)
    for i in range(12):  # one generation closed since "a": it is still within the window
        d.seen_again(i, 1_000)
    assert d.seen_again("a", 1_000)


def test_clear_forgets_every_read() -> None:
    d = Doorkeeper(window_bytes=10_000)
    d.seen_again("a", 1_000)
    d.clear()
    assert not d.seen_again("a", 1_000)


def test_a_large_object_is_adopted_after_one_more_read_per_32_kib() -> None:
    """Adopting a large object evicts as many bytes as several small ones: it must be read
    1 + size / 32 KiB times within the window first (benchmarks/README.md, "Fewer trees per
    store": 81.4% of big-set's requests from L1 against 78.6%)."""
    d = Doorkeeper(window_bytes=10 << 20)
    assert [d.seen_again("small", 32767) for _ in range(2)] == [False, True]
    assert [d.seen_again("big", 100 << 10) for _ in range(5)] == [False] * 4 + [True]
    assert d.seen_again("big", 100 << 10)  # and from then on


def test_reads_count_across_one_generation() -> None:
    d = Doorkeeper(window_bytes=200_000)
    assert not d.seen_again("big", 70_000)  # needs three reads before it (2 + 1)
    assert not d.seen_again("big", 70_000)
    for i in range(3):  # past the window's bytes: a new generation, the count carried over
        d.seen_again(i, 30_000)
    assert not d.seen_again("big", 70_000)
    assert d.seen_again("big", 70_000)


def test_the_bytes_per_read_come_from_the_config() -> None:
    """`cache.node_adopt_bytes_per_read` reaches each worker's doorkeeper."""
    import msgspec

    from proxy.cache.memory import MemoryTier
    from proxy.cache.tiered import TieredCache
    from proxy.config import CacheConfig, Config
    from proxy.metrics import WorkerStats
    from proxy.pipeline import Pipeline
    from proxy.sites import SiteTable
    from tests.integration.conftest import config

    cfg = config("http://127.0.0.1:9")
    cfg = msgspec.structs.replace(
        cfg, cache=msgspec.structs.replace(cfg.cache, node_adopt_bytes_per_read=1 << 20)
    )
    assert isinstance(cfg, Config) and isinstance(cfg.cache, CacheConfig)
    memory = MemoryTier(max_bytes=64 << 20, max_object_bytes=1 << 20)
    pipeline = Pipeline(cfg, SiteTable(cfg), memory, None, WorkerStats([]))  # type: ignore[arg-type]
    assert pipeline.cache.doorkeeper.bytes_per_read == 1 << 20
    d = TieredCache(memory).doorkeeper
    assert d.bytes_per_read == 32 << 10  # the default, as the config's
    assert CacheConfig().node_adopt_bytes_per_read == 32 << 10
