"""The shared tier's Redis store: redis-py connections (its TLS, AUTH/ACL, SELECT and reply
parser, hiredis when installed) used directly, in a small pool of this worker's own.

Why not `redis.asyncio.Redis` (or aiocache on top of it): measured here, a GET through the
client cost ~55 µs of CPU against ~33 µs on one of its connections directly. The client adds a
pool with locks and events, retries, observability hooks and a `wait_for` per read; the tier
bounds time itself (`SharedTier`'s deadlines) and never retries, so this store keeps only what
a round trip needs: take an idle connection, send every command of the operation in one write,
read the replies, give the connection back. A connection that failed or was interrupted by a
deadline is dropped (its replies may still be on the way), never reused.

A store is one round trip. The record of a response that varies and its primary key's index
are written by one Lua script (`PUT_VARIANT`), which reads the index, keeps its generation when
its fields are the same and writes both; EVAL (not EVALSHA) so a Redis restarted empty needs no
script reloading.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from yarl import URL

# KEYS[1] primary key. ARGV: record, record ttl ms, variant key head, variant key tail, new
# generation, now, until, field names... The index is msgspec's `Index` as an array:
# ["i", fields, generation, until].
PUT_VARIANT = """
local gen, untl, now = ARGV[5], tonumber(ARGV[7]), tonumber(ARGV[6])
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, old = pcall(cmsgpack.unpack, raw)
  if ok and type(old) == 'table' and old[1] == 'i' and type(old[2]) == 'table'
      and #old[2] == #fields and type(old[3]) == 'string' and type(old[4]) == 'number' then
    local same = true
    for i = 1, #fields do if old[2][i] ~= fields[i] then same = false end end
    if same then
      gen = old[3]
      if old[4] > untl then untl = old[4] end
    end
  end
end
redis.call('SET', ARGV[3] .. gen .. ARGV[4], ARGV[1], 'PX', ARGV[2])
local index_ms = math.max(1, math.floor((untl - now) * 1000))
redis.call('SET', KEYS[1], cmsgpack.pack({'i', fields, gen, untl + 0.0}), 'PX', index_ms)
return gen
"""


@dataclass(frozen=True, slots=True)
class VaryPut:
    """The variant part of a store: the variant key is `head + generation + tail`."""

    fields: tuple[str, ...]
    head: str
    tail: str
    generation: str  # used when the index holds none for these fields
    now: float
    until: float


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

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write on one connection and read their replies."""
        await self._slots.acquire()
        conn = self._idle.pop() if self._idle else self.connection_class(**self.kwargs)
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
            self._slots.release()

    def _drop(self, conn: Any) -> None:
        task = asyncio.ensure_future(conn.disconnect(nowait=True))
        self._dropped.add(task)
        task.add_done_callback(self._dropped.discard)

    async def get(self, key: str) -> bytes | None:
        (value,) = await self._run([("GET", key)])
        return value  # type: ignore[no-any-return]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._run([("SET", key, value, "PX", ms(ttl_s))])

    async def put(self, pkey: str, record: bytes, ttl_s: float, vary: VaryPut | None) -> None:
        if vary is None:
            await self._run([("SET", pkey, record, "PX", ms(ttl_s))])
            return
        args = (record, ms(ttl_s), vary.head, vary.tail, vary.generation, repr(vary.now),
                repr(vary.until), *vary.fields)  # fmt: skip
        await self._run([("EVAL", PUT_VARIANT, 1, pkey, *args)])

    async def delete(self, key: str) -> None:
        await self._run([("DEL", key)])

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().disconnect()
        if self._dropped:
            await asyncio.gather(*self._dropped, return_exceptions=True)
