"""A version compiled once by the supervisor and loaded in steps by workers."""

from __future__ import annotations

from pathlib import Path

from proxy.blocklist.compiled import load_compiled, write_compiled
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import Snapshot


async def test_compiled_load_matches_a_direct_compile(tmp_path: Path) -> None:
    entries = [
        Entry(id=f"u{i}", type=EntryType.URL, value=f"http://h{i % 7}.example/p/{i}")
        for i in range(2500)
    ] + [
        Entry(id="q", type=EntryType.URL, value="http://h.example/read?vol=1&ch=2"),
        Entry(id="p", type=EntryType.PREFIX, value="http://h.example/manga/"),
        Entry(id="h", type=EntryType.HOST, value="pirate.example"),
        Entry(id="d", type=EntryType.SHA256, value="ab" * 32),
        Entry(id="gone", type=EntryType.HOST, value="old.example", expires_at=5.0),
    ]
    path = tmp_path / "c.msgpack"
    write_compiled(path, entries)
    loaded = await load_compiled(path, 7, now=10.0)
    direct = Snapshot.compile(entries, 7, now=10.0)
    assert loaded.version == 7 and len(loaded) == len(direct) == len(entries) - 1
    probes = [
        ("h3.example", "/p/3", None),
        ("h3.example", "/p/4", None),
        ("h.example", "/read", "ch=2&vol=1&x=y"),
        ("h.example", "/read", "vol=1"),
        ("h.example", "/manga/one", None),
        ("cdn.pirate.example", "/", None),
        ("old.example", "/", None),
    ]
    for probe in probes:
        a, b = loaded.check(*probe), direct.check(*probe)
        assert (a and a.id) == (b and b.id), probe
    assert loaded.check_digest(bytes.fromhex("ab" * 32)).id == "d"  # type: ignore[union-attr]
