"""The node's file layer: require_valid_until, staleness, and the enforced hash it remembers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.blocklist.format import version_filename, write_version
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import NodeBlocklist, StartupRefused
from proxy.config import BlocklistConfig, Config

A = [Entry("a", EntryType.URL, "http://demo.local/a")]


async def no_workers(_op: str, _args: dict[str, Any]) -> list[dict[str, Any]]:
    return []


def node(tmp_path: Path, keys: tuple[bytes, bytes], **bl: Any) -> NodeBlocklist:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(keys[1])
    (tmp_path / "lists").mkdir(exist_ok=True)
    cfg = msgspec.structs.replace(
        Config(), blocklist=BlocklistConfig(dir=str(tmp_path / "lists"), public_key=str(pub), **bl)
    )
    return NodeBlocklist(cfg, tmp_path / "state", no_workers)


def test_require_valid_until_refuses_unbounded_versions(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    (tmp_path / "lists").mkdir()
    write_version(tmp_path / "lists" / version_filename(1), 1, A, private_key_pem=keys[0])
    bl = node(tmp_path, keys, require_valid_until=True)
    with pytest.raises(StartupRefused, match="require_valid_until"):
        bl.load_initial()


def test_require_valid_until_accepts_bounded_versions(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    (tmp_path / "lists").mkdir()
    write_version(
        tmp_path / "lists" / version_filename(1),
        1,
        A,
        private_key_pem=keys[0],
        valid_until=time.time() + 60,
    )
    bl = node(tmp_path, keys, require_valid_until=True)
    bl.load_initial()
    assert bl.file_sequence == 1 and bl.file_sha256
    assert bl.stale_since() is None
    assert bl.valid_until is not None
    assert bl.stale_since(now=bl.valid_until + 1) == bl.valid_until


def test_list_without_valid_until_is_never_stale(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    (tmp_path / "lists").mkdir()
    write_version(tmp_path / "lists" / version_filename(1), 1, A, private_key_pem=keys[0])
    bl = node(tmp_path, keys)
    bl.load_initial()
    assert bl.stale_since(now=1e12) is None
