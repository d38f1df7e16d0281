"""Match keys: each evasion from the design, one example at a time."""

import pytest

from proxy.blocklist import keys
from proxy.blocklist.keys import (
    canonical_host,
    canonical_path,
    canonical_query,
    match_keys,
    parse_host_value,
    parse_sha256,
    parse_url_value,
    query_contains,
)


@pytest.mark.parametrize(
    "raw",
    [
        "example.com",
        "EXAMPLE.com",
        "example.com.",
        "example.com..",
        ".example.com",
        "example..com",
        "example.com:80",
        "example.com:443",
        "Example.COM.:8080",
        "%65xample.com",
        "%2565xample.com",
    ],
)
def test_host_spellings_meet(raw: str) -> None:
    assert canonical_host(raw) == "example.com"


@pytest.mark.parametrize(
    "raw",
    [
        "bücher.example",
        "BÜCHER.example",
        "bu\u0308cher.example",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.EXAMPLE.",
        "b%C3%BCcher.example",
        "bücher\u3002example",
    ],
)
def test_idn_and_punycode_meet(raw: str) -> None:
    assert canonical_host(raw) == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "raw",
    ["127.0.0.1", "2130706433", "0x7f000001", "0x7f.1", "017700000001", "127.1", "127.0.0.1."],
)
def test_ipv4_spellings_meet(raw: str) -> None:
    assert canonical_host(raw) == "127.0.0.1"


def test_ipv6_compressed_in_brackets() -> None:
    assert canonical_host("[0:0:0:0:0:0:0:1]") == "[::1]"
    assert canonical_host("[::1]:8080") == "[::1]"
    assert canonical_host("::1") == "[::1]"


def test_non_numeric_last_label_is_a_name() -> None:
    assert canonical_host("1.2.3.example") == "1.2.3.example"
    assert canonical_host("999.1.1.1") == "999.1.1.1"  # not an address: left as a name


@pytest.mark.parametrize(
    "raw",
    [
        "/manga/one",
        "/manga/one/",
        "//manga///one//",
        "/manga/./one",
        "/manga/x/../one",
        "/manga/x/%2e%2e/one",
        "/manga/x/%2E./one",
        "/manga/x/%252e%252e/one",
        "/manga/x/..;/one",
        "/manga;jsessionid=1/one;v=2",
        "\\manga\\one",
        "/manga%5Cone",
        "/manga%2Fone",
        "/%6d%61%6e%67%61/%6F%6E%65",
        "/%256d%2561nga/one",
        "/../../manga/one",
    ],
)
def test_path_spellings_meet(raw: str) -> None:
    assert canonical_path(raw) == "/manga/one"


def test_path_unicode_nfc_and_utf8_escapes_meet() -> None:
    nfc = canonical_path("/caf\u00e9")
    assert canonical_path("/cafe\u0301") == nfc
    assert canonical_path("/caf%C3%A9") == nfc
    assert canonical_path("/cafe%CC%81") == nfc


def test_path_folds_case_and_keeps_root() -> None:
    """Over-block: `/MANGA` is `/manga` on case-insensitive origins."""
    assert canonical_path("/Manga") == "/manga"
    assert canonical_path("/MAN%47A/Ch1;x") == canonical_path("/manga/ch1")
    assert canonical_path("/") == "/"
    assert canonical_path("") == "/"
    assert canonical_path("/..") == "/"


def test_decoding_is_bounded() -> None:
    once = "%61"
    for _ in range(keys.MAX_DECODE_ROUNDS - 1):
        once = once.replace("%", "%25")
    assert canonical_path("/" + once) == "/a"
    too_deep = once.replace("%", "%25")
    assert canonical_path("/" + too_deep) != "/a"


def test_invalid_utf8_and_bad_escapes_never_raise() -> None:
    assert canonical_path("/%ff%fe/x") != canonical_path("/x")
    assert canonical_path("/%zz") == "/%zz"
    assert canonical_path("/\ud800") == "/\ud800"


def test_query_is_a_sorted_multiset() -> None:
    assert canonical_query(None) is None
    assert canonical_query("") == ()
    assert canonical_query("b=2&a=1") == (("a", "1"), ("b", "2"))
    assert canonical_query("a=1;b=2&&") == canonical_query("b=2&a=1")
    assert canonical_query("q=a+b") == canonical_query("q=a%20b") == (("q", "a b"),)
    assert canonical_query("%61=%2531") == (("a", "1"),)
    assert canonical_query("a") == canonical_query("a=")
    assert canonical_query("a=1&a=1") == (("a", "1"), ("a", "1"))


def test_query_contains_is_multiset_inclusion() -> None:
    have = canonical_query("a=1&b=2&a=1&c=3")
    assert have is not None
    assert query_contains(have, (("a", "1"),))
    assert query_contains(have, (("a", "1"), ("a", "1"), ("c", "3")))
    assert not query_contains(have, (("a", "1"), ("a", "1"), ("a", "1")))
    assert not query_contains(have, (("b", "3"),))
    assert query_contains(have, ())


def test_match_keys_walk_labels_and_segments() -> None:
    k = match_keys("WWW.Example.com.", "/a//b/c/", "x=1")
    assert k.host == "www.example.com"
    assert k.host_suffixes == ("www.example.com", "example.com", "com")
    assert k.url_key == "www.example.com/a/b/c"
    assert [k.url_key[:end] for end in k.prefix_ends] == [
        "www.example.com/",
        "www.example.com/a",
        "www.example.com/a/b",
        "www.example.com/a/b/c",
    ]
    assert match_keys("127.0.0.1", "/", None).host_suffixes == ("127.0.0.1",)
    root = match_keys("example.com", "/", None)
    assert [root.url_key[:end] for end in root.prefix_ends] == ["example.com/"]


def test_match_keys_are_memoised_except_long_inputs() -> None:
    assert match_keys("example.com", "/memo", None) is match_keys("example.com", "/memo", None)
    long_path = "/a" * keys.MEMO_MAX_CHARS
    first = match_keys("example.com", long_path, None)
    assert first is not match_keys("example.com", long_path, None)
    assert len(first.prefix_ends) == keys.MEMO_MAX_CHARS + 1


def test_parse_url_value() -> None:
    assert parse_url_value("HTTPS://user@Example.com:8443/a/b/?y=2&x=1#frag") == (
        "example.com",
        "/a/b",
        (("x", "1"), ("y", "2")),
    )
    assert parse_url_value("http://example.com") == ("example.com", "/", None)
    assert parse_url_value("http://example.com/a?") == ("example.com", "/a", None)
    assert parse_url_value("http://example.com\\a\\b") == ("example.com", "/a/b", None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("example.com/a", "http:// or https://"),
        ("ftp://example.com/a", "http:// or https://"),
        ("http:///a", "no host"),
        ("http://exa mple.com/a", "not a valid host"),
        ("http://example.com:abc/", "bad port"),
    ],
)
def test_parse_url_value_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url_value(value)


def test_parse_host_value() -> None:
    assert parse_host_value(" Example.COM. ") == "example.com"
    assert parse_host_value("bücher.example") == "xn--bcher-kva.example"
    for bad, message in [
        ("http://example.com", "bare host"),
        ("example.com/a", "bare host"),
        ("example.com:80", "port"),
        ("", "no host"),
        ("a b", "not a valid host"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_host_value(bad)


def test_parse_sha256() -> None:
    assert parse_sha256("AB" * 32) == bytes([0xAB]) * 32
    for bad in ["ab" * 31, "zz" * 32, "ab" * 33, ""]:
        with pytest.raises(ValueError, match="64 hexadecimal"):
            parse_sha256(bad)
