"""Issue 10, "The signed feed": bounded sequences, bounded jumps, a conflicting file at the
enforced sequence, and the signed valid_until that lets a node notice a frozen feed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest

from proxy.blocklist.cli import main
from proxy.blocklist.format import (
    FORMAT_TAG,
    MAX_SEQUENCE,
    LoadInfo,
    load_newest,
    read_version,
    signature_line,
    version_filename,
    write_version,
)
from proxy.blocklist.model import Entry, EntryType

MAX = 1 << 20
A = [Entry("a", EntryType.URL, "http://demo.local/a")]
B = [Entry("b", EntryType.URL, "http://demo.local/b")]


def forge(path: Path, private: bytes, header: dict[str, object]) -> Path:
    """A validly signed file whose header the signing helper would refuse to write."""
    body = b""
    full = {
        "format": FORMAT_TAG,
        "base": None,
        "created_at": 1.0,
        "entries": 0,
        "sha256": hashlib.sha256(body).hexdigest(),
        **header,
    }
    signed = json.dumps(full).encode() + b"\n" + body
    path.write_bytes(signed + signature_line(signed, private))
    return path


@pytest.mark.parametrize("seq", [2**64, 2**63, MAX_SEQUENCE + 1, 10**30])
def test_absurd_sequence_is_refused_even_when_signed(
    tmp_path: Path, keys: tuple[bytes, bytes], seq: int
) -> None:
    good = tmp_path / version_filename(3)
    write_version(good, 3, A, private_key_pem=keys[0])
    bad = forge(tmp_path / "blocklist-huge.jsonl", keys[0], {"sequence": seq})
    result, errors = load_newest(tmp_path, keys[1], current_sequence=None, max_bytes=MAX)
    assert result is not None and result[1] == 3  # the good one is enforced
    assert any(e.file == str(bad) and "sequence must be" in e.reason for e in errors)


def test_max_sequence_itself_is_accepted(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    p = tmp_path / version_filename(MAX_SEQUENCE)
    write_version(p, MAX_SEQUENCE, A, private_key_pem=keys[0])
    assert read_version(p, keys[1], max_bytes=MAX).sequence == MAX_SEQUENCE
    with pytest.raises(ValueError):
        write_version(tmp_path / "x.jsonl", MAX_SEQUENCE + 1, A, private_key_pem=keys[0])


@pytest.mark.parametrize(
    ("jump", "accepted"), [(10, True), (100, True), (101, False), (10**9, False)]
)
def test_sequence_step_is_bounded(
    tmp_path: Path, keys: tuple[bytes, bytes], jump: int, accepted: bool
) -> None:
    p = tmp_path / version_filename(5 + jump)
    write_version(p, 5 + jump, B, private_key_pem=keys[0])
    result, errors = load_newest(
        tmp_path, keys[1], current_sequence=5, max_bytes=MAX, max_sequence_step=100
    )
    if accepted:
        assert result is not None and result[1] == 5 + jump and errors == []
    else:
        assert result is None
        assert len(errors) == 1 and errors[0].file == str(p)
        assert "max_sequence_step is 100" in errors[0].reason


def test_a_refused_jump_falls_back_to_a_reasonable_newer_version(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    write_version(tmp_path / version_filename(6), 6, B, private_key_pem=keys[0])
    write_version(tmp_path / version_filename(10**12), 10**12, A, private_key_pem=keys[0])
    result, errors = load_newest(
        tmp_path, keys[1], current_sequence=5, max_bytes=MAX, max_sequence_step=1000
    )
    assert result is not None and result[1] == 6
    assert len(errors) == 1 and "jumps" in errors[0].reason


@pytest.mark.parametrize("entries", [B, [], A + B])
def test_different_file_at_enforced_sequence_is_reported_with_both_hashes(
    tmp_path: Path, keys: tuple[bytes, bytes], entries: list[Entry]
) -> None:
    first = tmp_path / "first" / version_filename(4)
    first.parent.mkdir()
    write_version(first, 4, A, private_key_pem=keys[0])
    enforced = read_version(first, keys[1], max_bytes=MAX).sha256
    other = tmp_path / version_filename(4)
    write_version(other, 4, entries, private_key_pem=keys[0])
    theirs = read_version(other, keys[1], max_bytes=MAX).sha256
    result, errors = load_newest(
        tmp_path, keys[1], current_sequence=4, current_sha256=enforced, max_bytes=MAX
    )
    assert result is None and len(errors) == 1
    assert errors[0].file == str(other)
    assert enforced in errors[0].reason and theirs in errors[0].reason


def test_same_file_at_enforced_sequence_is_quiet(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    p = tmp_path / version_filename(4)
    write_version(p, 4, A, private_key_pem=keys[0])
    digest = read_version(p, keys[1], max_bytes=MAX).sha256
    assert load_newest(
        tmp_path, keys[1], current_sequence=4, current_sha256=digest, max_bytes=MAX
    ) == (None, [])


def test_valid_until_is_signed_and_reported(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    p = tmp_path / version_filename(1)
    write_version(p, 1, A, private_key_pem=keys[0], valid_until=2e9)
    assert read_version(p, keys[1], max_bytes=MAX).valid_until == 2e9
    info = LoadInfo()
    result, _ = load_newest(tmp_path, keys[1], current_sequence=None, max_bytes=MAX, info=info)
    assert result is not None and info.valid_until == 2e9 and info.sha256
    # Moving valid_until breaks the signature: it is signed with the version.
    lines = p.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b"2000000000.0", b"3000000000.0")
    assert lines[0] != p.read_bytes().split(b"\n")[0]
    p.write_bytes(b"\n".join(lines))
    with pytest.raises(Exception, match="signature"):
        read_version(p, keys[1], max_bytes=MAX)


def test_versions_without_valid_until_stay_readable(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    p = tmp_path / version_filename(1)
    write_version(p, 1, A, private_key_pem=keys[0])
    assert b"valid_until" not in p.read_bytes()
    assert read_version(p, keys[1], max_bytes=MAX).valid_until is None


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_valid_until_is_refused(
    tmp_path: Path, keys: tuple[bytes, bytes], value: str
) -> None:
    p = tmp_path / "v.jsonl"
    body = b""
    head = (
        b'{"format":"%s","sequence":1,"base":null,"created_at":1.0,"entries":0,"sha256":"%s",'
        b'"valid_until":%s}'
        % (FORMAT_TAG.encode(), hashlib.sha256(body).hexdigest().encode(), value.encode())
    )
    signed = head + b"\n"
    p.write_bytes(signed + signature_line(signed, keys[0]))
    with pytest.raises(Exception) as info:
        read_version(p, keys[1], max_bytes=MAX)
    assert str(p) in str(info.value)


def test_cli_sign_sets_valid_until(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blocklist", "keygen", "--out-dir", str(tmp_path / "k")]) == 0
    priv, pub = tmp_path / "k" / "blocklist-signing.key", tmp_path / "k" / "blocklist-signing.pub"
    src = tmp_path / "in.jsonl"
    src.write_text('{"id":"a","type":"url","value":"http://demo.local/a"}\n')
    out = tmp_path / version_filename(1)
    assert (
        main(
            [
                "blocklist",
                "sign",
                "--key",
                str(priv),
                "--sequence",
                "1",
                "--valid-for-s",
                "3600",
                str(src),
                str(out),
            ]
        )
        == 0
    )
    v = read_version(out, pub.read_bytes(), max_bytes=MAX)
    header = msgspec.json.decode(out.read_bytes().split(b"\n")[0])
    assert v.valid_until == header["valid_until"] and v.valid_until is not None
    out2 = tmp_path / version_filename(2)
    assert (
        main(
            [
                "blocklist",
                "sign",
                "--key",
                str(priv),
                "--sequence",
                "2",
                "--valid-until",
                "4000000000",
                str(src),
                str(out2),
            ]
        )
        == 0
    )
    assert read_version(out2, pub.read_bytes(), max_bytes=MAX).valid_until == 4e9
    for bad in (
        ["--valid-for-s", "-5"],
        ["--valid-until", "1000"],
        ["--valid-for-s", "5", "--valid-until", "4000000000"],
    ):
        code = main(
            [
                "blocklist",
                "sign",
                "--key",
                str(priv),
                "--sequence",
                "3",
                *bad,
                str(src),
                str(tmp_path / "bad.jsonl"),
            ]
        )
        assert code != 0 and not (tmp_path / "bad.jsonl").exists()
    capsys.readouterr()
    for seq in (str(2**64), "0", "-1"):
        assert (
            main(
                [
                    "blocklist",
                    "sign",
                    "--key",
                    str(priv),
                    "--sequence",
                    seq,
                    str(src),
                    str(tmp_path / "bad.jsonl"),
                ]
            )
            != 0
        )
