"""`edgeproxy blocklist push --fleet URL`: an operator publishing to the fleet feed by hand.

Two ways, as with a file drop: signed version files (made by `blocklist sign`, or a directory
of them: its newest chain is published), or entries signed here into the next version on the
feed's head (a delta, or a full version when the feed is empty). Either way the publish script
refuses a version that is not newer than the head or does not rest on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from proxy.blocklist import format as blformat
from proxy.blocklist.model import Entry
from proxy.config import FleetConfig
from proxy.fleet import feed


async def push_versions(
    cfg: FleetConfig, paths: Sequence[str], public_key_pem: bytes | None
) -> list[int]:
    """Publish version files (verified first when a public key is given) or a directory's
    newest chain; the sequences published."""
    keys = feed.Keys(cfg.key_prefix)
    r = feed.connect(cfg)
    try:
        published: list[int] = []
        files: list[tuple[int, bytes]] = []
        for path in paths:
            p = Path(path)
            if p.is_dir():
                if public_key_pem is None:
                    raise feed.FeedError(f"{p}: a directory needs --key to find its newest chain")
                chain = await asyncio.to_thread(feed.newest_chain, p, public_key_pem)
                if not chain:
                    raise feed.FeedError(f"{p}: no valid version")
                published += await feed.publish_chain(r, keys, chain)
                continue
            data = p.read_bytes()
            if public_key_pem is not None:
                v = blformat.parse_version(data, p, public_key_pem)
                files.append((v.sequence, data))
            else:
                files.append((feed.claims(data)[0], data))
        for seq, data in sorted(files):
            await feed.publish(r, keys, data)
            published.append(seq)
        return published
    finally:
        await r.aclose()


async def push_entries(cfg: FleetConfig, entries: list[Entry], private_key_pem: bytes) -> int:
    """Sign `entries` into the version after the feed's head and publish it; its sequence."""
    keys = feed.Keys(cfg.key_prefix)
    r = feed.connect(cfg)
    try:
        head, _ = await feed.read_head(r, keys)
        seq = head + 1
        data = blformat.render_version(
            seq, entries, base=head or None, private_key_pem=private_key_pem
        )
        await feed.publish(r, keys, data)
        return seq
    finally:
        await r.aclose()
