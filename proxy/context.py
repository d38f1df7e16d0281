"""RequestCtx: everything one request learns on its way through the phases, and `Next`: what
each phase returns to say where the walk goes next (as Varnish's request state machine does).

The request's header fields are scanned once, in admit, into the few that change what the cache
does; everything else stays in the front's raw list and is forwarded unchanged. The canonical
target, its site and its primary cache key are set once, when admit accepts the request; a
refused request carries the `UNROUTED` site and the `UNPARSED` target instead of None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from proxy.blocklist.model import Entry as BlockEntry
from proxy.cache.entry import Entry, PrimaryKey, VariantKey
from proxy.front.api import FrontRequest, Responder
from proxy.metrics import Result
from proxy.origin import OriginError, OriginFailure, UpstreamResponse
from proxy.phases.spool import Spooled
from proxy.rfc.cachecontrol import EMPTY_CC, CacheControl
from proxy.rfc.storable import NoStoreReason
from proxy.rfc.target import Target
from proxy.sites import UNROUTED, SiteRuntime

UNPARSED = Target("", "", None, "", None, b"", "")  # the target of a request admit refused
ItemKey = tuple[PrimaryKey, VariantKey]  # one stored response: primary key and Vary values


class Next(Enum):
    """Where the walk goes after a phase. `pipeline.py` maps each to the one step that runs it."""

    LOOKUP = auto()  # admitted and not listed: look the request up in the cache
    HIT = auto()  # deliver `ctx.entry` from the cache (fresh, or stale where allowed)
    STALE_WHILE_REVALIDATE = auto()  # deliver `ctx.entry`, refresh it in the background
    ONLY_IF_CACHED = auto()  # nothing usable stored and the client forbids a fetch: 504
    MISS = auto()  # one coalesced origin fetch for `ctx.key` (`ctx.entry` validates)
    FETCH_ALONE = auto()  # a fetch for `ctx.key` that waits for no other (hit-for-miss)
    EXPRESS = auto()  # FETCH_ALONE for a plain GET, by the pass-through lane (phases/lane.py)
    PRIVATE = auto()  # Authorization: fetched for this request alone, never from the cache
    HEAD_THROUGH = auto()  # a HEAD on a stale `ctx.entry`: sent on as HEAD (RFC 9111 §4.3.5)
    ROUTE = auto()  # `ctx.outcome` is in: decide what this request gets from it
    DELIVER = auto()  # deliver `ctx.entry` with `ctx.cache_status` (a fetched response)
    STREAM = auto()  # stream `ctx.outcome`'s open response (not stored)
    PASS = auto()  # forward as-is and stream back (`ctx.invalidate`, `ctx.fwd`)
    BLOCKED = auto()  # 451 for `ctx.blocked_by`
    ORIGIN_ERROR = auto()  # `ctx.outcome.error` is the answer (502/504)
    DONE = auto()


# Request fields that make a request more than a plain lookup (conditionals, ranges, directives).
SPECIAL_FIELDS = _SPECIAL = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
        b"authorization",
    }
)


class RequestFields:
    """The request fields the cache acts on, found in one pass over the raw header list."""

    __slots__ = ("host", "host_count", "special", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self.host: bytes | None = None
        self.host_count = 0
        self.special: dict[bytes, list[str]] | None = None
        for name, value in raw:
            lname = name.lower()
            if lname == b"host":
                self.host = value
                self.host_count += 1
            elif lname in _SPECIAL:
                if self.special is None:
                    self.special = {}
                self.special.setdefault(lname, []).append(value.decode("latin-1"))

    def values(self, name: str) -> list[str]:
        """All field-line values of `name` (lowercase), for Vary and the rarer fields."""
        key = name.encode("latin-1")
        if self.special is not None and key in self.special:
            return self.special[key]
        return [v.decode("latin-1") for n, v in self.raw if n.lower() == key]

    def max_forwards(self) -> int | None:
        """RFC 9110 §7.6.2 Max-Forwards as a number; None when absent or not a number."""
        values = [v for n, v in self.raw if n.lower() == b"max-forwards"]
        if len(values) != 1 or not values[0].strip().isdigit():
            return None
        return int(values[0].strip())

    def first(self, name: bytes) -> str | None:
        if self.special is None:
            return None
        vals = self.special.get(name)
        return ", ".join(vals) if vals else None


@dataclass(slots=True)
class RequestCtx:
    request: FrontRequest
    responder: Responder
    started: float
    fields: RequestFields
    method: str
    site: SiteRuntime = UNROUTED
    site_index: int = -1
    target: Target = UNPARSED
    primary: PrimaryKey = ("", b"")  # (authority, raw path+query) of `target`: set by admit
    req_cc: CacheControl = EMPTY_CC
    result: Result = Result.MISS
    status: int = 0
    bytes_sent: int = 0
    no_store: NoStoreReason | None = None
    blocked_id: str = ""
    blocked_type: str = ""
    origin_failure: OriginFailure | None = None  # why the origin could not answer (502/504)
    origin_s: float = 0.0
    collapsed: bool = False
    cache_status: bytes = b""
    content_type: bytes = b""  # of an answer the edge wrote itself (deliver.generated), for the log
    # How this request travels (set by one phase, read by the steps that follow it).
    key: ItemKey | None = None  # the stored response looked up (primary key + Vary values)
    entry: Entry | None = None  # a stored response in hand: to deliver, validate or stand in
    outcome: FetchOutcome | None = None  # what fetch brought back
    leader: bool = False  # this request made the fetch (followers share its outcome)
    blocked_by: BlockEntry | None = None
    fwd: bytes = b"bypass"  # Cache-Status fwd= of a pass or a streamed answer
    hit_detail: bytes = b""  # after a HIT's Cache-Status: which tier, or why stale
    invalidate: bool = False  # an unsafe method: invalidate what its response names
    hit_for_miss: bool = False  # recently uncacheable: no queueing, no shared-tier lookup
    vary_refetch: bool = False  # already sent once for its own Vary variant

    @property
    def routed(self) -> bool:
        """admit accepted the request (its site and target are real)."""
        return self.site is not UNROUTED


@dataclass(slots=True)
class FetchOutcome:
    entry: Entry | None = None  # what to deliver from (stored or not)
    stored: bool = False
    revalidated: bool = False
    fwd_status: int = 0
    error: OriginError | None = None
    blocked: BlockEntry | None = None
    not_stored: NoStoreReason | None = None
    upstream: UpstreamResponse | None = None  # open response to stream (not stored)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # hop-by-hop stripped
    # The Content-Encoding values of `headers`, when `read_response` found them already (so
    # deliver's judgement of the body does not look for them again); None: not read yet.
    codings: list[bytes] | None = None
    spooled: Spooled | None = None  # body bytes already read from `upstream`, budget held
    stale_candidate: Entry | None = None
    method: str = "GET"
    shared: bool = False  # `entry` came from the shared tier, not the origin
    relay_head: bytes = b""  # this delivery's head, when it differs from `entry`'s (no-cache=)
    _claimed: bool = False

    def drop(self) -> None:
        """Nobody will deliver this open response: close it and give its spool back."""
        if self.upstream is not None:
            self.upstream.close()
        if self.spooled is not None:
            self.spooled.release()

    def claim(self) -> bool:
        """Exactly one request may stream an open upstream response."""
        if self._claimed:
            return False
        self._claimed = True
        return True
