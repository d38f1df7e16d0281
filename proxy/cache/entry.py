"""A stored response: what upstream_response decided to keep, pre-serialised for delivery.

The head bytes (status line and stored header fields) are rendered once at store time and again
only when a 304 updates them, so a hit is one join of stored bytes with a small per-delivery part
(`Age`, `Cache-Status`, framing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.blocklist.keys import MatchKeys
from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl
from proxy.rfc.target import Target

# Header fields never stored on an entry: hop-by-hop ones are stripped before this point; these
# are recomputed per delivery or by the front.
PER_DELIVERY = frozenset(
    {b"age", b"cache-status", b"content-length", b"connection", b"transfer-encoding"}
)

PrimaryKey = tuple[str, bytes]  # (authority, raw path+query): the forward form
VariantKey = tuple[str, ...]  # normalised values of the fields named by Vary


@dataclass(slots=True, eq=False, weakref_slot=True)  # the memo holds entries weakly
class Entry:
    primary: PrimaryKey
    variant: VariantKey
    target: Target
    status: int
    reason: bytes
    # As received, minus PER_DELIVERY and hop-by-hop. A tuple of tuples of bytes: the cyclic
    # GC stops tracking such tuples, which keeps full collections short with a large cache.
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    sha256: bytes
    request_time: float
    response_time: float
    corrected_initial_age: float  # RFC 9111 §4.2.3, fixed at store time
    lifetime: float  # freshness lifetime, RFC 9111 §4.2.1
    stale_while_revalidate_s: float
    stale_if_error_s: float
    must_revalidate: bool  # must-revalidate, proxy-revalidate or s-maxage: no stale serving
    no_cache: bool  # response no-cache (unqualified): validate before every reuse
    etag: str | None
    last_modified: float | None
    date: float | None
    vary_fields: tuple[str, ...]
    upstream_cache_status: bytes = b""
    head: bytes = b""
    size: int = 0
    stored_at: float = 0.0
    hits: int = 0
    revalidating: bool = False
    alive: bool = True  # False once the entry has left the memory tier (evicted, purged)
    site_index: int = 0
    cc: CacheControl = EMPTY_CC  # the directives this cache obeys (targeted fields included)
    # The blocklist match keys of `target` (computed by the block phase already), kept so
    # that purging against a new version looks entries up instead of canonicalising again.
    keys: MatchKeys | None = None
    # b"; detail=node" from the node tier until its first answer (the Cache-Status detail
    # saying which tier answered); the facade empties it once the entry answers from memory.
    tier_detail: bytes = b""

    @property
    def host(self) -> str:
        return self.target.host

    # Wall time at which the entry's current age reaches its lifetime (set once: the fields it
    # derives from never change; a plain slot, because every hot hit reads it).
    expires_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.expires_at = self.response_time + self.lifetime - self.corrected_initial_age

    def age(self, now: float) -> float:
        """RFC 9111 §4.2.3: current_age = corrected_initial_age + resident_time."""
        return self.corrected_initial_age + max(0.0, now - self.response_time)

    def render_head(self, overhead_bytes: int, via: bytes) -> None:
        """Serialise the stored fields once; our `Via` member is appended to the origin's."""
        self.set_head(
            render_head(self.status, self.reason, self.headers, len(self.body), via), overhead_bytes
        )

    def set_head(self, head: bytes, overhead_bytes: int) -> None:
        """`head` (`render_head` of this entry's fields) is what deliveries send."""
        self.head = head
        self.size = len(head) + len(self.body) + overhead_bytes + self.key_bytes()

    def key_bytes(self) -> int:
        """What the entry's key costs memory, counted in `size` beside `overhead_bytes`: its
        target, cache key and blocklist match keys hold about four copies of the path and
        query. Measured with tracemalloc (a memory tier of entries with 1 KiB bodies): 2.1 KB
        held an entry for a 10-byte path, 33.7 KB for an 8,000-byte one. Without this, the
        memory tier's byte bound was a bound on heads and bodies only, and entries for long
        URLs held up to 27 times what it counted."""
        primary = self.primary
        return 4 * len(primary[1]) + len(primary[0]) + sum(map(len, self.variant))

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


def render_head(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body_bytes: int,
    via: bytes,
) -> bytes:
    """A response head as stored and delivered: status line, fields with our `Via` member
    appended to the origin's, Content-Length (up to the per-delivery part)."""
    return kept_head(status, reason, headers, frozenset(), (), body_bytes, via)[1]


def kept_head(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    unkept: frozenset[bytes],
    added: tuple[tuple[bytes, bytes], ...],
    body_bytes: int,
    via: bytes,
) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """The fields to store (`headers` but those `unkept` names, by lowercase name, then
    `added`, ours, whatever their names) and `render_head` of them, in one pass: a miss's
    store read every field twice, once to filter and once to render (issue 18)."""
    kept: list[tuple[bytes, bytes]] = []
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for line in headers:
        name, value = line
        n = name.lower()
        if n in unkept:
            continue
        kept.append(line)
        if n == b"via":
            value = value + b", " + via
            via = b""
        parts += (name, b": ", value, b"\r\n")
    for line in added:
        kept.append(line)
        parts += (line[0], b": ", line[1], b"\r\n")
    if via:
        parts += (b"Via: ", via, b"\r\n")
    if status not in (204, 304) and not 100 <= status < 200:
        parts.append(b"Content-Length: %d\r\n" % body_bytes)
    return tuple(kept), b"".join(parts)
