"""The optional `audit_head` header field: a publisher's signed statement that travels with a
version. Versions without it are unchanged byte for byte; with it, it is signed with the rest
and returned by the reader and the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.blocklist.format import (
    BlocklistError,
    LoadInfo,
    generate_keypair,
    load_newest,
    read_version,
    render_version,
    version_filename,
    write_version,
)
from proxy.blocklist.model import Entry, EntryType

ENTRY = Entry("a", EntryType.URL, "http://example.com/a")
HEAD: dict[str, str | int | float] = {"seq": 7, "hash": "ab" * 32, "at": 1.5, "key_id": "k"}


def test_absent_field_leaves_the_file_as_before() -> None:
    private, _ = generate_keypair()
    data = render_version(1, [ENTRY], private_key_pem=private, created_at=1.0)
    assert b"audit_head" not in data


def test_round_trip_through_reader_and_loader(tmp_path: Path) -> None:
    private, public = generate_keypair()
    write_version(tmp_path / version_filename(1), 1, [ENTRY], private_key_pem=private)
    write_version(
        tmp_path / version_filename(2), 2, [], base=1, private_key_pem=private, audit_head=HEAD
    )
    assert (
        read_version(tmp_path / version_filename(1), public, max_bytes=1 << 20).audit_head is None
    )
    assert (
        read_version(tmp_path / version_filename(2), public, max_bytes=1 << 20).audit_head == HEAD
    )
    info = LoadInfo()
    found, errors = load_newest(
        tmp_path, public, current_sequence=None, max_bytes=1 << 20, info=info
    )
    assert found is not None and found[1] == 2 and not errors
    assert info.audit_head == HEAD


def test_the_field_is_signed(tmp_path: Path) -> None:
    private, public = generate_keypair()
    path = tmp_path / version_filename(1)
    write_version(path, 1, [ENTRY], private_key_pem=private, audit_head=HEAD)
    path.write_bytes(path.read_bytes().replace(b'"seq":7', b'"seq":8'))
    with pytest.raises(BlocklistError, match="bad signature"):
        read_version(path, public, max_bytes=1 << 20)


def test_nested_or_oversized_heads_are_refused(tmp_path: Path) -> None:
    private, public = generate_keypair()
    path = tmp_path / version_filename(1)
    many: dict[str, str | int | float] = {f"k{i}": i for i in range(17)}
    write_version(path, 1, [ENTRY], private_key_pem=private, audit_head=many)
    with pytest.raises(BlocklistError, match="more than 16 fields"):
        read_version(path, public, max_bytes=1 << 20)
