"""A complexity counter for the cache's regression tests (issue 19): a `str` that counts every
hash and comparison made on it. Put one in the keys a structure files, and the count is every
probe and comparison it makes on them, deterministic where a clock is not."""

from __future__ import annotations

from collections.abc import Callable

CHUNK = 10_000  # operations per counted chunk
BUDGET_PER_OP = 200  # counted key operations one insert or removal may make (about 20 now)


class Budget(Exception):
    pass


class CountingStr(str):
    """A str that counts every hash and comparison made on it (the complexity counter)."""

    ops = 0
    limit = 0

    def __hash__(self) -> int:
        CountingStr.ops += 1
        if CountingStr.ops > CountingStr.limit:
            raise Budget(f"more than {BUDGET_PER_OP} key operations per insert or removal")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        CountingStr.ops += 1
        if CountingStr.ops > CountingStr.limit:
            raise Budget(f"more than {BUDGET_PER_OP} key operations per insert or removal")
        return str.__eq__(self, other)


def counted_chunks(n: int, step: Callable[[int], object], chunk: int = CHUNK) -> list[int]:
    """Run `step(i)` for i in range(n); the key operations each `chunk` of steps made. More
    than BUDGET_PER_OP per step on average raises `Budget` at once."""
    counts = []
    for start in range(0, n, chunk):
        before = CountingStr.ops
        CountingStr.limit = before + BUDGET_PER_OP * chunk
        for i in range(start, min(n, start + chunk)):
            step(i)
        counts.append(CountingStr.ops - before)
    CountingStr.limit = 1 << 62
    return counts


def assert_flat(counts: list[int], what: str) -> None:
    """The last chunk cost no more than the first (with a little slack)."""
    first, last = counts[0], counts[-1]
    assert last <= first * 1.25 + 100, f"{what}: first chunk cost {first}, last {last}"


def count_calls(fn: Callable[[], object]) -> int:
    """Function calls (Python and C) `fn` makes, by the profiler hook: a second complexity
    counter, for code whose keys are built inside it (so `CountingStr` cannot reach them). A
    loop over n items makes at least n calls; an O(1) path makes the same few whatever n is."""
    import sys

    n = 0

    def hook(_frame: object, event: str, _arg: object) -> None:
        nonlocal n
        if event in ("call", "c_call"):
            n += 1

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n
