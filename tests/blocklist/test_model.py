"""Entry validation: every refusal names the entry and the problem."""

import msgspec
import pytest

from proxy.blocklist.model import Entry, EntryType, InvalidEntry, compile_entry, validate_entry


def test_valid_entries_pass_unchanged() -> None:
    for entry in [
        Entry("u1", EntryType.URL, "http://example.com/a?x=1", notice="N-1", reason="copyright"),
        Entry("p1", EntryType.PREFIX, "https://example.com/manga/"),
        Entry("h1", EntryType.HOST, "example.com", expires_at=2e9),
        Entry("s1", EntryType.SHA256, "0f" * 32),
    ]:
        assert validate_entry(entry) is entry


def test_compile_entry_returns_the_lookup_key() -> None:
    assert compile_entry(Entry("u", EntryType.URL, "http://Example.com/a/?b=1&a=2")) == (
        EntryType.URL,
        "example.com/a",
        (("a", "2"), ("b", "1")),
    )
    assert compile_entry(Entry("p", EntryType.PREFIX, "http://example.com/manga/")) == (
        EntryType.PREFIX,
        "example.com/manga",
        None,
    )
    assert compile_entry(Entry("s", EntryType.SHA256, "AA" * 32))[1] == b"\xaa" * 32


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (Entry("", EntryType.URL, "http://example.com/"), "empty id"),
        (Entry("   ", EntryType.URL, "http://example.com/"), "empty id"),
        (Entry("a\nb", EntryType.URL, "http://example.com/"), "control characters"),
        (Entry("x" * 201, EntryType.URL, "http://example.com/"), "longer than"),
        (Entry("t", "regex", "a.*"), "unknown type 'regex'"),  # type: ignore[arg-type]
        (Entry("v", EntryType.URL, ""), "empty value"),
        (Entry("v", EntryType.URL, "http:///nohost"), "no host"),
        (Entry("v", EntryType.URL, "example.com/a"), "http:// or https://"),
        (Entry("v", EntryType.PREFIX, "http://example.com/a?x=1"), "prefix cannot carry a query"),
        (Entry("v", EntryType.HOST, "http://example.com/"), "bare host"),
        (Entry("v", EntryType.SHA256, "abc"), "64 hexadecimal"),
        (Entry("v", EntryType.SHA256, "g" * 64), "64 hexadecimal"),
        (Entry("v", EntryType.URL, "http://e.com/", expires_at=float("nan")), "expires_at"),
        (Entry("v", EntryType.URL, "http://e.com/", notice="n" * 3000), "notice longer"),
    ],
)
def test_invalid_entries_are_refused_with_a_reason(entry: Entry, message: str) -> None:
    with pytest.raises(InvalidEntry, match=message) as info:
        validate_entry(entry)
    assert isinstance(info.value, ValueError)
    assert info.value.entry_id == entry.id or not entry.id.strip() or len(entry.id) > 200


def test_decoding_from_json_checks_field_types() -> None:
    entry = msgspec.json.decode(b'{"id":"a","type":"host","value":"example.com"}', type=Entry)
    assert entry.type is EntryType.HOST and entry.notice == "" and entry.expires_at is None
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"id":"a","type":"nope","value":"x"}', type=Entry)


def test_any_url_an_edge_admits_can_be_listed_exactly() -> None:
    """The longest target an edge admits (limits.max_request_line_bytes is at most
    MAX_TARGET_BYTES), on a 253-character host with a port, fits an entry's value; a value
    longer than that is refused."""
    from proxy.blocklist.model import MAX_VALUE_CHARS
    from proxy.rfc.target import MAX_TARGET_BYTES

    host = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    url = f"https://{host}:65535/" + "p" * (MAX_TARGET_BYTES - 1)
    etype, key, _ = compile_entry(Entry("long", EntryType.URL, url))
    assert etype is EntryType.URL and key == f"{host}/" + "p" * (MAX_TARGET_BYTES - 1)
    too_long = "https://e.com/" + "p" * MAX_VALUE_CHARS
    with pytest.raises(InvalidEntry, match="longer than"):
        validate_entry(Entry("v", EntryType.URL, too_long))
