"""A dict split into a fixed number of shards, copy-on-write per shard.

A blocklist snapshot of a million entries is a handful of million-key dicts. As plain dicts
they cost a worker's event loop a long moment three ways: a resize while a big version loads
copies the whole table, `with_changes` for a one-entry push copies every table, and dropping
the previous version frees it all at once. Split into shards, a resize copies one shard, a
change copies only the shards it touches (the rest are shared with the previous snapshot), and
a retired snapshot can be released one shard at a time (`exclusive_shards`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

SHARDS = 256
_MASK = SHARDS - 1
_MISSING = object()


def shard_index(key: object) -> int:
    """Which shard holds `key` (the same for every ShardedDict)."""
    return hash(key) & _MASK


class ShardedDict(MutableMapping[K, V], Generic[K, V]):
    __slots__ = ("_shards", "_owned", "_len")

    def __init__(self, base: ShardedDict[K, V] | None = None) -> None:
        """Empty, or sharing every shard of `base` until a write copies the one it touches."""
        self._shards: list[dict[K, V]]
        self._owned: set[int] | None  # shards this instance may write; None: all of them
        if base is None:
            self._shards = [{} for _ in range(SHARDS)]
            self._owned = None
            self._len = 0
        else:
            self._shards = list(base._shards)
            self._owned = set()
            self._len = base._len

    def _writable(self, key: K) -> dict[K, V]:
        i = hash(key) & _MASK
        owned = self._owned
        if owned is not None and i not in owned:
            self._shards[i] = dict(self._shards[i])
            owned.add(i)
        return self._shards[i]

    def __getitem__(self, key: K) -> V:
        return self._shards[hash(key) & _MASK][key]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        return self._shards[hash(key) & _MASK].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._shards[hash(key) & _MASK]

    def __setitem__(self, key: K, value: V) -> None:
        shard = self._writable(key)
        if key not in shard:
            self._len += 1
        shard[key] = value

    def __delitem__(self, key: K) -> None:
        shard = self._writable(key)
        del shard[key]
        self._len -= 1

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...
    def pop(self, key: K, default: object = _MISSING) -> object:
        if key not in self._shards[hash(key) & _MASK]:
            if default is _MISSING:
                raise KeyError(key)
            return default
        shard = self._writable(key)
        self._len -= 1
        return shard.pop(key)

    def __iter__(self) -> Iterator[K]:
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def shards(self) -> list[dict[K, V]]:
        return self._shards

    def exclusive_shards(self, successor: ShardedDict[K, V]) -> list[dict[K, V]]:
        """Shards of this dict that `successor` does not share: what retiring this one frees."""
        kept = {id(s) for s in successor._shards}
        return [s for s in self._shards if id(s) not in kept]
