"""The shared tier's Redis store: redis-py connections (its TLS, AUTH/ACL, SELECT and reply
parser, hiredis when installed) used directly, in a small pool of this worker's own.

Why not `redis.asyncio.Redis` (or aiocache on top of it): measured here, a GET through the
client cost ~55 µs of CPU against ~33 µs on one of its connections directly. The client adds a
pool with locks and events, retries, observability hooks and a `wait_for` per read; the tier
bounds time itself (`SharedTier`'s deadlines) and never retries, so this store keeps only what
a round trip needs: take an idle connection, send every command of the operation in one write,
read the replies, give the connection back. A connection that failed or was interrupted by a
deadline is dropped (its replies may still be on the way), never reused.

A store is one round trip: one Lua script (`PUT`) writes the record, and for a response that
varies, reads the primary key's index, keeps its generation when its fields are the same and
rewrites it; and it files the response in its host's index, so that a host or prefix purge on
any node finds what every node stored. EVAL (not EVALSHA), so a Redis restarted empty needs no
script reloading (Redis caches the compiled script by its digest either way).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

# KEYS: the primary key, the host index, its expiry index. ARGV: record, record ttl ms, index member, now, then
# for a response that varies: variant key head, variant key tail, new generation, until, field
# names... The index under the primary key is msgspec's `Index` as an array:
# ["i", fields, generation, until]. The host index (a sorted set of members "path?query
# authority", all of score 0: ZRANGEBYLEX is only defined on equal scores) lets a host or prefix
# purge find what any node stored; its twin (`:t`, scored by expiry) lets each store drop a
# few expired members, so the index does not outgrow what is stored.
PUT = """
local now, record_ms = tonumber(ARGV[4]), tonumber(ARGV[2])
local expiry = now + record_ms / 1000
if #ARGV == 4 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', record_ms)
else
  local gen = ARGV[7]
  expiry = math.max(expiry, tonumber(ARGV[8]))
  local fields = {}
  for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
  local raw = redis.call('GET', KEYS[1])
  if raw then
    local ok, old = pcall(cmsgpack.unpack, raw)
    if ok and type(old) == 'table' and old[1] == 'i' and type(old[2]) == 'table'
        and #old[2] == #fields and type(old[3]) == 'string' and type(old[4]) == 'number' then
      local same = true
      for i = 1, #fields do if old[2][i] ~= fields[i] then same = false end end
      if same then
        gen = old[3]
        if old[4] > expiry then expiry = old[4] end
      end
    end
  end
  redis.call('SET', ARGV[5] .. gen .. ARGV[6], ARGV[1], 'PX', record_ms)
  local index_ms = math.max(1, math.floor((expiry - now) * 1000))
  redis.call('SET', KEYS[1], cmsgpack.pack({'i', fields, gen, expiry + 0.0}), 'PX', index_ms)
end
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZADD', KEYS[3], expiry, ARGV[3])
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 64)
if #old > 0 then
  redis.call('ZREM', KEYS[2], unpack(old))
  redis.call('ZREM', KEYS[3], unpack(old))
end
local host_ms = math.max(1, math.floor((expiry - now) * 1000))
for k = 2, 3 do
  if redis.call('PTTL', KEYS[k]) < host_ms then redis.call('PEXPIRE', KEYS[k], host_ms) end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class VaryPut:
    """The variant part of a store: the variant key is `head + generation + tail`."""

    fields: tuple[str, ...]
    head: str
    tail: str
    generation: str  # used when the index holds none for these fields
    until: float  # this variant's expiry (wall time)


@dataclass(frozen=True, slots=True)
class Put:
    """One stored response: its record under `pkey` (or a variant key), and its place in the
    host index `hkey` (`member`: "path?query authority")."""

    pkey: str
    record: bytes
    ttl_s: float
    now: float
    hkey: str
    member: bytes
    vary: VaryPut | None = None


KeyOf = Callable[[bytes], str]  # host index member -> primary key


def _under(member: bytes, path: str | None, under: str | None) -> bool:
    if path is None or under is None:
        return True
    p = member.split(b" ", 1)[0].split(b"?", 1)[0].decode("ascii", "replace")
    return p == path or p.startswith(under)


def ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """How to reach Redis, beyond the URL (`cache.shared_tier_*`)."""

    max_connections: int = 32
    connect_timeout_s: float = 1.0
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    username: str = ""
    password: str = ""


class RedisStore:
    """A `Store` on this worker's own redis-py connections (at most `max_connections`)."""

    def __init__(self, url: URL, options: RedisOptions) -> None:
        from redis.asyncio.connection import Connection, SSLConnection
        from redis.exceptions import ConnectionError as RedisConnectionError

        kw: dict[str, Any] = {
            "host": url.host,
            "port": url.port or 6379,
            "db": int(url.path[1:] or 0),
            "username": options.username or url.user or None,
            "password": options.password or url.password or None,
            "socket_connect_timeout": options.connect_timeout_s,
            "socket_timeout": None,  # SharedTier's deadline bounds every operation
            "health_check_interval": 0,
        }
        self.connection_class: Any = Connection
        if url.scheme == "rediss":
            self.connection_class = SSLConnection
            kw["ssl_ca_certs"] = options.tls_ca_file or None
            kw["ssl_certfile"] = options.tls_cert_file or None
            kw["ssl_keyfile"] = options.tls_key_file or None
        self.kwargs = kw
        self._idle: deque[Any] = deque()
        self._slots = asyncio.Semaphore(options.max_connections)
        self._dropped: set[asyncio.Task[None]] = set()
        self._broken = (RedisConnectionError, OSError)  # a dead connection, not a bad command

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write on one connection and read their replies. A connection
        that sat idle may have died with a Redis since restarted: if it fails to connect or
        to answer, the commands go once more on a new one (every command here is idempotent)."""
        await self._slots.acquire()
        try:
            if not self._idle:
                return await self._exchange(self.connection_class(**self.kwargs), commands)
            try:
                return await self._exchange(self._idle.pop(), commands)
            except self._broken:
                return await self._exchange(self.connection_class(**self.kwargs), commands)
        finally:
            self._slots.release()

    async def _exchange(self, conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        done = False
        try:
            if len(commands) == 1:
                packed = conn.pack_command(*commands[0])
            else:
                packed = conn.pack_commands(commands)
            await conn.send_packed_command(packed, check_health=False)
            replies = [await conn.read_response() for _ in commands]
            done = True
            return replies
        finally:
            if done:
                self._idle.append(conn)
            else:
                self._drop(conn)

    def _drop(self, conn: Any) -> None:
        task = asyncio.ensure_future(conn.disconnect(nowait=True))
        self._dropped.add(task)
        task.add_done_callback(self._dropped.discard)

    async def get(self, key: str) -> bytes | None:
        (value,) = await self._run([("GET", key)])
        return value  # type: ignore[no-any-return]

    async def put(self, p: Put) -> None:
        args: tuple[Any, ...] = (p.record, ms(p.ttl_s), p.member, repr(p.now))
        if (v := p.vary) is not None:
            args += (v.head, v.tail, v.generation, repr(v.until), *v.fields)
        await self._run([("EVAL", PUT, 3, p.pkey, p.hkey, p.hkey + ":t", *args)])

    async def purge(
        self, hkey: str, path: str | None, key_of: KeyOf, step_timeout_s: float, batch: int = 500
    ) -> int:
        """Delete every record the host index `hkey` lists under `path` (a path prefix as
        purges mean it: the path itself and what is below it), or all of them (None); each
        round trip bounded by `step_timeout_s`."""
        under = None if path is None else path.rstrip("/") + "/"
        lo = b"-" if path is None else b"[" + path.encode()
        hi = b"+" if path is None else b"[" + path.encode() + b"\xff"
        deleted = 0
        while True:
            async with asyncio.timeout(step_timeout_s):
                (members,) = await self._run([("ZRANGEBYLEX", hkey, lo, hi, "LIMIT", 0, batch)])
            if not members:
                return deleted
            lo = b"(" + members[-1]
            chosen = [m for m in members if _under(m, path, under)]
            if chosen:
                keys = [key_of(m) for m in chosen]
                async with asyncio.timeout(step_timeout_s):
                    await self._run(
                        [("DEL", *keys), ("ZREM", hkey, *chosen), ("ZREM", hkey + ":t", *chosen)]
                    )
                deleted += len(keys)

    async def delete(self, key: str) -> None:
        await self._run([("DEL", key)])

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().disconnect()
        if self._dropped:
            await asyncio.gather(*self._dropped, return_exceptions=True)
