"""The fast path for entry values already in canonical form (issue 12) gives exactly what the
full rules give: on many generated variants (percent-encoding, case, dot segments, IDNA and IP
hosts, ports, userinfo, queries, fragments), `parse_url_value` and `parse_host_value` answer,
or refuse, as `_parse_url_value` / `_parse_host_value` do; and the fast path is really taken
for the canonical ones."""

from __future__ import annotations

import random

import pytest

from proxy.blocklist import keys
from proxy.blocklist.model import Entry, EntryType, compile_entry

SCHEMES = ["http://", "https://", "HTTP://", "Https://", "ftp://", "http:/", ""]
USERINFO = ["", "", "", "u@", "u:p@", "@"]
HOSTS = [
    "example.com",
    "a.example.com",
    "ex-am_ple.co.uk",
    "EXAMPLE.com",
    "Example.COM",
    "example.com.",
    ".example.com",
    "a..example.com",
    "127.0.0.1",
    "255.255.255.255",
    "256.1.1.1",
    "127.1",
    "0x7f.0.0.1",
    "01.2.3.4",
    "1.2.3.4.",
    "1.2.3",
    "123.com",
    "1a.2b",
    "123",
    "[::1]",
    "[2001:DB8::1]",
    "bücher.example",
    "xn--bcher-kva.example",
    "XN--BCHER-KVA.example",
    "exa%6Dple.com",
    "example%2ecom",
    "example。com",
    "ｅｘａｍｐｌｅ.com",
    "a" * 63 + ".com",
    "a" * 64 + ".com",
    ("abcdefghi." * 26) + "com",  # 263 characters
    ("abcdefghi." * 24) + "com",  # 243 characters
    "_srv.example",
    "-x.example",
    "",
    " example.com",
]
PORTS = ["", "", "", ":80", ":8080", ":", ":x", ":443"]
SEGMENTS = [
    "a",
    "B",
    "abc",
    "x-y_z~",
    "%41",
    "%2e",
    "%2E%2E",
    ".",
    "..",
    "a.",
    "a..",
    "...",
    "a ",
    "a%20",
    ";x",
    "a;b=1",
    "a::$DATA",
    "a:b",
    "%2F",
    "%252F",
    "",
    "ü",
    "%C3%BC",
    "ﬁ",
    "ＡＢ",
    "a\\b",
    "%5C",
    "%3F",
    "%23",
    "a=b",
    "!$&'()*+,=:@",
    "%u0041",
    "Ａ",
]
QUERIES = [
    None,
    "",
    "a=1",
    "v=42",
    "b=2&a=1",
    "a=1&a=1",
    "a",
    "a=",
    "=1",
    "+x=1",
    "a+b=c+d",
    "a=1;b=2",
    "a=%26",
    "a=1%26b=2",
    "&&",
    ";",
    "x=1?y",
    "A=B",
    "q=ü",
    "q=%C3%BC",
    "a=1&",
    "&a=1",
    "a==b",
    "p=/x/./y",
    "a=1#frag",
]
FRAGMENTS = ["", "", "", "#", "#f", "#a?b=1"]


def _value(rng: random.Random, canonical_bias: bool) -> str:
    if canonical_bias:  # mostly the parts the fast path accepts, so it is exercised often
        scheme = rng.choice(["http://", "https://", rng.choice(SCHEMES)])
        host = rng.choice(["example.com", "a.example.com", "127.0.0.1", rng.choice(HOSTS)])
        userinfo, port = "", rng.choice(["", "", "", rng.choice(PORTS)])
        segs = [rng.choice(["a", "B", "abc", "x-y_z~", rng.choice(SEGMENTS)]) for _ in range(3)]
    else:
        scheme, userinfo, host, port = (
            rng.choice(SCHEMES),
            rng.choice(USERINFO),
            rng.choice(HOSTS),
            rng.choice(PORTS),
        )
        segs = [rng.choice(SEGMENTS) for _ in range(rng.randrange(0, 5))]
    path = "".join("/" + s for s in segs[: rng.randrange(0, len(segs) + 1)])
    if rng.random() < 0.3:
        path += "/"
    if rng.random() < 0.1:
        path += "/"
    query = rng.choice(QUERIES)
    value = scheme + userinfo + host + port + path
    if query is not None:
        value += "?" + query
    value += rng.choice(FRAGMENTS)
    if rng.random() < 0.05:
        value = " " + value + " "
    return value


def _outcome(fn: object, *args: object, **kw: object) -> object:
    try:
        return ("ok", fn(*args, **kw))  # type: ignore[operator]
    except ValueError as e:
        return ("error", type(e).__name__, str(e))


def _variants(count: int) -> list[str]:
    rng = random.Random(12)
    return [_value(rng, canonical_bias=i % 2 == 0) for i in range(count)]


def test_url_fast_path_gives_the_full_rules_answer_on_many_variants() -> None:
    taken = 0
    for value in _variants(20000):
        if keys._canonical_url_value(value) is not None:
            taken += 1
        for prefix in (False, True):
            fast = _outcome(keys.parse_url_value, value, prefix=prefix)
            full = _outcome(keys._parse_url_value, value, prefix=prefix)
            assert fast == full, value
        # unfolded keys (case-sensitive sites) never take the fast path: same as before
        assert _outcome(keys.parse_url_value, value, fold=False) == _outcome(
            keys._parse_url_value, value, fold=False
        )
    assert taken > 1000  # the property is about the fast path: it must be exercised


def test_host_fast_path_gives_the_full_rules_answer_on_many_variants() -> None:
    rng = random.Random(5)
    values = [h + p for h in HOSTS for p in PORTS]
    values += [rng.choice(["", " "]) + h + rng.choice(["", ".", " "]) for h in HOSTS]
    values += ["http://example.com", "example.com/a", "u@example.com", "example.com?x"]
    taken = 0
    for value in values:
        if len(value) <= 253 and keys._CANONICAL_HOST_RE.fullmatch(value):
            taken += 1
        assert _outcome(keys.parse_host_value, value) == _outcome(keys._parse_host_value, value)
    assert taken >= 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://example.com/a/B/", ("example.com", "/a/b", None)),
        ("https://127.0.0.1", ("127.0.0.1", "/", None)),
        ("http://example.com/watch?v=42", ("example.com", "/watch", (("v", "42"),))),
        ("http://e.com/s?b=2&a=1+1", ("e.com", "/s", (("a", "1 1"), ("b", "2")))),
        ("http://e.com/s?", ("e.com", "/s", None)),
        ("http://e.com/s?&", ("e.com", "/s", None)),
    ],
)
def test_canonical_values_take_the_fast_path(value: str, expected: object) -> None:
    assert keys._canonical_url_value(value) == expected
    assert keys._parse_url_value(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "http://Example.com/a",  # case
        "http://example.com:80/a",  # port
        "http://u@example.com/a",  # userinfo
        "http://example.com/%61",  # an escape
        "http://example.com/a/../b",  # dot segments
        "http://example.com/a;p",  # params
        "http://example.com/a#f",  # a fragment
        "http://xn--bcher-kva.example/a",  # IDNA
        "http://127.1/a",  # a short IPv4 spelling
        "http://example.com//a",  # an empty segment
        "http://example.com/a.",  # a trailing dot
        "http://example.com/?q=%41",
        " http://example.com/a",
    ],
)
def test_other_values_take_the_full_path(value: str) -> None:
    assert keys._canonical_url_value(value) is None


def test_compile_entry_of_a_decoded_and_a_text_typed_entry_agree() -> None:
    """An entry built in Python may carry its type as text: the check that skips the enum
    lookup for decoded entries must not change what either compiles to."""
    for etype, value in [
        (EntryType.URL, "http://example.com/a?v=1"),
        (EntryType.PREFIX, "http://example.com/a/"),
        (EntryType.HOST, "example.com"),
        (EntryType.SHA256, "ab" * 32),
    ]:
        decoded = Entry("x", etype, value)
        texted = Entry("x", etype.value, value)  # type: ignore[arg-type]
        assert compile_entry(decoded) == compile_entry(texted)
        assert compile_entry(texted)[0] is etype


def _match_keys_by_path_key(host: str, path: str, query: str | None) -> keys.MatchKeys:
    """`keys._match_keys` as it was before its plain-path shortcut (issue 18): always through
    `path_key` and `request_query`."""
    chost = keys.canonical_host(host)
    pk = keys.path_key(path)
    key = chost + pk.folded
    root = len(chost) + 1
    ends = [root]
    if pk.folded != "/":
        i = key.find("/", root)
        while i != -1:
            ends.append(i)
            i = key.find("/", i + 1)
        ends.append(len(key))
    return keys.MatchKeys(
        host=chost,
        path=pk.folded,
        exact_path=pk.folded if pk.exact == pk.folded else pk.exact,
        query=keys.request_query(query, pk.tail),
        host_suffixes=keys.host_suffixes(chost),
        url_key=key,
        prefix_ends=tuple(ends),
    )


def test_request_match_keys_of_plain_paths_are_what_path_key_gives() -> None:
    """A request's keys take a shortcut for plain paths (no PathKey, no query parsing when
    there is none): on many request paths, plain and not, the keys are the full rules'."""
    rng = random.Random(18)
    plain = 0
    for _ in range(20000):
        segs = [rng.choice(["a", "B", "abc", "cold", "12", rng.choice(SEGMENTS)]) for _ in range(4)]
        path = "".join("/" + s for s in segs[: rng.randrange(0, 5)]) or "/"
        if rng.random() < 0.2:
            path += rng.choice(["/", ".", "//", "?", "#"])
        host = rng.choice(["example.com", "127.0.0.1", rng.choice(HOSTS)])
        query = rng.choice(QUERIES)
        plain += keys._plain(path)
        assert keys._match_keys(host, path, query) == _match_keys_by_path_key(host, path, query), (
            host,
            path,
            query,
        )
    assert plain > 5000  # the shortcut is exercised


def test_match_keys_fields_in_the_order_match_keys_passes_them() -> None:
    """`_match_keys` builds MatchKeys positionally (issue 18): the field order it assumes."""
    from dataclasses import fields

    assert [f.name for f in fields(keys.MatchKeys)] == [
        "host", "path", "exact_path", "query", "host_suffixes", "url_key", "prefix_ends",
    ]  # fmt: skip
