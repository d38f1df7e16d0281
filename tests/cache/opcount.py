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
    first, last = counts[0], counts[-1]
    """The last chunk cost no more than the first (with a little slack)."""
    assert last <= first * 1.25 + 100, f"{what}: first chunk cost {first}, last {last}"
