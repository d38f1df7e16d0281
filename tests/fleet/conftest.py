"""A fleet under test: a real redis-server, real edge nodes (`edgeproxy serve --fleet`), a
publisher signing versions into the feed, and a relay that can cut one node off from Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.blocklist.format import generate_keypair, render_version
from proxy.blocklist.model import Entry, EntryType
from proxy.config import FleetConfig
from proxy.fleet import feed
from proxy.fleet.feed import Keys
from tests.integration.conftest import free_port, origin_server  # noqa: F401 - fixture by name
from tests.integration.node import Node, metric, readyz  # noqa: F401 - for the fleet tests
from tests.integration.node import eventually as node_eventually
from tests.redis_server import RedisServer

FAST = """
[fleet]
redis_url = "{url}"
node_name = "{name}"
connect_timeout_s = 0.5
block_s = 0.5
read_timeout_s = 0.5
backoff_initial_s = 0.05
backoff_max_s = 0.3
ready_grace_s = 0.0
"""


def entry(i: str, path: str) -> Entry:
    return Entry(
        id=i, type=EntryType.PREFIX, value=f"http://127.0.0.1{path}", notice=f"N-{i}", reason="test"
    )


def origin_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"content of {request.path}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


class Publisher:
    """Signs versions and appends them to the feed, as the takedown service does."""

    def __init__(self, url: str, private: bytes) -> None:
        self.url = url
        self.private = private
        self.keys = Keys()

    def render(
        self,
        seq: int,
        adds: list[Entry],
        *,
        base: int | None = None,
        removes: list[str] | None = None,
        key: bytes | None = None,
    ) -> bytes:
        return render_version(
            seq, adds, base=base, removes=removes or [], private_key_pem=key or self.private
        )

    async def redis(self) -> Any:
        return feed.connect(FleetConfig(redis_url=self.url))

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """A client of the feed's server for one block of calls, closed after it."""
        r = await self.redis()
        try:
            yield r
        finally:
            await r.aclose()

    async def publish(
        self,
        seq: int,
        adds: list[Entry],
        *,
        base: int | None = None,
        removes: list[str] | None = None,
    ) -> bytes:
        data = self.render(seq, adds, base=base, removes=removes)
        async with self.client() as r:
            await feed.publish(r, self.keys, data)
        return data

    async def xadd_raw(self, fields: dict[str, Any]) -> None:
        """Straight into the stream, past the publish script: what an attacker with write
        access to Redis could do."""
        async with self.client() as r:
            await r.xadd(self.keys.stream, fields)

    async def acks(self, seq: int) -> dict[str, float]:
        async with self.client() as r:
            got = await r.hgetall(self.keys.acks(seq))
        return {k.decode(): float(v) for k, v in got.items()}


@pytest.fixture
def signing(tmp_path: Path) -> tuple[bytes, Path]:
    private, public = generate_keypair()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public)
    return private, pub


@pytest.fixture
async def fleet_nodes() -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    yield started
    for n in started:
        await n.stop()


def fleet_config(path: Path, name: str, url: str, origin: str, pub: Path, fleet: str = "") -> Path:
    """A node's config file following the feed at `url` as `name`; `fleet`: more lines for its
    [fleet] section (credentials, TLS)."""
    path.write_text(
        f'[[sites]]\nname = "default"\nhosts = ["*"]\norigin = "{origin}"\n\n'
        f'[blocklist]\npublic_key = "{pub}"\n' + FAST.format(url=url, name=name) + fleet
    )
    return path


def fleet_node(
    tmp_path: Path, name: str, url: str, origin: str, pub: Path, *extra: str, fleet: str = ""
) -> Node:
    """`fleet`: more lines for its [fleet] section (credentials, TLS)."""
    cfg = fleet_config(tmp_path / f"{name}.toml", name, url, origin, pub, fleet)
    return Node(["--config", str(cfg), "--workers", "1", *extra])


@dataclass
class Fleet:
    """One test's fleet: a redis-server, an origin, a signing key, the publisher of the feed on
    that server, and the nodes `node()` started (stopped after the test)."""

    redis: RedisServer
    origin: str
    pub: Path
    publisher: Publisher
    tmp_path: Path
    nodes: list[Node]

    async def node(
        self, name: str = "edge", *extra: str, url: str = "", start: bool = True
    ) -> Node:
        """A node following this fleet's feed (or `url`, e.g. a Relay's), started unless
        `start=False`."""
        n = fleet_node(self.tmp_path, name, url or self.redis.url, self.origin, self.pub, *extra)
        self.nodes.append(n)
        if start:
            await n.start()
        return n


@pytest.fixture
async def fleet(
    redis_server: RedisServer,
    origin_server: Any,  # noqa: F811 - the fixture imported above, by name
    signing: tuple[bytes, Path],
    fleet_nodes: list[Node],
    tmp_path: Path,
) -> Fleet:
    private, pub = signing
    origin = await origin_server(origin_app())
    return Fleet(
        redis_server, origin, pub, Publisher(redis_server.url, private), tmp_path, fleet_nodes
    )


async def status(url: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            await r.read()
            return r.status


async def eventually(check: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    """`tests.integration.node.eventually` with the fleet's longer default deadline."""
    await node_eventually(check, timeout_s, what)


async def acknowledged(
    publisher: Publisher, node: str, *seqs: int, timeout_s: float = 15.0
) -> None:
    """Until `node` has acknowledged every version in `seqs` on the feed. A worker answering
    by a version comes before its node counts it (applied by every worker, its file kept:
    `edgeproxy_fleet_applied`, `edgeproxy_fleet_version`) and acknowledges it, so a test reads
    those after this, not after a status alone."""

    async def all_acked() -> bool:
        for seq in seqs:
            if node not in await publisher.acks(seq):
                return False
        return True

    await eventually(all_acked, timeout_s, f"{node} acknowledging versions {seqs}")


async def eventually_status(url: str, want: int, timeout_s: float = 15.0) -> None:
    async def check() -> bool:
        return await status(url) == want

    await eventually(check, timeout_s, f"{url} answering {want}")


class Relay:
    """A TCP relay on 127.0.0.1 between one node and Redis. `cut()` partitions: open
    connections stop moving bytes and new ones are accepted but never answered (packets
    dropped, as a real partition does); `heal()` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if not self.open:
                await reader.read()  # a black hole: nothing answers
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(up_w)
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except OSError:
            pass
        finally:
            for w in (writer,):
                w.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                while not self.open:  # hold the bytes: a partition, not a reset
                    await asyncio.sleep(0.02)
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(Exception):
                w.close()

    def cut(self) -> None:
        self.open = False

    def heal(self) -> None:
        self.open = True
        for w in list(self._writers):  # connections held across the cut are dropped
            w.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
