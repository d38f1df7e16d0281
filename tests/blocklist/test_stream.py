"""A full version streamed into the compile child's tables (issue 12): the same entries, the
same refusals at the same lines, the same tables and deltas as reading it whole, without the
child ever holding the version."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.blocklist.format import (
    BlocklistError,
    Reading,
    load_newest,
    read_version,
    signature_line,
    version_filename,
    write_version,
)
from proxy.blocklist.loader import DirSource, Job, run
from proxy.blocklist.mapped import MappedSnapshot
from proxy.blocklist.model import Compiled, Entry, EntryType, compile_entry
from proxy.blocklist.table import MappedTable, TableWriter, write_table

MAX = 1 << 24


def mixed(n: int, prefix: str = "e") -> list[Entry]:
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(Entry(f"{prefix}{i}", EntryType.URL, f"http://a.example/u/{i}?v={i % 7}"))
        elif kind == 1:
            out.append(Entry(f"{prefix}{i}", EntryType.PREFIX, f"http://a.example/t/{i}/"))
        elif kind == 2:
            out.append(Entry(f"{prefix}{i}", EntryType.HOST, f"h{i}.example", notice="N"))
        elif kind == 3:
            digest = hashlib.sha256(b"%d" % i).hexdigest()
            out.append(Entry(f"{prefix}{i}", EntryType.SHA256, digest, expires_at=4e9))
        else:  # the same url key as entry i-4, listed again under another id
            out.append(Entry(f"{prefix}{i}", EntryType.URL, f"http://a.example/u/{i - 4}"))
    return out


class Collect:
    def __init__(self) -> None:
        self.got: list[tuple[Entry, Compiled | None]] = []
        self.aborted = False

    def add(self, entry: Entry, form: Compiled | None) -> None:
        self.got.append((entry, form))

    def abort(self) -> None:
        self.aborted = True


def collecting(sinks: list[Collect]) -> Reading:
    def stream(_path: str, _total: int) -> Collect:
        sinks.append(Collect())
        return sinks[-1]

    return Reading(stream=stream)


def streamed(path: Path, public: bytes, max_bytes: int = MAX) -> tuple[Any, list[Collect]]:
    sinks: list[Collect] = []
    return read_version(path, public, max_bytes=max_bytes, reading=collecting(sinks)), sinks


def test_a_streamed_version_gives_the_sink_what_reading_it_whole_gives(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    path = tmp_path / version_filename(1)
    write_version(path, 1, mixed(500), private_key_pem=keys[0])
    whole = read_version(path, keys[1], max_bytes=MAX)
    v, sinks = streamed(path, keys[1])
    assert v.streamed and v.adds == () and not whole.streamed
    assert (v.sequence, v.sha256, v.key_id) == (whole.sequence, whole.sha256, whole.key_id)
    [sink] = sinks
    assert [e for e, _ in sink.got] == list(whole.adds)
    assert [form for _, form in sink.got] == [compile_entry(e) for e in whole.adds]
    assert not sink.aborted


def sign_raw(private: bytes, lines: list[bytes], **header: Any) -> bytes:
    body = b"".join(line + b"\n" for line in lines)
    fields = {
        "format": "edgeproxy-blocklist/1",
        "sequence": 1,
        "base": None,
        "created_at": 1.0,
        "entries": len(lines),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    fields.update(header)
    data = json.dumps(fields).encode() + b"\n" + body
    return data + signature_line(data, private)


def add(entry_id: str, value: str = "e.com", etype: str = "host") -> bytes:
    return json.dumps({"op": "add", "id": entry_id, "type": etype, "value": value}).encode()


BAD = add("x", "not a host/")
CASES = {
    "duplicate": [add("a"), add("b", "b.com"), add("a", "c.com")],
    "duplicate, then a bad line": [add("a"), add("a", "c.com"), BAD],
    "a bad line, then a duplicate": [add("a"), BAD, add("a", "c.com")],
    "two duplicates": [add("a"), add("b", "b.com"), add("b", "d.com"), add("a", "c.com")],
    "a malformed line": [add("a"), b"{not json", add("b", "b.com")],
    "a remove in a full version": [add("a"), b'{"op":"remove","id":"a"}'],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_streamed_version_is_refused_at_the_line_reading_it_whole_is(
    tmp_path: Path, keys: tuple[bytes, bytes], case: str
) -> None:
    path = tmp_path / "v.jsonl"
    path.write_bytes(sign_raw(keys[0], CASES[case]))
    with pytest.raises(BlocklistError) as whole:
        read_version(path, keys[1], max_bytes=MAX)
    with pytest.raises(BlocklistError) as stream:
        streamed(path, keys[1])
    assert (stream.value.line, stream.value.reason) == (whole.value.line, whole.value.reason)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:-1],  # truncated: no final newline
        lambda d: d[: d.rfind(b"\n", 0, len(d) - 1) + 1],  # unsigned
        lambda d: d.replace(b'"value": "b.com"', b'"value": "x.com"'),  # tampered
        lambda d: b"",
    ],
)
def test_framing_and_signature_refusals_are_the_same(
    tmp_path: Path, keys: tuple[bytes, bytes], mangle: Any
) -> None:
    path = tmp_path / "v.jsonl"
    path.write_bytes(mangle(sign_raw(keys[0], [add("a"), add("b", "b.com")])))
    with pytest.raises(BlocklistError) as whole:
        read_version(path, keys[1], max_bytes=MAX)
    with pytest.raises(BlocklistError) as stream:
        streamed(path, keys[1])
    assert (stream.value.line, stream.value.reason) == (whole.value.line, whole.value.reason)


def test_a_bad_hash_is_reported_before_a_bad_line_and_the_sink_aborted(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """The body's hash runs beside the parse: its refusal still comes first (line 1)."""
    path = tmp_path / "v.jsonl"
    path.write_bytes(sign_raw(keys[0], [add("a"), BAD], sha256="00" * 32))
    with pytest.raises(BlocklistError) as stream:
        streamed(path, keys[1])
    assert stream.value.line == 1 and "sha256" in stream.value.reason
    path.write_bytes(sign_raw(keys[0], [add("a"), add("a", "b.com")]))
    sinks: list[Collect] = []
    with pytest.raises(BlocklistError, match="duplicate id"):
        read_version(
            path,
            keys[1],
            max_bytes=MAX,
            reading=collecting(sinks),
        )
    assert sinks[0].aborted


def test_a_delta_chain_over_a_streamed_base_is_read_whole(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    write_version(tmp_path / version_filename(1), 1, mixed(20), private_key_pem=keys[0])
    more = [Entry("new", EntryType.HOST, "new.example")]
    write_version(
        tmp_path / version_filename(2), 2, more, base=1, removes=["e0"], private_key_pem=keys[0]
    )
    sinks: list[Collect] = []
    from proxy.blocklist.format import LoadInfo

    info = LoadInfo()
    got, errors = load_newest(
        tmp_path,
        keys[1],
        current_sequence=None,
        max_bytes=MAX,
        info=info,
        reading=collecting(sinks),
    )
    assert not errors and got is not None and info.streamed == ""
    entries, seq = got
    assert seq == 2 and [e.id for e in entries] == [f"e{i}" for i in range(1, 20)] + ["new"]


# -- the child's tables -----------------------------------------------------------------------


def job(tmp_path: Path, keys: tuple[bytes, bytes], **kw: Any) -> Job:
    (tmp_path / "pub.pem").write_bytes(keys[1])
    fields: dict[str, Any] = {
        "version": 9,
        "now": time.time(),
        "source": "dir",
        "dir": DirSource(
            dir=str(tmp_path / "lists"),
            public_key=str(tmp_path / "pub.pem"),
            current_sequence=None,
            current_sha256="",
            max_bytes=MAX,
            max_sequence_step=0,
            require_valid_until=False,
        ),
        "file_out": str(tmp_path / "file.map"),
        "node_out": str(tmp_path / "node.map"),
        "delta_out": str(tmp_path / "delta"),
        "nice": 0,
    }
    fields.update(kw)
    return Job(**fields)


def table_entries(path: str) -> list[Entry]:
    return list(MappedTable(Path(path)))


def test_changes_and_pushes_land_where_the_dicts_put_them(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """`files` = the version with `changes` (in place, dropped, appended), the node layer =
    `{**files, **pushed}`: the streamed tables hold exactly those, in that order."""
    lists = tmp_path / "lists"
    lists.mkdir()
    listed = mixed(300)
    write_version(lists / version_filename(1), 1, listed, private_key_pem=keys[0])
    changes: dict[str, Entry | None] = {
        "e3": Entry("e3", EntryType.HOST, "changed.example"),
        "e7": None,
        "c1": Entry("c1", EntryType.HOST, "c1.example"),
        "gone": None,
    }
    pushed = [
        Entry("e10", EntryType.HOST, "pushed-over.example"),
        Entry("p1", EntryType.URL, "http://p.example/x"),
    ]
    summary = run(job(tmp_path, keys, changes=changes, pushed=pushed), lambda _m: None)
    files = {e.id: e for e in listed}
    for entry_id, changed in changes.items():
        if changed is None:
            files.pop(entry_id, None)
        else:
            files[entry_id] = changed
    merged = {**files, **{e.id: e for e in pushed}}
    assert table_entries(str(tmp_path / "file.map")) == list(files.values())
    assert table_entries(str(tmp_path / "node.map")) == list(merged.values())
    assert summary.node_written and summary.file_entries == len(files)
    assert summary.entries == len(merged)
    assert summary.counts == {t.value: sum(e.type is t for e in merged.values()) for t in EntryType}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no spill left


def test_without_pushes_the_node_table_is_the_file_table(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    write_version(lists / version_filename(1), 1, mixed(50), private_key_pem=keys[0])
    summary = run(job(tmp_path, keys), lambda _m: None)
    assert summary.node_written and summary.entries == 50
    assert (tmp_path / "node.map").stat().st_ino == (tmp_path / "file.map").stat().st_ino


@pytest.mark.parametrize(
    ("edit", "want"),
    [
        ("nothing", ([], [])),
        ("change one", (["e4"], [])),
        ("add one", (["new"], [])),
        ("remove one", ([], ["e5"])),
        ("all of them", None),
    ],
)
async def test_a_small_change_against_the_enforced_layer_is_a_delta(
    tmp_path: Path, keys: tuple[bytes, bytes], edit: str, want: Any
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    first = mixed(3000)
    old = tmp_path / "old.map"
    write_table(old, first, 1, time.time())
    listed = list(first)
    if edit == "change one":
        listed[4] = Entry("e4", EntryType.HOST, "other.example")
    elif edit == "add one":
        listed.append(Entry("new", EntryType.HOST, "new.example"))
    elif edit == "remove one":
        del listed[5]
    elif edit == "all of them":
        listed = mixed(3000, prefix="f")
    write_version(lists / version_filename(2), 2, listed, private_key_pem=keys[0])
    pushed = [Entry("e6", EntryType.HOST, "pushed.example")]  # over a file entry: never a delta
    summary = run(
        job(tmp_path, keys, base_table=str(old), delta_max_fraction=0.01, pushed=pushed),
        lambda _m: None,
    )
    if want is None:
        assert not summary.delta and summary.node_written
        return
    import msgspec

    from proxy.blocklist.loader import Delta

    delta = msgspec.msgpack.decode((tmp_path / "delta").read_bytes(), type=Delta)
    assert summary.delta and not summary.node_written
    assert ([e.id for e in delta.adds], delta.removes) == want
    assert not (tmp_path / "node.map").exists()  # the node table made on the way is dropped
    new = MappedSnapshot.open(MappedTable(tmp_path / "file.map"), 2, time.time())
    assert dict(new.entries_by_id) == {e.id: e for e in listed}


def test_a_writer_leaves_no_file_when_it_fails_or_is_aborted(tmp_path: Path) -> None:
    out = tmp_path / "t.map"
    twice = [Entry("a", EntryType.HOST, "a.example"), Entry("a", EntryType.HOST, "b.example")]
    with pytest.raises(ValueError, match="duplicate id"):
        write_table(out, twice, 1, time.time())
    writer = TableWriter(out, time.time())
    writer.add(Entry("b", EntryType.HOST, "b.example"))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_writer_spills_and_still_writes_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows and records written out in many small pieces: the file is byte for byte the one
    written from memory."""
    import proxy.blocklist.table as table

    entries = mixed(2000)
    now = 1_700_000_000.0
    write_table(tmp_path / "one.map", entries, 1, now)
    monkeypatch.setattr(table, "SPILL_BYTES", 1000)
    write_table(tmp_path / "many.map", entries, 1, now)
    assert (tmp_path / "one.map").read_bytes() == (tmp_path / "many.map").read_bytes()


def test_a_version_refused_half_way_leaves_no_file_and_the_older_one_loads(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """The newest version's last line is bad: its tables were half written when it was
    refused; the child then streams the older one, and only its tables remain."""
    lists = tmp_path / "lists"
    lists.mkdir()
    write_version(lists / version_filename(1), 1, mixed(40), private_key_pem=keys[0])
    lines = [add(f"n{i}", f"n{i}.example") for i in range(3000)] + [BAD]
    (lists / version_filename(2)).write_bytes(sign_raw(keys[0], lines, sequence=2))
    summary = run(job(tmp_path, keys), lambda _m: None)
    assert summary.found is not None and summary.found.sequence == 1
    assert [r.text for r in summary.refusals if "3002" in r.text]  # the bad line, named
    assert len(table_entries(str(tmp_path / "file.map"))) == 40
    assert not [p for p in tmp_path.rglob(".*")]  # no spill, no temporary
