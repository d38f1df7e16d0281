"""The takedown feed on Redis Streams: the key layout, the connection, and publishing.

Keys (all under `fleet.key_prefix`, default `edgeproxy:fleet`):

- `<p>:versions`  a stream; one entry per signed version: `seq`, `base` ("" for a full
  version) and `data`, the exact bytes of the signed version file (blocklists/FORMAT.md).
  Nodes verify `data` as they verify a file; `seq` and `base` are unsigned hints only.
- `<p>:full`      a hash: the newest full version (`seq`, its stream `id`, `data`), where a new
  node, or one that fell behind a trim, bootstraps from.
- `<p>:head`      a hash: the newest published `seq`, its stream `id` and publish time `at`;
  `<p>:published` a hash: seq -> publish time, for overdue reports.
- `<p>:acks:<seq>` a hash per version: node name -> enforced_at (Unix time), expiring after
  `fleet.ack_ttl_s`; `<p>:nodes` a hash: node name -> JSON of its newest ack; `<p>:ackstream`
  a capped stream of acks that the takedown service blocks on instead of polling.

Publishing is one Lua script, atomic on the server: a version is appended only when it is newer
than the head and, for a delta, rests on the head (no gap, no fork); a full version also
replaces `<p>:full` and trims the stream to start at it (XTRIM MINID). Nothing a live node needs
is lost: a node behind the trim point finds its next sequence missing and bootstraps from the
full version, which the trim keeps. Redis is a transport here, not an authority: a version
only counts once a node has verified its Ed25519 signature.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist import format as blformat
from proxy.config import FleetConfig
from proxy.fleet.url import parse_redis_url

log = logging.getLogger("edgeproxy.fleet")

ACK_STREAM_MAXLEN = 100_000

_PUBLISH = """
local head = tonumber(redis.call('HGET', KEYS[3], 'seq') or '0')
local seq = tonumber(ARGV[1])
if seq <= head then return {'old', tostring(head)} end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= head then return {'gap', tostring(head)} end
local id = redis.call('XADD', KEYS[1], '*', 'seq', ARGV[1], 'base', ARGV[2], 'data', ARGV[3])
redis.call('HSET', KEYS[3], 'seq', ARGV[1], 'id', id, 'at', ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[2], 'seq', ARGV[1], 'id', id, 'data', ARGV[3])
  redis.call('XTRIM', KEYS[1], 'MINID', id)
  for _, k in ipairs(redis.call('HKEYS', KEYS[4])) do
    if tonumber(k) < seq - 10000 then redis.call('HDEL', KEYS[4], k) end
  end
end
return {'ok', id}
"""


class FeedError(Exception):
    """A version the feed will not take (not newer than its head, or not resting on it)."""


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "edgeproxy:fleet"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def full(self) -> str:
        return f"{self.prefix}:full"

    @property
    def head(self) -> str:
        return f"{self.prefix}:head"

    @property
    def published(self) -> str:
        return f"{self.prefix}:published"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def ack_stream(self) -> str:
        return f"{self.prefix}:ackstream"

    def acks(self, seq: int) -> str:
        return f"{self.prefix}:acks:{seq}"


def connect(cfg: FleetConfig, url: str | None = None) -> Any:
    """A redis.asyncio client with the fleet's timeouts, TLS and credentials. Its socket
    timeout covers one blocking read (`block_s`) plus `read_timeout_s`, so a server that stops
    answering (paused, partitioned) is noticed within that, never waited on for ever."""
    import redis.asyncio as aioredis

    url = url or cfg.redis_url
    u = parse_redis_url(url)
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": cfg.connect_timeout_s,
        "socket_timeout": cfg.block_s + cfg.read_timeout_s,
        "decode_responses": False,
        "retry_on_timeout": False,
    }
    if cfg.username:
        kwargs["username"] = cfg.username
    if cfg.password_file:
        kwargs["password"] = Path(cfg.password_file).read_text().strip()
    if u.scheme == "rediss":
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if cfg.tls_ca_file:
            kwargs["ssl_ca_certs"] = cfg.tls_ca_file
        if cfg.tls_cert_file:
            kwargs["ssl_certfile"] = cfg.tls_cert_file
            kwargs["ssl_keyfile"] = cfg.tls_key_file
    return aioredis.Redis.from_url(url, **kwargs)


@dataclass(frozen=True, slots=True)
class Stored:
    """A version as the feed holds it."""

    seq: int
    id: str
    data: bytes


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_full(r: Any, keys: Keys) -> Stored | None:
    got = await r.hgetall(keys.full)
    if not got or b"data" not in got:
        return None
    return Stored(int(got[b"seq"]), _s(got[b"id"]), bytes(got[b"data"]))


async def read_head(r: Any, keys: Keys) -> tuple[int, float]:
    """The newest published sequence and when it was published (0, 0.0 when none)."""
    got = await r.hmget(keys.head, ["seq", "at"])
    return int(got[0] or 0), float(got[1] or 0.0)


def claims(data: bytes) -> tuple[int, int | None]:
    """The sequence and base a version's header claims (unverified: nodes verify)."""
    first = data.split(b"\n", 1)[0]
    try:
        header = msgspec.json.decode(first, type=blformat.Header)
    except msgspec.DecodeError as e:
        raise FeedError(f"not a blocklist version: {e}") from None
    return header.sequence, header.base


async def publish(r: Any, keys: Keys, data: bytes, *, now: float | None = None) -> str:
    """Append one signed version; its stream id. Raises FeedError when the feed's head makes
    it old or leaves a gap (the caller publishes what is missing first)."""
    seq, base = claims(data)
    at = time.time() if now is None else now
    status, value = await r.eval(
        _PUBLISH,
        4,
        keys.stream,
        keys.full,
        keys.head,
        keys.published,
        str(seq),
        "" if base is None else str(base),
        data,
        repr(at),
    )
    if _s(status) != "ok":
        head = _s(value)
        if _s(status) == "old":
            raise FeedError(f"version {seq} is not newer than the feed's head {head}")
        raise FeedError(f"version {seq} rests on {base}, the feed's head is {head}")
    return _s(value)


def newest_chain(
    directory: str | os.PathLike[str],
    public_key_pem: bytes,
    *,
    max_bytes: int = 1 << 30,
    after: int = 0,
) -> list[tuple[blformat.Version, bytes]]:
    """The newest valid version in a directory and the versions it rests on down to a full
    one, oldest first, with each file's bytes: what a feed needs to let a node go from
    nothing to the newest. With `after` (the feed's head), down to the first version resting
    on it instead: only what the feed lacks is read and verified. Verified with the edge's own
    reader; [] when there is none (or nothing newer than `after`)."""
    by_seq: dict[int, list[Path]] = {}
    for path in blformat.list_versions(directory):
        seq = blformat.peek_sequence(path)
        if seq is not None:
            by_seq.setdefault(seq, []).append(path)

    def at(seq: int) -> tuple[blformat.Version, bytes] | None:
        for path in by_seq.get(seq, []):
            try:
                data = path.read_bytes()
                v = blformat.parse_version(data, path, public_key_pem)
            except (OSError, blformat.BlocklistError):
                continue
            if v.sequence == seq:
                return v, data
        return None

    for top in sorted(by_seq, reverse=True):
        if top <= after:
            return []
        chain: list[tuple[blformat.Version, bytes]] = []
        found = at(top)
        while found is not None and len(chain) <= blformat.MAX_DELTA_CHAIN:
            chain.append(found)
            if found[0].base is None or (after and found[0].base == after):
                return list(reversed(chain))
            found = at(found[0].base)
    return []


async def publish_chain(
    r: Any, keys: Keys, chain: Iterable[tuple[blformat.Version, bytes]]
) -> list[int]:
    """Bring the feed up to a chain (oldest first, starting with a full version or a delta on
    the feed's head): publish the versions past its head; the whole chain when the feed is
    empty or its head is older than the chain's full version (Redis restarted empty, or first
    use). The published sequences."""
    items = list(chain)
    if not items:
        return []
    head, _ = await read_head(r, keys)
    full_seq = items[0][0].sequence
    published: list[int] = []
    for v, data in items:
        if v.sequence <= head:
            continue
        if head < full_seq and v.sequence != full_seq and not published:
            continue  # unreachable: a full version comes first in the chain
        try:
            await publish(r, keys, data)
        except FeedError as e:
            log.warning("fleet feed: %s", e)
            break
        published.append(v.sequence)
    return published


async def record_ack(
    r: Any, keys: Keys, node: str, seq: int, enforced_at: float, ttl_s: float
) -> None:
    """A node's acknowledgement: it enforces `seq` (and so every version before it) since
    `enforced_at`, in every worker."""
    record = msgspec.json.encode({"version": seq, "enforced_at": enforced_at, "at": time.time()})
    async with r.pipeline(transaction=True) as p:
        p.hset(keys.acks(seq), node, repr(enforced_at))
        p.expire(keys.acks(seq), max(1, int(ttl_s)))
        p.hset(keys.nodes, node, record)
        p.xadd(
            keys.ack_stream,
            {"node": node, "seq": str(seq), "enforced_at": repr(enforced_at)},
            maxlen=ACK_STREAM_MAXLEN,
            approximate=True,
        )
        await p.execute()


async def node_states(r: Any, keys: Keys) -> dict[str, dict[str, Any]]:
    """Every node's newest acknowledgement: name -> {version, enforced_at, at}."""
    got = await r.hgetall(keys.nodes)
    return {_s(k): msgspec.json.decode(v) for k, v in got.items()}


async def enforced_at(r: Any, keys: Keys, node: str, seq: int) -> float | None:
    """When `node` enforced version `seq`: its ack of `seq`, or of the first later version it
    acked (a node that bootstrapped past `seq` enforces it since then); None when not yet."""
    state = (await node_states(r, keys)).get(node)
    if state is None or int(state["version"]) < seq:
        return None
    for s in range(seq, int(state["version"]) + 1):
        got = await r.hget(keys.acks(s), node)
        if got is not None:
            return float(got)
    return float(state["enforced_at"])


async def wait_enforced(
    r: Any, keys: Keys, node: str, seq: int, timeout_s: float, *, block_s: float = 1.0
) -> float | None:
    """Block (XREAD on the ack stream, not a poll) until `node` acknowledges `seq` or later;
    its enforced_at, or None after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = await r.xrevrange(keys.ack_stream, count=1)
    last_id = _s(last[0][0]) if last else "0-0"
    while True:
        if (at := await enforced_at(r, keys, node, seq)) is not None:
            return at
        left = deadline - loop.time()
        if left <= 0:
            return None
        got = await r.xread(
            {keys.ack_stream: last_id}, block=max(1, int(min(left, block_s) * 1000)), count=100
        )
        for _stream, entries in got or []:
            if entries:
                last_id = _s(entries[-1][0])
