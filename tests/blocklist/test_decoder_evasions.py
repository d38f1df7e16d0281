"""Property test of issue 10's rule, admit and match keys together: every spelling that the
laxest common decoder (tests/laxest_decoder.py) reads as a listed resource is refused by
`canonical_target` (400) or matched by the snapshot (451); and what browsers send for
unlisted resources is neither."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.rfc.target import BadTarget, canonical_target
from tests.laxest_decoder import laxest_resolve

SETTINGS = settings(max_examples=400, deadline=None)
SNAP = Snapshot.compile(
    [
        Entry("u", EntryType.URL, "http://example.com/manga/ch1"),
        Entry("q", EntryType.URL, "http://example.com/watch?v=42"),
    ],
    version=1,
    now=0.0,
)


def _char(c: str, rng: random.Random) -> str:
    """One character of a listed path, spelt one of the ways some decoder reads as it."""
    b = ord(c)
    return rng.choice(
        [
            c,
            c.upper(),
            f"%{b:02X}",
            f"%{b:02x}",
            f"%25{b:02X}",  # double
            f"%2525{b:02X}",  # triple
            f"%u{b:04X}",  # IIS
            f"%{0xC0 | b >> 6:02X}%{0x80 | b & 0x3F:02X}",  # overlong, 2 bytes
            f"%E0%{0x80 | b >> 6:02X}%{0x80 | b & 0x3F:02X}",  # overlong, 3 bytes
            "".join(f"%{x:02X}" for x in chr(0xFEE0 + b).encode()),  # fullwidth (best fit)
        ]
    )


_SEPARATORS = [
    "/", "//", "\\", "%2F", "%2f", "%5C", "%252F", "%255C", "%C0%AF", "%E0%80%AF", "%u002F",
    "/./", "/x/../", "/x/..;/", "/x/%2e%2e/", "/x/%252e%252e/", ";p=1/", "%3Bp/", "/x/..%2F",
    "%EF%BC%8F", "%EF%BC%BC", "./",
]  # fmt: skip
_SUFFIXES = [
    "", "/", "%3F", "%3Fx=1", "%3f", "%23", "%23f", "%253F", "%2523", ";jsessionid=1", "%3B",
    "%00", "%2500", "%00.jpg", "?utm=1", "%80", "%ED%A0%80", "%C0%80", "%u003F", "%C0%BF",
    ".", "%2e", "%20", ". .", "::$DATA", "%3A%3A%24data", "%EF%BC%9F", "%EF%BC%83",
]  # fmt: skip


def _spell(segments: list[str], rng: random.Random) -> str:
    out = ""
    for seg in segments:
        out += rng.choice(_SEPARATORS) if out else rng.choice(["/", "//", "/./", "/x/../"])
        out += "".join(_char(c, rng) for c in seg)
    return out + rng.choice(_SUFFIXES)


def _verdict(raw: str) -> str:
    try:
        t = canonical_target(raw.encode("ascii"), b"example.com")
    except BadTarget:
        return "refused"
    return "matched" if SNAP.check_target(t) is not None else "forwarded"


@SETTINGS
@given(st.randoms(use_true_random=True))
def test_listed_path_never_forwarded_issue_10(rng: random.Random) -> None:
    raw = _spell(["manga", "ch1"], rng)
    assert laxest_resolve(raw)[0] == "/manga/ch1", raw  # the oracle agrees it is the listed one
    assert _verdict(raw) != "forwarded", raw


@SETTINGS
@given(st.randoms(use_true_random=True))
def test_listed_query_never_forwarded_issue_10(rng: random.Random) -> None:
    path = _spell(["watch"], rng).removesuffix("?utm=1")
    pair = "".join(_char(c, rng) for c in "v") + rng.choice(["=", "%3D", "%253D"])
    pair += "".join(_char(c, rng) for c in "42")
    query_sep = rng.choice(["?", "%3F", "%253F"])
    if "%3F" in path or "%253F" in path or "%3f" in path or "%u003F" in path:
        query_sep = "&"  # the path spelling already opened the query
    raw = path + query_sep + rng.choice(["", "x=1&", "x=1%26", "t=2;"]) + pair
    raw += rng.choice(["", "&y=2", "%23frag", "%2523f"])
    resolved_path, pairs = laxest_resolve(raw)
    if resolved_path != "/watch" or ("v", "42") not in pairs:
        return  # a spelling the oracle reads otherwise (e.g. a fragment before the query)
    assert _verdict(raw) != "forwarded", raw


_BROWSER_SEGMENTS = st.sampled_from(
    [
        "manga", "ch2", "caf%C3%A9", "%E6%BC%AB%E7%94%BB", "a%20b", "What%3F", "group%2Fproject",
        "%23tag", "100%25", "x;jsessionid=AB12", "file.tar.gz", "%F0%9F%98%80", "~user", "a+b",
    ]
)  # fmt: skip
_BROWSER_QUERIES = st.sampled_from(
    [None, "q=a+b", "q=caf%C3%A9", "t=%0D%0A", "next=http%3A%2F%2Fx%2Fa%253Fb", "v=43", ""]
)


@SETTINGS
@given(st.lists(_BROWSER_SEGMENTS, min_size=1, max_size=4), _BROWSER_QUERIES)
def test_what_browsers_send_is_forwarded_issue_10(segments: list[str], query: str | None) -> None:
    raw = "/" + "/".join(segments) + ("" if query is None else "?" + query)
    if laxest_resolve(raw)[0] == "/manga/ch1":
        return
    assert _verdict(raw) == "forwarded", raw
