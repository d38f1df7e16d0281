"""The canonical request target: RFC 9112 §3.2 forms, RFC 3986 §6.2.2 normalisation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.rfc.target import MAX_TARGET_BYTES, BadTarget, Target, canonical_target

H = b"example.com"


def fwd(raw: bytes, host: bytes | None = H) -> bytes:
    return canonical_target(raw, host).raw_path_query


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", b"/"),
        (b"/a/b", b"/a/b"),
        (b"/%7euser/%41%62", b"/~user/Ab"),  # §6.2.2.2 unreserved decoded
        (b"/a%2fb", b"/a%2Fb"),  # reserved kept, hex uppercased (§6.2.2.1)
        (b"/a%2Fb", b"/a%2Fb"),
        (b"/a/./b/../c", b"/a/c"),  # §6.2.2.3 dot segments
        (b"/a/%2e%2E/c", b"/c"),  # dot segments after decoding
        (b"/../../x", b"/x"),
        (b"/a/..", b"/"),
        (b"/a/b/.", b"/a/b/"),
        (b"//double//slash/", b"//double//slash/"),  # nothing else changes
        (b"/a;p=1/b", b"/a;p=1/b"),
        (b"/a\\b", b"/a\\b"),
        (b"/p?b=2&a=1", b"/p?b=2&a=1"),  # query order kept
        (b"/p?x=%2f%7e", b"/p?x=%2F%7E"),  # query: uppercase hex only
        (b"/p?", b"/p?"),  # empty query is not no query
        (b"/p?a=/../", b"/p?a=/../"),  # dots in the query are data
        (b"/%E2%82%AC", b"/%E2%82%AC"),
    ],
)
def test_forward_form_rfc3986_6_2_2(raw: bytes, expected: bytes) -> None:
    assert fwd(raw) == expected


def test_fields_origin_form_rfc9112_3_2_1() -> None:
    t = canonical_target(b"/a?b", b"Example.COM.:80")
    assert t == Target(
        scheme="http",
        host="example.com",
        port=None,
        path="/a",
        query="b",
        raw_path_query=b"/a?b",
        authority="example.com",
    )
    assert t.url == "http://example.com/a?b"


def test_query_none_without_question_mark_rfc9112_3_2() -> None:
    assert canonical_target(b"/a", H).query is None
    assert canonical_target(b"/a?", H).query == ""


@pytest.mark.parametrize(
    ("host", "authority", "port"),
    [
        (b"example.com:8080", "example.com:8080", 8080),
        (b"example.com:080", "example.com", None),  # leading zeros, then default port
        (b"example.com:08080", "example.com:8080", 8080),
        (b"EXAMPLE.com", "example.com", None),
        (b"example.com:", "example.com", None),  # RFC 3986 §6.2.3 empty port
        (b"[::1]:8080", "[::1]:8080", 8080),
        (b"[0:0::1]", "[::1]", None),
        (b"127.0.0.1", "127.0.0.1", None),
        ("bücher.example".encode(), "xn--bcher-kva.example", None),  # IDNA
        (b"XN--BCHER-KVA.example", "xn--bcher-kva.example", None),
    ],
)
def test_host_normalised_rfc3986_6_2_2_1(host: bytes, authority: str, port: int | None) -> None:
    t = canonical_target(b"/", host)
    assert t.authority == authority and t.port == port


def test_https_default_port_rfc3986_6_2_3() -> None:
    t = canonical_target(b"/", b"example.com:443", default_scheme="https")
    assert t.port is None and t.scheme == "https"
    assert canonical_target(b"/", b"example.com:443").port == 443


def test_absolute_form_wins_over_host_rfc9112_3_2_2() -> None:
    t = canonical_target(b"HTTP://Other.Example:80/x?y", b"example.com")
    assert (t.scheme, t.authority, t.raw_path_query) == ("http", "other.example", b"/x?y")


@pytest.mark.parametrize(
    ("raw", "pq"),
    [(b"http://h", b"/"), (b"http://h?q", b"/?q"), (b"https://h:443/a", b"/a")],
)
def test_absolute_form_empty_path_rfc3986_6_2_3(raw: bytes, pq: bytes) -> None:
    assert canonical_target(raw, None).raw_path_query == pq


@pytest.mark.parametrize(
    ("raw", "host", "reason"),
    [
        (b"/a#frag", H, "fragment"),
        (b"/a b", H, "control-or-space"),
        (b"/a\tb", H, "control-or-space"),
        (b"/a\x7fb", H, "control-or-space"),
        (b"/a\x00", H, "control-or-space"),
        ("/caf\u00e9".encode(), H, "non-ascii"),
        (b"/a%zz", H, "bad-escape"),
        (b"/a%4", H, "bad-escape"),
        (b"/a%", H, "bad-escape"),
        (b"/a%00b", H, "nul-escape"),
        (b"/a?x=%00", H, "nul-escape"),
        (b"/a?x=%g0", H, "bad-escape"),
        (b"/", None, "missing-host"),
        (b"/", b"", "missing-host"),
        (b"/", b"user@example.com", "userinfo"),
        (b"http://user:pw@h/", None, "userinfo"),
        (b"/", b"a.com, b.com", "multiple-host"),
        (b"/", b"a.com,a.com", "multiple-host"),
        (b"/", b"exa mple.com", "bad-host"),
        (b"/", b"a..com", "bad-host"),
        (b"/", b"a_b!.com", "bad-host"),
        (b"/", b"example.com:99999", "bad-host-port"),
        (b"/", b"example.com:0", "bad-host-port"),
        (b"/", b"example.com:8x", "bad-host-port"),
        (b"/", b"a:1:2", "bad-host"),
        (b"/", b"[::1", "bad-host"),
        (b"/", b"[zz::1]", "bad-host"),
        (b"example.com:443", H, "authority-form"),
        (b"ftp://h/x", H, "scheme"),
        (b"http:///x", H, "missing-uri-host"),
        (b"http://good/x", b"bad host", "bad-host"),
        (b"", H, "empty-target"),
    ],
)
def test_refused_400_rfc9112_3_2(raw: bytes, host: bytes | None, reason: str) -> None:
    with pytest.raises(BadTarget) as e:
        canonical_target(raw, host)
    assert (e.value.status, e.value.reason) == (400, reason)


def test_asterisk_form_flagged_rfc9112_3_2_4() -> None:
    with pytest.raises(BadTarget) as e:
        canonical_target(b"*", H)
    assert e.value.asterisk and e.value.status == 400


def test_too_long_414_rfc9112_3() -> None:
    with pytest.raises(BadTarget) as e:
        canonical_target(b"/" + b"a" * MAX_TARGET_BYTES, H)
    assert e.value.status == 414


def test_long_target_not_memoised_but_works_rfc9112_3() -> None:
    raw = b"/" + b"a" * 2000
    assert canonical_target(raw, H).raw_path_query == raw


def test_memoised_returns_same_object() -> None:
    assert canonical_target(b"/memo", H) is canonical_target(b"/memo", H)


# --- properties: idempotence and equivalent variants ------------------------------------

_SEG_CHARS = "abcXYZ019-._~!$&'()*+,;=:@"
_segment = st.one_of(
    st.text(alphabet=_SEG_CHARS, max_size=6),
    st.sampled_from([".", "..", "%2e", "%2E%2e", "%2F", "%2f", "%41", "%7e", "%E2%82%ac", ""]),
)
_path = st.lists(_segment, max_size=8).map(lambda segs: "/" + "/".join(segs))
_query = st.one_of(
    st.none(),
    st.text(alphabet=_SEG_CHARS + "/?%2f", max_size=10).filter(
        lambda q: "%" not in q.replace("%2f", "")
    ),
)
_host = st.from_regex(r"[a-zA-Z0-9]{1,10}(\.[a-zA-Z0-9]{1,10}){0,2}", fullmatch=True)


def _raw(path: str, query: str | None) -> bytes:
    return (path + ("" if query is None else "?" + query)).encode("ascii")


@settings(max_examples=100, deadline=None)
@given(path=_path, query=_query, host=_host)
def test_idempotent_rfc3986_6_2_2(path: str, query: str | None, host: str) -> None:
    t = canonical_target(_raw(path, query), host.encode())
    again = canonical_target(t.raw_path_query, t.authority.encode())
    assert again == t


_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"


def _variant(path: str, data: st.DataObject) -> str:
    """An equivalent spelling: unreserved characters escaped, hex case flipped, dot segments
    inserted."""
    out = []
    skip = 0
    for ch in path:
        if skip:  # inside an existing %XX escape
            skip -= 1
            out.append(ch.lower() if data.draw(st.booleans()) else ch)
        elif ch == "%":
            skip = 2
            out.append(ch)
        elif ch in _UNRESERVED and data.draw(st.booleans()):
            esc = f"%{ord(ch):02X}"
            out.append(esc.lower() if data.draw(st.booleans()) else esc)
        elif ch == "/" and data.draw(st.integers(0, 4)) == 0:
            out.append("/./" if data.draw(st.booleans()) else "/zz/../")
        else:
            out.append(ch)
    return "".join(out)


@settings(max_examples=100, deadline=None)
@given(path=_path, host=_host, data=st.data())
def test_equivalent_variants_one_form_rfc3986_6_2_2(
    path: str, host: str, data: st.DataObject
) -> None:
    base = canonical_target(_raw(path, None), host.encode())
    variant = _variant(base.path, data)
    host_variant = host.upper() + data.draw(st.sampled_from(["", ".", ":80", ".:80"]))
    other = canonical_target(variant.encode("ascii"), host_variant.encode())
    assert other.raw_path_query == base.raw_path_query
    assert other.authority == base.authority


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=40))
def test_arbitrary_bytes_never_crash_rfc9112_3_2(raw: bytes) -> None:
    try:
        t = canonical_target(b"/" + raw, H)
    except BadTarget as e:
        assert e.status == 400
    else:
        assert t.raw_path_query.isascii() and b"#" not in t.raw_path_query
        assert b"%00" not in t.raw_path_query
