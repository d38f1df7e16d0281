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


# -- issue 10: the keys read as the laxest common decoder reads ----------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "/manga%C0%AFone",  # overlong "/" (old IIS, Java)
        "/manga%c0%afone",
        "/manga%E0%80%AFone",
        "/manga%F0%80%80%AFone",
        "/manga%C1%9Cone",  # overlong "\"
        "/x/%C0%AE%C0%AE/manga/one",  # overlong ".."
        "/x/%E0%80%AE%E0%80%AE/manga/one",
        "/manga/%C1%AFne",  # overlong "o"
        "/manga%u002Fone",  # IIS %u
        "/manga%U002Fone",
        "/%u006Danga/one",
        "/%u006danga/%u006F%u006E%u0065",
        "/manga%u005Cone",
        "/manga%25%75002Fone",  # "%u" only after one round, decoded in the next
        "/manga/one%3F",  # decoded "?" ends the path
        "/manga/one%3Fpage=2",
        "/manga/one%253Fpage=2",
        "/manga/one%25253F",
        "/manga/one%23",  # decoded "#" ends it too
        "/manga/one%23anything/else",
        "/manga/one%2523x",
        "/manga/one%3B",
        "/manga/one%3Bjsessionid=1",
        "/manga%3Bx=1/one",
        "/manga%252Fone",
        "/manga%255Cone",
        "/manga/x/..%2Fone",
        "/manga/x%2F..%2Fone",
        "/manga/x/..%5Cone",
        "/manga/x/..;jsessionid=1/one",
        "/manga/x/%252e%252e/one",
        "/MANGA/ONE",
        "/Manga/%4Fne",
    ],
)
def test_lax_decoder_spellings_meet_issue_10(raw: str) -> None:
    assert canonical_path(raw) == "/manga/one"


@pytest.mark.parametrize(
    "raw",
    [
        "/manga/one%ED%A0%80",  # lone surrogates: U+FFFD, never an error
        "/manga/one%ED%BF%BF",
        "/manga/one%80",
        "/manga/one%FF%FE",
        "/manga/one%E2%82",
        "/manga/one%F4%90%80%80",
        "/manga/one%F8%88%80%80%80",
        "/manga/one%ED%A0%80%80",
    ],
)
def test_invalid_utf8_keys_never_raise_and_stay_apart_issue_10(raw: str) -> None:
    key = canonical_path(raw)
    assert key.startswith("/manga/one") and key != "/manga/one"


def test_cesu8_surrogate_pairs_combine_issue_10() -> None:
    emoji = "/%F0%9F%98%80"
    assert canonical_path("/%ED%A0%BD%ED%B8%80") == canonical_path(emoji) == "/\U0001f600"
    assert canonical_path("/%u00e9") == canonical_path("/%C3%A9") == "/é"


def test_decoded_question_mark_joins_the_query_issue_10() -> None:
    k = match_keys("example.com", "/watch%3Fv=42", None)
    assert k.path == "/watch" and k.query == (("v", "42"),)
    k = match_keys("example.com", "/watch%253Fv%253D42", "t=1")
    assert k.path == "/watch" and k.query == (("t", "1"), ("v", "42"))
    assert match_keys("example.com", "/watch%23v=42", None).query is None  # a fragment


@pytest.mark.parametrize(
    ("query", "pair"),
    [
        ("x=1%26v=42", ("v", "42")),  # decoded before it is split
        ("x=1%3Bv=42", ("v", "42")),
        ("v%3D42", ("v", "42")),
        ("v%253D42", ("v", "42")),
        ("v=4%32", ("v", "42")),
        ("v=%25342", ("v", "42")),
        ("v=42%23x", ("v", "42")),  # decoded "#": the part before it counts too
        ("v=42%2523x", ("v", "42")),
        ("v=42%23x", ("v", "42#x")),  # and the whole value still does
        ("q=a%2Bb", ("q", "a b")),  # "+" and space meet, however spelt
        ("q=caf%E9", ("q", "caf\udce9")),  # legacy charset bytes kept
        ("q=%C0%AF", ("q", "/")),
    ],
)
def test_request_query_holds_every_lax_reading_issue_10(query: str, pair: tuple[str, str]) -> None:
    have = match_keys("example.com", "/watch", query).query
    assert have is not None and query_contains(have, (pair,))


def test_entry_query_read_like_the_request_issue_10() -> None:
    """A listed value with an encoded "&" needs both halves, which its own spelling and the
    decoded one both hold."""
    _, _, need = parse_url_value("http://e.com/s?q=rock%26roll")
    assert need == (("q", "rock"), ("roll", ""))
    for spelling in ("q=rock%26roll", "q=rock&roll", "roll&q=rock&x=1"):
        have = match_keys("e.com", "/s", spelling).query
        assert have is not None and query_contains(have, need)


def test_entry_path_with_encoded_delimiters_issue_10() -> None:
    assert parse_url_value("http://e.com/watch%3Fv=42") == ("e.com", "/watch", (("v", "42"),))
    assert parse_url_value("http://e.com/a%23b") == ("e.com", "/a", None)
    for value in ("http://e.com/dir%3Fx/", "http://e.com/dir%23x/", "http://e.com/d%253Fx/"):
        with pytest.raises(ValueError, match="prefix path cannot hold"):
            parse_url_value(value, prefix=True)


@pytest.mark.parametrize(
    ("path", "exact"),
    [
        ("/Manga/One", "/Manga/One"),
        ("/%4Danga/ONE/", "/Manga/ONE"),
        ("/M%C3%84NGA", "/MÄNGA"),
        ("/Stra%C3%9Fe", "/Straße"),  # folds to "strasse": a different length
        ("/a/B;x/../C", "/a/C"),
        ("/lower", "/lower"),
    ],
)
def test_exact_path_keeps_case_folded_path_does_not(path: str, exact: str) -> None:
    k = match_keys("example.com", path, None)
    assert k.exact_path == exact
    assert k.path == exact.casefold()
    assert canonical_path(path, fold=False) == exact
    host, cpath, _ = parse_url_value("http://example.com" + path, fold=False)
    assert keys.exact_url_key("http://example.com" + path) == host + cpath == "example.com" + exact


def test_exact_path_shares_the_folded_string_when_nothing_folds() -> None:
    k = match_keys("example.com", "/already/lower%20case", None)
    assert k.exact_path is k.path


@pytest.mark.parametrize(
    "raw",
    [
        "/manga/one.",  # Windows drops trailing dots and spaces of a name (IIS)
        "/manga/one..",
        "/manga/one%2e",
        "/manga/one%20",
        "/manga/one.%20.",
        "/manga./one",
        "/manga%20/one/",
        "/manga/one::$DATA",  # the NTFS default stream
        "/manga/one::$data",
        "/manga/one%3A%3A%24DATA",
        "/%EF%BD%8D%EF%BD%81%EF%BD%8E%EF%BD%87%EF%BD%81/one",  # fullwidth (best fit)
        "/manga%EF%BC%8Fone",  # fullwidth solidus
        "/manga%EF%BC%BCone",  # fullwidth reverse solidus
        "/manga/one%EF%BC%9Fpage=1",  # fullwidth "?"
        "/x/%EF%BC%8E%EF%BC%8E/manga/one",  # fullwidth ".."
    ],
)
def test_windows_and_best_fit_spellings_meet_issue_10(raw: str) -> None:
    assert canonical_path(raw) == "/manga/one"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("/x/.../y", "/x/.../y"),  # dots only: not a name to trim
        ("/a:b", "/a:b"),
        ("/one.jpg", "/one.jpg"),
        ("/one:$data.txt", "/one:$data.txt"),
    ],
)
def test_windows_trimming_leaves_other_names_alone(raw: str, key: str) -> None:
    assert canonical_path(raw) == key
