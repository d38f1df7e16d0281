"""Snapshot semantics per entry type, replacement, removal and expiry."""

from dataclasses import dataclass

import pytest

from proxy.blocklist.model import Entry, EntryType, InvalidEntry
from proxy.blocklist.snapshot import EMPTY_SNAPSHOT, Snapshot

DIGEST = bytes(range(32))

ENTRIES = [
    Entry("url-1", EntryType.URL, "http://example.com/a/b", notice="N-1", reason="copyright"),
    Entry("url-q", EntryType.URL, "http://example.com/watch?v=42&list=7"),
    Entry("pre-1", EntryType.PREFIX, "http://example.com/manga/"),
    Entry("host-1", EntryType.HOST, "pirate.example"),
    Entry("sha-1", EntryType.SHA256, DIGEST.hex()),
]


@pytest.fixture
def snap() -> Snapshot:
    return Snapshot.compile(ENTRIES, version=7, now=1000.0)


def blocked(snap: Snapshot, host: str, path: str, query: str | None = None) -> str | None:
    entry = snap.check(host, path, query)
    return None if entry is None else entry.id


def test_inspection(snap: Snapshot) -> None:
    assert snap.version == 7 and len(snap) == 5
    assert snap.counts == {
        EntryType.URL: 2,
        EntryType.PREFIX: 1,
        EntryType.HOST: 1,
        EntryType.SHA256: 1,
    }
    assert set(snap.entries_by_id) == {e.id for e in ENTRIES}
    with pytest.raises(TypeError):
        snap.entries_by_id["x"] = ENTRIES[0]  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.version = 8
    assert len(EMPTY_SNAPSHOT) == 0 and EMPTY_SNAPSHOT.check("example.com", "/", None) is None


def test_url_entry(snap: Snapshot) -> None:
    assert blocked(snap, "example.com", "/a/b") == "url-1"
    assert blocked(snap, "example.com", "/a/b/", "anything=1") == "url-1"
    assert blocked(snap, "example.com", "/a/b/c") is None
    assert blocked(snap, "example.com", "/a") is None
    assert blocked(snap, "example.com", "/a/bc") is None
    assert blocked(snap, "www.example.com", "/a/b") is None
    assert blocked(snap, "example.org", "/a/b") is None


def test_url_entry_with_query_needs_all_its_pairs(snap: Snapshot) -> None:
    assert blocked(snap, "example.com", "/watch", "v=42&list=7") == "url-q"
    assert blocked(snap, "example.com", "/watch", "list=7&t=10&v=42") == "url-q"
    assert blocked(snap, "example.com", "/watch", "v=4%32;list=7") == "url-q"
    assert blocked(snap, "example.com", "/watch", "v=42") is None
    assert blocked(snap, "example.com", "/watch", "v=43&list=7") is None
    assert blocked(snap, "example.com", "/watch", "") is None
    assert blocked(snap, "example.com", "/watch", None) is None


def test_prefix_entry_on_segment_boundaries(snap: Snapshot) -> None:
    for path in [
        "/manga",
        "/manga/",
        "/manga/x",
        "/manga/x/y.html",
        "/MANGA/../manga/x",
        "/Manga/x",
    ]:
        assert blocked(snap, "example.com", path) == "pre-1", path
    for path in ["/mangafoo", "/mang", "/", "/x/manga"]:
        assert blocked(snap, "example.com", path) is None, path
    assert blocked(snap, "sub.example.com", "/manga/x") is None


def test_deep_and_root_prefixes() -> None:
    deep = "/".join(f"s{i}" for i in range(40))
    snap = Snapshot.compile(
        [
            Entry("deep", EntryType.PREFIX, f"http://example.com/{deep}/"),
            Entry("root", EntryType.PREFIX, "http://other.example/"),
        ],
        version=1,
        now=0,
    )
    assert blocked(snap, "example.com", f"/{deep}/leaf") == "deep"
    assert blocked(snap, "example.com", f"/{deep}") == "deep"
    assert blocked(snap, "example.com", f"/{deep[:-1]}") is None
    assert blocked(snap, "other.example", "/") == "root"
    assert blocked(snap, "other.example", "/any/thing") == "root"
    assert blocked(snap, "www.other.example", "/any/thing") is None


def test_host_entry_covers_subdomains(snap: Snapshot) -> None:
    for host in ["pirate.example", "PIRATE.example.", "www.pirate.example", "a.b.pirate.example"]:
        assert blocked(snap, host, "/anything", "q=1") == "host-1", host
    for host in ["notpirate.example", "pirate.example.com", "example"]:
        assert blocked(snap, host, "/") is None, host


def test_digest(snap: Snapshot) -> None:
    hit = snap.check_digest(DIGEST)
    assert hit is not None and hit.id == "sha-1"
    assert snap.check_digest(bytes(32)) is None


def test_check_target_reads_host_path_query(snap: Snapshot) -> None:
    @dataclass(frozen=True)
    class FakeTarget:
        host: str
        path: str
        query: str | None

    hit = snap.check_target(FakeTarget("example.com", "/manga/1", None))
    assert hit is not None and hit.id == "pre-1"


def test_compile_refuses_invalid_and_duplicate_entries() -> None:
    with pytest.raises(InvalidEntry, match="64 hexadecimal"):
        Snapshot.compile([Entry("s", EntryType.SHA256, "nothex")], version=1, now=0)
    with pytest.raises(InvalidEntry, match="duplicate id"):
        Snapshot.compile(ENTRIES + [ENTRIES[0]], version=1, now=0)


def test_expired_entries_are_skipped_and_dropped() -> None:
    entries = [
        Entry("old", EntryType.HOST, "old.example", expires_at=500.0),
        Entry("soon", EntryType.HOST, "soon.example", expires_at=2000.0),
        Entry("later", EntryType.HOST, "later.example", expires_at=3000.0),
    ]
    snap = Snapshot.compile(entries, version=1, now=1000.0)
    assert set(snap.entries_by_id) == {"soon", "later"}
    assert snap.next_expiry == 2000.0
    after = snap.with_changes((), (), version=1, now=2500.0)
    assert set(after.entries_by_id) == {"later"}
    assert after.check("soon.example", "/", None) is None
    assert after.next_expiry == 3000.0
    assert snap.check("soon.example", "/", None) is not None  # the old snapshot is untouched


def test_with_changes_adds_removes_and_replaces(snap: Snapshot) -> None:
    new = snap.with_changes(
        add=[
            Entry("host-2", EntryType.HOST, "other.example"),
            Entry("url-1", EntryType.URL, "http://example.com/c"),  # replaces url-1
        ],
        remove_ids=["pre-1", "unknown-id"],
        version=8,
        now=1000.0,
    )
    assert new.version == 8
    assert blocked(new, "other.example", "/") == "host-2"
    assert blocked(new, "example.com", "/manga/x") is None
    assert blocked(new, "example.com", "/a/b") is None
    assert blocked(new, "example.com", "/c") == "url-1"
    assert new.counts[EntryType.PREFIX] == 0 and new.counts[EntryType.HOST] == 2
    assert sorted(e.id for e in new.added_since(snap)) == ["host-2", "url-1"]
    assert new.added_since(new) == [] and len(snap.added_since(EMPTY_SNAPSHOT)) == 5
    # the original is unchanged
    assert blocked(snap, "example.com", "/manga/x") == "pre-1"
    assert blocked(snap, "example.com", "/a/b") == "url-1"
    with pytest.raises(InvalidEntry):
        snap.with_changes([Entry("bad", EntryType.HOST, "a/b")], (), version=9, now=0)


def test_shared_keys_stay_blocked_until_the_last_entry_goes() -> None:
    snap = Snapshot.compile(
        [
            Entry("n1", EntryType.URL, "http://example.com/x"),
            Entry("n2", EntryType.URL, "http://EXAMPLE.com/x/"),
            Entry("n3", EntryType.URL, "http://example.com/x?a=1"),
            Entry("n4", EntryType.URL, "http://example.com/x?a=1"),
        ],
        version=1,
        now=0,
    )
    assert blocked(snap, "example.com", "/x") == "n1"
    one = snap.with_changes((), ["n1"], version=2, now=0)
    assert blocked(one, "example.com", "/x") == "n2"
    two = one.with_changes((), ["n2"], version=3, now=0)
    assert blocked(two, "example.com", "/x") is None
    assert blocked(two, "example.com", "/x", "a=1") == "n3"
    three = two.with_changes((), ["n3"], version=4, now=0)
    assert blocked(three, "example.com", "/x", "a=1") == "n4"
    four = three.with_changes((), ["n4"], version=5, now=0)
    assert blocked(four, "example.com", "/x", "a=1") is None and len(four) == 0
    # removing the second of two shared entries leaves the first
    kept = snap.with_changes((), ["n2"], version=6, now=0)
    assert blocked(kept, "example.com", "/x") == "n1"


def test_check_target_with_the_admit_phase_target(snap: Snapshot) -> None:
    from proxy.rfc.target import BadTarget, canonical_target

    def hit(raw: bytes) -> str | None:
        entry = snap.check_target(canonical_target(raw, b"Example.COM.:80"))
        return None if entry is None else entry.id

    assert hit(b"/manga/x") == "pre-1"
    assert hit(b"/%6danga;v=1/x") == "pre-1"
    assert hit(b"/manga%2fx?q=1") == "pre-1"  # forwarded as-is, matched decoded
    with pytest.raises(BadTarget, match="hidden-dot-segment"):
        hit(b"/a/..%2fmanga/x?q=1")  # a traversal only a decoding origin sees: refused
    assert hit(b"/watch?list=7&v=4%32") == "url-q"
    assert hit(b"http://pirate.example/x") == "host-1"
    assert hit(b"/mangafoo") is None


# -- issue 10: case-sensitive sites ----------------------------------------------------------

CASE_ENTRIES = [
    Entry("u-mixed", EntryType.URL, "http://example.com/Video/AbC"),
    Entry("u-lower", EntryType.URL, "http://example.com/video/abc"),  # shares the folded key
    Entry("u-only-upper", EntryType.URL, "http://example.com/ID/XyZ"),
    Entry("p-mixed", EntryType.PREFIX, "http://example.com/Dir/Sub/"),
    Entry("q-mixed", EntryType.URL, "http://example.com/Watch?v=AbC"),
    Entry("u-sharp-s", EntryType.URL, "http://example.com/Stra%C3%9Fe/x"),
    Entry("p-sharp-s", EntryType.PREFIX, "http://example.com/Gro%C3%9F/"),
    Entry("h", EntryType.HOST, "Pirate.Example"),
]


@pytest.fixture
def case_snap() -> Snapshot:
    return Snapshot.compile(CASE_ENTRIES, version=1, now=0.0)


@pytest.mark.parametrize(
    ("host", "path", "query", "folded", "exact"),
    [
        ("example.com", "/Video/AbC", None, "u-mixed", "u-mixed"),
        ("example.com", "/video/abc", None, "u-mixed", "u-lower"),
        ("example.com", "/VIDEO/ABC", None, "u-mixed", None),
        ("example.com", "/Video/abc", None, "u-mixed", None),
        ("example.com", "/%56ideo/A%62C/", None, "u-mixed", "u-mixed"),  # other rules still apply
        ("example.com", "/Video;s=1/AbC", None, "u-mixed", "u-mixed"),
        ("example.com", "/ID/XyZ", None, "u-only-upper", "u-only-upper"),
        ("example.com", "/id/xyz", None, "u-only-upper", None),
        ("example.com", "/Dir/Sub/file", None, "p-mixed", "p-mixed"),
        ("example.com", "/Dir/Sub", None, "p-mixed", "p-mixed"),
        ("example.com", "/dir/sub/file", None, "p-mixed", None),
        ("example.com", "/Dir/sub/file", None, "p-mixed", None),
        ("example.com", "/Watch", "v=AbC&t=1", "q-mixed", "q-mixed"),
        ("example.com", "/watch", "v=AbC", "q-mixed", None),
        ("example.com", "/Watch", "v=abc", None, None),  # query values never fold
        ("example.com", "/Stra%C3%9Fe/x", None, "u-sharp-s", "u-sharp-s"),
        ("example.com", "/strasse/x", None, "u-sharp-s", None),
        ("example.com", "/Gro%C3%9F/a/b", None, "p-sharp-s", "p-sharp-s"),
        ("example.com", "/GROSS/a/b", None, "p-sharp-s", None),
        ("cdn.PIRATE.example", "/Any", None, "h", "h"),  # hosts are always case-blind
    ],
)
def test_case_sensitive_check_issue_10(
    case_snap: Snapshot, host: str, path: str, query: str | None, folded: str, exact: str
) -> None:
    def ids(**kw: bool) -> str | None:
        entry = case_snap.check(host, path, query, **kw)
        return None if entry is None else entry.id

    assert ids() == folded  # the old call: folded, the default
    assert ids(case_sensitive=False) == folded
    assert ids(case_sensitive=True) == exact


def test_case_sensitive_check_keys_and_target_issue_10(case_snap: Snapshot) -> None:
    from proxy.blocklist.keys import match_keys
    from proxy.rfc.target import canonical_target

    k = match_keys("example.com", "/VIDEO/abc", None)
    assert case_snap.check_keys(k) is not None
    assert case_snap.check_keys(k, case_sensitive=True) is None
    t = canonical_target(b"/video/abc", b"example.com")
    hit = case_snap.check_target(t, case_sensitive=True)
    assert hit is not None and hit.id == "u-lower"


def test_case_sensitive_check_survives_removal_of_the_first_entry_issue_10(
    case_snap: Snapshot,
) -> None:
    """The entry reported for a folded key changes when it is removed; the exact check then
    finds the remaining one."""
    after = case_snap.with_changes((), ["u-mixed"], version=2, now=0.0)
    hit = after.check("example.com", "/video/abc", None, case_sensitive=True)
    assert hit is not None and hit.id == "u-lower"
    assert after.check("example.com", "/Video/AbC", None, case_sensitive=True) is None
    assert after.check("example.com", "/Video/AbC", None).id == "u-lower"  # type: ignore[union-attr]
