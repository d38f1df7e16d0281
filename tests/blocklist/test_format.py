"""Signed version files: what is accepted, and every refusal naming file, line and reason."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from proxy.blocklist.format import (
    BlocklistError,
    Version,
    apply_chain,
    generate_keypair,
    key_id,
    load_newest,
    read_version,
    render_version,
    signature_line,
    version_filename,
    write_version,
)
from proxy.blocklist.model import Entry, EntryType

MAX = 1 << 20

ENTRIES = [
    Entry("n-1", EntryType.URL, "http://demo.local/blocked/a.html", notice="N-1", reason="x"),
    Entry("n-2", EntryType.PREFIX, "http://demo.local/blocked/", expires_at=4e9),
    Entry("n-3", EntryType.HOST, "pirate.example"),
    Entry("n-4", EntryType.SHA256, "ab" * 32),
]


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[bytes, bytes]) -> Path:
    path = tmp_path / version_filename(1)
    write_version(path, 1, ENTRIES, private_key_pem=keys[0], created_at=1700000000.0)
    return path


def refusal(path: Path, public: bytes, max_bytes: int = MAX) -> BlocklistError:
    with pytest.raises(BlocklistError) as info:
        read_version(path, public, max_bytes=max_bytes)
    err = info.value
    assert str(err).startswith(f"{path}:{err.line}: ")
    return err


def sign_raw(private: bytes, header: dict[str, object], lines: list[bytes]) -> bytes:
    body = json.dumps(header).encode() + b"\n" + b"".join(line + b"\n" for line in lines)
    return body + signature_line(body, private)


def test_round_trip(signed: Path, keys: tuple[bytes, bytes]) -> None:
    v = read_version(signed, keys[1], max_bytes=MAX)
    assert (v.sequence, v.base, v.removes, v.created_at) == (1, None, (), 1700000000.0)
    assert v.adds == tuple(ENTRIES)
    assert v.key_id == key_id(keys[1]) and v.path == str(signed)
    lines = signed.read_bytes().split(b"\n")
    assert json.loads(lines[0])["format"] == "edgeproxy-blocklist/1"
    assert json.loads(lines[1])["op"] == "add"
    assert v.sha256 == hashlib.sha256(b"".join(x + b"\n" for x in lines[1:5])).hexdigest()
    assert oct(signed.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in signed.parent.iterdir()] == [signed.name]  # no temp file left


def test_every_tampered_byte_is_refused(signed: Path, keys: tuple[bytes, bytes]) -> None:
    data = signed.read_bytes()
    n_lines = data.count(b"\n")
    for i in range(0, len(data), 7):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        signed.write_bytes(bytes(tampered))
        err = refusal(signed, keys[1])
        assert err.line == n_lines, (i, err)
        assert any(
            word in err.reason
            for word in ("bad signature", "signature line", "wrong key", "base64")
        ), err


def test_wrong_key(signed: Path) -> None:
    _, other_public = generate_keypair()
    err = refusal(signed, other_public)
    assert err.line == 6 and "wrong key" in err.reason


def test_same_key_id_but_other_key_is_a_bad_signature(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    other_private, _ = generate_keypair()
    body = render_version(1, ENTRIES, private_key_pem=other_private)
    lines = body.split(b"\n")
    forged = json.loads(lines[-2])
    forged["key_id"] = key_id(keys[1])
    path = tmp_path / "forged.jsonl"
    path.write_bytes(b"\n".join(lines[:-2]) + b"\n" + json.dumps(forged).encode() + b"\n")
    err = refusal(path, keys[1])
    assert err.line == 6 and "bad signature" in err.reason


def test_unsigned(tmp_path: Path, keys: tuple[bytes, bytes], signed: Path) -> None:
    path = tmp_path / "unsigned.jsonl"
    path.write_bytes(b"".join(x + b"\n" for x in signed.read_bytes().split(b"\n")[:-2]))
    err = refusal(path, keys[1])
    assert err.line == 5 and "unsigned or truncated" in err.reason
    path.write_bytes(b"")
    assert "empty file" in refusal(path, keys[1]).reason


def test_truncated(tmp_path: Path, signed: Path, keys: tuple[bytes, bytes]) -> None:
    data = signed.read_bytes()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(data[: len(data) // 2])
    err = refusal(path, keys[1])
    assert "truncated" in err.reason and err.line == data[: len(data) // 2].count(b"\n") + 1
    path.write_bytes(data[:-1])
    assert "truncated" in refusal(path, keys[1]).reason


def test_oversized(signed: Path, keys: tuple[bytes, bytes]) -> None:
    err = refusal(signed, keys[1], max_bytes=signed.stat().st_size - 1)
    assert err.line == 0 and "larger than max_bytes" in err.reason
    read_version(signed, keys[1], max_bytes=signed.stat().st_size)


def test_missing_file(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    err = refusal(tmp_path / "nope.jsonl", keys[1])
    assert err.line == 0 and "cannot read" in err.reason


HEADER = {
    "format": "edgeproxy-blocklist/1",
    "sequence": 3,
    "base": None,
    "created_at": 0.0,
    "entries": 1,
}


@pytest.mark.parametrize(
    ("header", "line", "want_line", "reason"),
    [
        ({}, b'{"op":"add","id":"a","type":"host","value":"e.com"', 2, "malformed entry line"),
        ({}, b'{"op":"add","id":"a","type":"regex","value":"e.com"}', 2, "malformed entry line"),
        ({}, b'{"op":"add","id":"a","type":"host","value":"e.com","x":1}', 2, "malformed"),
        ({}, b'{"op":"add","id":"a","type":"sha256","value":"zz"}', 2, "64 hexadecimal"),
        ({}, b'{"op":"add","id":"a","type":"url","value":"http:///x"}', 2, "no host"),
        ({}, b'{"op":"remove","id":"a"}', 2, "full version (base null) cannot remove"),
        ({"format": "other/9"}, b'{"op":"remove","id":"a"}', 1, "unknown format"),
        ({"entries": 2}, b'{"op":"add","id":"a","type":"host","value":"e.com"}', 1, "header says"),
        ({"sha256": "0" * 64}, b'{"op":"add","id":"a","type":"host","value":"e.com"}', 1, "sha256"),
        ({"sequence": "3"}, b'{"op":"add","id":"a","type":"host","value":"e.com"}', 1, "header"),
        ({"base": 3}, b'{"op":"remove","id":"a"}', 1, "base must be an earlier sequence"),
    ],
)
def test_invalid_content_is_refused_at_its_line(
    tmp_path: Path,
    keys: tuple[bytes, bytes],
    header: dict[str, object],
    line: bytes,
    want_line: int,
    reason: str,
) -> None:
    full = dict(HEADER, sha256=hashlib.sha256(line + b"\n").hexdigest())
    full.update(header)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(sign_raw(keys[0], full, [line]))
    err = refusal(path, keys[1])
    assert err.line == want_line and reason in err.reason, err


def test_duplicate_ids_are_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    line = b'{"op":"add","id":"a","type":"host","value":"e.com"}'
    full = dict(HEADER, entries=2, sha256=hashlib.sha256((line + b"\n") * 2).hexdigest())
    path = tmp_path / "dup.jsonl"
    path.write_bytes(sign_raw(keys[0], full, [line, line]))
    err = refusal(path, keys[1])
    assert err.line == 3 and "duplicate id" in err.reason


def test_writer_refuses_what_the_reader_would(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    path = tmp_path / "x.jsonl"
    with pytest.raises(ValueError, match="cannot remove"):
        write_version(path, 1, [], removes=["a"], private_key_pem=keys[0])
    with pytest.raises(ValueError, match="64 hexadecimal"):
        write_version(path, 1, [Entry("a", EntryType.SHA256, "1")], private_key_pem=keys[0])
    with pytest.raises(ValueError, match="earlier sequence"):
        write_version(path, 2, [], base=2, private_key_pem=keys[0])
    assert list(tmp_path.iterdir()) == []


# -- a directory of versions ---------------------------------------------------------------


def write(d: Path, keys: tuple[bytes, bytes], seq: int, entries: list[Entry], **kw: object) -> Path:
    path = d / version_filename(seq)
    write_version(path, seq, entries, private_key_pem=keys[0], **kw)  # type: ignore[arg-type]
    return path


def ids(result: tuple[list[Entry], int] | None) -> tuple[set[str], int] | None:
    return None if result is None else ({e.id for e in result[0]}, result[1])


def test_load_newest_applies_deltas(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    write(tmp_path, keys, 1, ENTRIES[:2])
    write(tmp_path, keys, 2, ENTRIES[2:3], base=1, removes=["n-1"])
    write(tmp_path, keys, 3, [ENTRIES[3], Entry("n-2", EntryType.HOST, "x.example")], base=2)
    (tmp_path / "notes.txt").write_text("ignored")
    result, errors = load_newest(tmp_path, keys[1], current_sequence=None, max_bytes=MAX)
    assert errors == [] and ids(result) == ({"n-2", "n-3", "n-4"}, 3)
    assert result is not None
    assert {e.id: e for e in result[0]}["n-2"].type == EntryType.HOST  # replaced by the delta
    assert load_newest(tmp_path, keys[1], current_sequence=3, max_bytes=MAX) == (None, [])
    result, _ = load_newest(tmp_path, keys[1], current_sequence=2, max_bytes=MAX)
    assert ids(result) == ({"n-2", "n-3", "n-4"}, 3)


def test_apply_chain_lets_the_newer_version_win() -> None:
    a, b, c = ENTRIES[:3]
    b2 = Entry(b.id, EntryType.HOST, "b.example")

    def version(sequence: int, base: int | None, adds: list[Entry], removes: list[str]) -> Version:
        return Version(f"v{sequence}", sequence, base, tuple(adds), tuple(removes), "", 0.0, "k")

    full = version(1, None, [a, b], [])
    delta = version(2, 1, [b2, c], [a.id])
    readd = version(3, 2, [a], [c.id])
    assert apply_chain([full]) == [a, b]
    assert apply_chain([delta, full]) == [b2, c]
    assert apply_chain([readd, delta, full]) == [b2, a]


def test_older_sequence_is_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    path = write(tmp_path, keys, 3, ENTRIES)
    result, errors = load_newest(tmp_path, keys[1], current_sequence=5, max_bytes=MAX)
    assert result is None and len(errors) == 1
    assert errors[0].file == str(path) and errors[0].line == 1
    assert "older than the enforced sequence 5" in errors[0].reason


def test_bad_newest_falls_back_and_is_reported(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    write(tmp_path, keys, 1, ENTRIES)
    bad = write(tmp_path, keys, 2, ENTRIES[:1])
    data = bytearray(bad.read_bytes())
    data[40] ^= 0x01
    bad.write_bytes(bytes(data))
    result, errors = load_newest(tmp_path, keys[1], current_sequence=None, max_bytes=MAX)
    assert ids(result) == ({"n-1", "n-2", "n-3", "n-4"}, 1)
    assert [(e.file, "bad signature" in e.reason) for e in errors] == [(str(bad), True)]
    result, errors = load_newest(tmp_path, keys[1], current_sequence=1, max_bytes=MAX)
    assert result is None and len(errors) == 1


def test_delta_without_its_base(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    write(tmp_path, keys, 1, ENTRIES[:1])
    delta = write(tmp_path, keys, 4, ENTRIES[1:2], base=3)
    result, errors = load_newest(tmp_path, keys[1], current_sequence=None, max_bytes=MAX)
    assert ids(result) == ({"n-1"}, 1)
    assert len(errors) == 1 and errors[0].file == str(delta)
    assert "base sequence 3 not found" in errors[0].reason


def test_unparseable_files_are_reported_and_dotfiles_ignored(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    write(tmp_path, keys, 1, ENTRIES[:1])
    (tmp_path / "junk.jsonl").write_bytes(b"not json\n")
    (tmp_path / ".blocklist-0000000009.jsonl.tmp").write_bytes(b"partial")
    os.mkdir(tmp_path / "sub.jsonl")
    result, errors = load_newest(tmp_path, keys[1], current_sequence=None, max_bytes=MAX)
    assert ids(result) == ({"n-1"}, 1)
    assert [Path(e.file).name for e in errors] == ["junk.jsonl"]
    assert load_newest(tmp_path / "missing", keys[1], current_sequence=None, max_bytes=MAX) == (
        None,
        [],
    )
