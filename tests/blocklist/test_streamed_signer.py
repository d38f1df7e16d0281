"""`write_full_version_streamed`: a full version signed without holding its entries (issue 12:
100M entries are ~14 GB of lines). It must write what `write_version` writes for the same
entries, refuse what it refuses, and leave nothing behind when it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.blocklist.format import (
    BlocklistError,
    read_version,
    render_version,
    version_filename,
    write_full_version_streamed,
)
from proxy.blocklist.model import Entry, EntryType, InvalidEntry

MAX = 1 << 24


def mixed(n: int) -> list[Entry]:
    kinds = [
        (EntryType.URL, "http://a.example/u/{i}?q={i}"),
        (EntryType.PREFIX, "http://b.example/p/{i}/"),
        (EntryType.HOST, "h{i}.example"),
        (EntryType.SHA256, "{i:064x}"),
    ]
    return [
        Entry(f"id-{i}", kinds[i % 4][0], kinds[i % 4][1].format(i=i), f"N-{i}", "r")
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [0, 1, 7, 3000])
def test_the_same_bytes_as_the_whole_version_writer(
    tmp_path: Path, keys: tuple[bytes, bytes], n: int
) -> None:
    private, public = keys
    entries = mixed(n)
    path = tmp_path / version_filename(3)
    seen: list[int] = []
    header = write_full_version_streamed(
        path, 3, iter(entries), private_key_pem=private, created_at=1000.0, progress=seen.append
    )
    assert header.entries == n and seen[-1] == n
    whole = render_version(3, entries, private_key_pem=private, created_at=1000.0)
    assert path.read_bytes() == whole  # Ed25519 signatures are deterministic
    version = read_version(path, public, max_bytes=MAX)
    assert [e.id for e in version.adds] == [e.id for e in entries]
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporaries left


@pytest.mark.parametrize("at", [1, 1500, 2999])
def test_a_repeated_id_is_refused_and_nothing_is_written(
    tmp_path: Path, keys: tuple[bytes, bytes], at: int
) -> None:
    entries = mixed(3000)
    entries.insert(at + 1, entries[at])
    path = tmp_path / version_filename(1)
    with pytest.raises(InvalidEntry, match="duplicate id") as refused:
        write_full_version_streamed(path, 1, iter(entries), private_key_pem=keys[0])
    assert refused.value.entry_id == entries[at].id
    assert os.listdir(tmp_path) == []


def test_an_invalid_entry_is_refused_and_nothing_is_written(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    entries = [*mixed(10), Entry("bad", EntryType.SHA256, "not-hex", "N", "r")]
    with pytest.raises(InvalidEntry):
        write_full_version_streamed(tmp_path / "v.jsonl", 1, iter(entries), private_key_pem=keys[0])
    assert os.listdir(tmp_path) == []


def test_a_version_another_key_signed_is_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    from proxy.blocklist.format import generate_keypair

    path = tmp_path / version_filename(1)
    write_full_version_streamed(path, 1, iter(mixed(5)), private_key_pem=generate_keypair()[0])
    with pytest.raises(BlocklistError, match="wrong key"):
        read_version(path, keys[1], max_bytes=MAX)
