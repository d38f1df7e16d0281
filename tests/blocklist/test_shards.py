"""ShardedDict: a dict's behaviour, copy-on-write per shard."""

from __future__ import annotations

from proxy.blocklist.shards import ShardedDict


def test_behaves_like_a_dict() -> None:
    d: ShardedDict[str, int] = ShardedDict()
    plain: dict[str, int] = {}
    for i in range(2000):
        d[f"k{i}"] = i
        plain[f"k{i}"] = i
    for i in range(0, 2000, 3):
        del d[f"k{i}"]
        del plain[f"k{i}"]
    assert d.pop("k1") == plain.pop("k1") and d.pop("nope", 7) == 7
    assert len(d) == len(plain) and dict(d.items()) == plain and bool(d)
    assert d.get("k2") == 2 and d.get("k3") is None and "k4" in d and "k3" not in d


def test_a_copy_shares_untouched_shards_and_never_writes_through() -> None:
    base: ShardedDict[str, int] = ShardedDict()
    for i in range(1000):
        base[f"k{i}"] = i
    child = ShardedDict(base)
    child["new"] = 1
    del child["k5"]
    assert "new" not in base and base["k5"] == 5 and len(base) == 1000
    assert "new" in child and "k5" not in child and len(child) == 1000
    exclusive = base.exclusive_shards(child)
    assert 1 <= len(exclusive) <= 2  # only the shards the two writes touched were copied
    shared = sum(1 for a, b in zip(base.shards(), child.shards(), strict=True) if a is b)
    assert shared == len(base.shards()) - len(exclusive)
