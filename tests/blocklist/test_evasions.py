"""Property tests: every textual variant of a listed URL is blocked; its neighbours are not.

A variant mixes, at random: case of host, trailing dot, default or other port, percent-encoding
of any path byte (either hex case) applied up to three times, `\\` or repeated slashes for `/`,
`;params` on segments, `.` and `x/..` (also percent-encoded) segments, a trailing slash, NFD
instead of NFC, IDN vs punycode, query pairs reordered, re-encoded, `+` for space, `;` as
separator, and extra pairs.

The listed item is drawn by hypothesis (and shrinks); the variant's choices come from a seeded
random.Random (the seed is drawn too), which keeps 200 examples per property fast.
"""

import random
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.snapshot import Snapshot

SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8).filter(
    lambda s: not s.isdigit()
)
IDN_LABEL = st.sampled_from(["bücher", "café", "münchen", "例え", "ü"])
SEG_CHARS = "abcdefgXYZ0129-_~!$'()*,=:@.é"
SEGMENT = st.text(SEG_CHARS, min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
QCHARS = "abcxyz019-_. é"
QPAIR = st.tuples(st.text(QCHARS, min_size=1, max_size=5), st.text(QCHARS, max_size=5))


@st.composite
def listed(draw: st.DrawFn) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    labels = draw(st.lists(LABEL, min_size=1, max_size=3))
    if draw(st.booleans()):
        labels[0] = draw(IDN_LABEL)
    labels.append(draw(st.sampled_from(["com", "example", "org"])))
    segments = draw(st.lists(SEGMENT, min_size=1, max_size=4))
    pairs = draw(st.lists(QPAIR, max_size=3))
    return labels, segments, pairs


def pct(ch: str, upper: bool) -> str:
    out = "".join(f"%{b:02X}" for b in ch.encode())
    return out if upper else out.lower()


def encode_chars(rng: random.Random, text: str) -> str:
    return "".join(pct(ch, rng.random() < 0.5) if rng.random() < 0.5 else ch for ch in text)


def maybe_nfd(rng: random.Random, text: str) -> str:
    return unicodedata.normalize("NFD", text) if rng.random() < 0.5 else text


def host_variant(rng: random.Random, labels: list[str]) -> str:
    out = []
    for label in labels:
        if not label.isascii() and rng.random() < 0.5:
            label = label.encode("idna").decode()  # punycode spelling
        out.append("".join(c.upper() if rng.random() < 0.5 else c for c in label))
    host = ".".join(out)
    if rng.random() < 0.5:
        host += "."
    return host + rng.choice(["", "", ":80", ":443", ":8080"])


def random_segment(rng: random.Random) -> str:
    seg = "".join(rng.choice(SEG_CHARS) for _ in range(rng.randint(1, 6)))
    return seg if seg not in (".", "..") else "d"


def path_variant(rng: random.Random, segments: list[str]) -> str:
    parts: list[str] = []
    for seg in segments:
        if rng.random() < 0.25:
            parts.append(rng.choice([".", "%2e", "%2E"]))
        if rng.random() < 0.25:
            parts.append(encode_chars(rng, random_segment(rng)))
            parts.append(rng.choice(["..", "%2e%2e", ".%2E", "..;x=1"]))
        seg = encode_chars(rng, maybe_nfd(rng, seg))
        if rng.random() < 0.25:
            seg += ";" + rng.choice(["jsessionid=1", "v=2", ""])
        parts.append(seg)
    path = ""
    for part in parts:
        path += rng.choice(["/", "/", "//", "\\", "/./"]) + part
    if rng.random() < 0.5:
        path += "/"
    for _ in range(rng.randint(0, 2)):
        path = path.replace("%", "%25")  # another round of encoding
    return path


def random_pair(rng: random.Random) -> tuple[str, str]:
    name = "".join(rng.choice(QCHARS) for _ in range(rng.randint(1, 4)))
    return name, "".join(rng.choice(QCHARS) for _ in range(rng.randint(0, 4)))


def query_variant(rng: random.Random, pairs: list[tuple[str, str]], extra: bool) -> str | None:
    items = list(pairs)
    if extra:
        items += [random_pair(rng) for _ in range(rng.randint(0, 2))]
    rng.shuffle(items)
    if not items:
        return rng.choice([None, ""])
    rendered = []
    for name, value in items:
        name = encode_chars(rng, maybe_nfd(rng, name))
        value = encode_chars(rng, maybe_nfd(rng, value))
        space = rng.choice(["+", "%20"])
        rendered.append(f"{name.replace(' ', space)}={value.replace(' ', space)}")
    return rng.choice(["&", ";"]).join(rendered)


def listed_url(labels: list[str], segments: list[str], pairs: list[tuple[str, str]]) -> str:
    query = "&".join(f"{n}={v}" for n, v in pairs).replace(" ", "%20")
    return "http://" + ".".join(labels) + "/" + "/".join(segments) + ("?" + query if pairs else "")


@SETTINGS
@given(listed(), st.randoms(use_true_random=True))
def test_every_variant_of_a_listed_url_is_blocked(
    item: tuple[list[str], list[str], list[tuple[str, str]]], rng: random.Random
) -> None:
    labels, segments, pairs = item
    snap = Snapshot.compile(
        [Entry("e", EntryType.URL, listed_url(labels, segments, pairs))], version=1, now=0
    )
    host = host_variant(rng, labels)
    path = path_variant(rng, segments)
    query = query_variant(rng, pairs, extra=True)
    if not pairs and query is not None and rng.random() < 0.5:
        query = query + "&utm=1"
    assert snap.check(host, path, query) is not None, (host, path, query)


@SETTINGS
@given(listed(), st.randoms(use_true_random=True))
def test_every_variant_under_a_listed_prefix_is_blocked(
    item: tuple[list[str], list[str], list[tuple[str, str]]], rng: random.Random
) -> None:
    labels, segments, _ = item
    cut = rng.randint(1, len(segments))
    prefix = "http://" + ".".join(labels) + "/" + "/".join(segments[:cut]) + "/"
    snap = Snapshot.compile([Entry("p", EntryType.PREFIX, prefix)], version=1, now=0)
    host = host_variant(rng, labels)
    path = path_variant(rng, segments)
    assert snap.check(host, path, query_variant(rng, [], extra=True)) is not None, (
        host,
        path,
    )


@SETTINGS
@given(listed(), st.randoms(use_true_random=True))
def test_subdomains_of_a_listed_host_are_blocked(
    item: tuple[list[str], list[str], list[tuple[str, str]]], rng: random.Random
) -> None:
    labels, segments, _ = item
    snap = Snapshot.compile([Entry("h", EntryType.HOST, ".".join(labels))], version=1, now=0)
    sub = ["w" + str(rng.randint(0, 99)) for _ in range(rng.randint(0, 2))]
    host = host_variant(rng, sub + labels)
    assert snap.check(host, path_variant(rng, segments), None) is not None, host


@SETTINGS
@given(listed(), st.randoms(use_true_random=True))
def test_neighbours_of_a_listed_url_are_not_blocked(
    item: tuple[list[str], list[str], list[tuple[str, str]]], rng: random.Random
) -> None:
    labels, segments, pairs = item
    host = ".".join(labels)
    snap = Snapshot.compile(
        [
            Entry("u", EntryType.URL, listed_url(labels, segments, pairs)),
            Entry("p", EntryType.PREFIX, "http://" + host + "/" + "/".join(segments) + "/"),
        ],
        version=1,
        now=0,
    )
    query = "&".join(f"{n}={v}" for n, v in pairs).replace(" ", "%20") or None
    sibling = segments[:-1] + [segments[-1] + rng.choice(["foo", "x", "-", "é"])]
    assert snap.check(host, "/" + "/".join(sibling), query) is None
    assert snap.check(host, "/" + "/".join(segments[:-1]), query) is None  # parent
    other = rng.choice(["other-", "x", "www."]) + host
    assert snap.check(other, "/" + "/".join(segments), query) is None
    assert snap.check(labels[0] + ".invalid", "/" + "/".join(segments), query) is None
    if pairs:
        snap_url_only = Snapshot.compile(
            [Entry("u", EntryType.URL, listed_url(labels, segments, pairs))], version=1, now=0
        )
        fewer = "&".join(f"{n}={v}" for n, v in pairs[1:]).replace(" ", "%20")
        assert snap_url_only.check(host, "/" + "/".join(segments), fewer) is None


@SETTINGS
@given(listed(), st.randoms(use_true_random=True))
def test_neighbours_of_a_listed_host_are_not_blocked(
    item: tuple[list[str], list[str], list[tuple[str, str]]], rng: random.Random
) -> None:
    labels, segments, _ = item
    snap = Snapshot.compile([Entry("h", EntryType.HOST, ".".join(labels))], version=1, now=0)
    path = "/" + "/".join(segments)
    prefix = rng.choice(["x", "not", "0"])
    assert snap.check(prefix + ".".join(labels), path, None) is None  # "xpirate.example"
    assert snap.check(".".join(labels) + ".evil", path, None) is None
    if len(labels) > 1:
        assert snap.check(".".join(labels[1:]), path, None) is None  # the parent domain
