"""The takedown service's side of the feed (proxy/fleet/ack.py `FleetFeed.sync`), on a real
redis-server: every node's delivery and the resync loop call it, so a pass with nothing new
must read nothing, and a pass with something new must verify only that; a feed emptied by a
Redis restart still gets the whole chain back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.blocklist import format as blformat
from proxy.config import FleetConfig
from proxy.fleet import feed
from proxy.fleet.ack import FleetFeed
from proxy.takedown.publisher import FileDrop
from tests.fleet.conftest import entry
from tests.redis_server import RedisServer


async def test_sync_verifies_only_what_the_feed_lacks(
    redis_server: RedisServer,
    signing: tuple[bytes, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private, _ = signing
    drop = FileDrop(tmp_path / "drop", private)
    verified: list[int] = []
    parse = blformat.parse_version

    def counting(data: bytes, *args: Any, **kw: Any) -> blformat.Version:
        v = parse(data, *args, **kw)
        verified.append(v.sequence)
        return v

    monkeypatch.setattr(feed.blformat, "parse_version", counting)
    drop.write(1, [entry("a", "/a/")])
    drop.write(2, [entry("b", "/b/")], base=1)
    ff = FleetFeed(FleetConfig(redis_url=redis_server.url), drop)
    try:
        assert await ff.sync() == [1, 2]
        verified.clear()
        assert await ff.sync() == [] and verified == []  # nothing new: nothing read
        drop.write(3, [entry("c", "/c/")], base=2)
        assert await ff.sync() == [3] and verified == [3]  # only what the feed lacks
        redis_server.restart(empty=True)
        try:
            got = await ff.sync()
        except redis.ConnectionError:  # the client's old connection died with the server
            got = await ff.sync()
        assert got == [1, 2, 3]  # an emptied feed gets the whole chain again
    finally:
        await ff.close()
