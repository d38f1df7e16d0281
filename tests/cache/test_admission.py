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
