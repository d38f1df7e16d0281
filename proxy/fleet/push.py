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
from typing import Any

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


async def push_entries(
    cfg: FleetConfig, entries: list[Entry], private_key_pem: bytes, *, max_delta_chain: int = 64
) -> int:
    """Sign `entries` into the version after the feed's head and publish it; its sequence.
    A delta, or a full version (everything the feed holds, plus `entries`) once the feed's
    head rests on `max_delta_chain` versions: that bounds what a node replays and lets the
    stream be trimmed."""
    keys = feed.Keys(cfg.key_prefix)
    r = feed.connect(cfg)
    try:
        head, _ = await feed.read_head(r, keys)
        seq = head + 1
        chain = await _feed_chain(r, keys, private_key_pem) if head else []
        if head and len(chain) < max_delta_chain:
            data = blformat.render_version(seq, entries, base=head, private_key_pem=private_key_pem)
        else:
            held = {e.id: e for e in blformat.apply_chain(chain)} if chain else {}
            held.update((e.id, e) for e in entries)
            data = blformat.render_version(
                seq, list(held.values()), private_key_pem=private_key_pem
            )
        await feed.publish(r, keys, data)
        return seq
    finally:
        await r.aclose()


async def _feed_chain(r: Any, keys: feed.Keys, private_key_pem: bytes) -> list[blformat.Version]:
    """The feed's full version and the deltas after it, newest first (as `apply_chain` takes
    them), each verified with the key that signs the next: what the new version rests on."""
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(private_key_pem, password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    full = await feed.read_full(r, keys)
    if full is None:
        raise feed.FeedError("the feed has a head but no full version; publish a full one")
    chain = [blformat.parse_version(full.data, f"{keys.full}", public)]
    for entry_id, fields in await r.xrange(keys.stream, min=full.id):
        source = f"{keys.stream}#{feed._s(entry_id)}"
        try:  # what a node would refuse is no base to build on either
            v = blformat.parse_version(bytes(fields.get(b"data", b"")), source, public)
        except blformat.BlocklistError:
            continue
        if v.base is None and v.sequence > chain[-1].sequence:
            chain = [v]
        elif v.base == chain[-1].sequence:
            chain.append(v)
    return list(reversed(chain))
