"""Url entries that name a query, found without scanning them (issue 19).

A url entry with a query blocks every request for its url key whose query holds all of the
entry's pairs (a sub-multiset: extra pairs in the request never unblock it; see
`keys.query_contains`). These entries used to sit in one list per url key that every request
with a query walked, confirming each with `query_contains`: 100,000 listed `/watch?v=…` made
each request for `/watch?v=x` cost 100,000 comparisons.

Now each entry files its sorted pairs as a path in a trie, flattened into one table: a node
key is the url key followed by a prefix of the pairs (`node_key`, `child_key`; length-prefixed,
so no two distinct sequences share a key), and every prefix of a listed query is a node. A
request walks only nodes that are sub-multisets of its own sorted pairs (`walk`): from each
node it probes one child per distinct later pair of the request. Its cost so depends on the
request (its pairs, and the listed queries it actually contains), not on how many entries share
its url key. Both snapshot kinds use it: `DictSnapshot` in a sharded dict, the compiled table
(`table.Kind.URLQ`/`URLQ_NODE`) as fixed records.

Order: several entries may match one request. The walk reports the first match in its
walk order (`walk`), the entries at one node in list order; the old scan
reported the first in list order. Both are listed; the report names a different one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from proxy.blocklist.keys import QueryPairs

T = TypeVar("T")


# A node key is its parts (the url key, then each pair's name and value), each as a 4-byte
# little-endian length and its UTF-8 bytes (lone surrogates passed through). Written out in
# each function rather than through a helper: a request's walk makes a key per node it visits.


def node_key(url_key: str) -> bytes:
    """The root node of a url key: every query entry under it is below."""
    b = url_key.encode("utf-8", "surrogatepass")
    return len(b).to_bytes(4, "little") + b


def child_key(parent: bytes, pair: tuple[str, str]) -> bytes:
    name = pair[0].encode("utf-8", "surrogatepass")
    value = pair[1].encode("utf-8", "surrogatepass")
    return b"".join(
        (parent, len(name).to_bytes(4, "little"), name, len(value).to_bytes(4, "little"), value)
    )


def path_keys(url_key: str, need: QueryPairs) -> list[bytes]:
    """The node keys of `need`'s path: the root, each longer prefix, and `need` itself last."""
    key = node_key(url_key)
    keys = [key]
    for pair in need:
        key = child_key(key, pair)
        keys.append(key)
    return keys


# visit(node key) -> (the entry matching there, or None; whether the node has children)
Visit = Callable[[bytes], tuple[T | None, bool]]


def walk(url_key: str, have: QueryPairs, visit: Visit[T]) -> T | None:
    """The first entry `visit` reports on a node whose pairs are a sub-multiset of `have`
    (sorted): the root, then a node's children in the order of `have`, each child's own
    children after its siblings. The order depends on the request only. Each distinct
    sub-multiset is visited at most once: among equal pairs of `have`, only the first not yet
    used starts a child."""
    root = node_key(url_key)
    found, more = visit(root)
    if found is not None or not more:
        return found
    return walk_below(root, have, visit)


def walk_below(root: bytes, have: QueryPairs, visit: Visit[T]) -> T | None:
    """`walk` past a root its caller has visited and found children under (a table probes
    the root on its own: most url keys have no query entries, and the walk's setup is then
    not paid)."""
    n = len(have)
    # (node key, index in `have` its children start from), explored depth first in order
    stack: list[tuple[bytes, int]] = [(root, 0)]
    while stack:
        key, start = stack.pop()
        children: list[tuple[bytes, int]] = []
        for j in range(start, n):
            if j > start and have[j] == have[j - 1]:
                continue
            child = child_key(key, have[j])
            found, more = visit(child)
            if found is not None:
                return found
            if more:
                children.append((child, j + 1))
        stack.extend(reversed(children))
    return None
