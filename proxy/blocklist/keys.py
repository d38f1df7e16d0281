"""Match keys: the one canonicalisation used to decide whether a request is blocked.

The cache key and the upstream request use the *forward form* of the target (RFC 3986 §6.2.2
only). Matching uses this module instead, which is deliberately lossy so that it over-blocks
rather than under-blocks: two spellings that any common origin might treat as the same resource
must produce the same key. Entries go through the same functions when they are loaded, so a
listed URL and every textual variant of it meet at one key. Modelled on Google Safe Browsing's
URL canonicalisation (developers.google.com/safe-browsing/v4/urls-hashing).

Rules, in order (each documented with examples in blocklists/FORMAT.md):

host   percent-decoded (repeatedly, bounded), NFC, ideographic full stops as dots, port dropped
       (any port: ports are ignored, not only the default ones), lowercased, leading/trailing
       and repeated dots removed, numeric IPv4 spellings (decimal, octal, hex, short forms) to
       dotted quad, IPv6 to its compressed form in brackets, IDN to punycode (UTS #46).
path   percent-decoded repeatedly (at most `MAX_DECODE_ROUNDS` rounds, so `%252e` is `.`;
       admit refuses what would still decode after that), IIS `%uHHHH` read too, then UTF-8
       read as laxly as any decoder reads it (overlong `%C0%AF` is `/`, CESU-8 surrogate pairs
       combine; admit refuses these in paths, entries and queries still meet them), NFKC
       (IIS's best fit reads fullwidth `／` as `/`), `\\` to `/`; a decoded `#` ends the path and a decoded `?` ends it too, the rest joining the
       query (an origin that decodes before it parses reads `/watch%3Fv=1` as `/watch?v=1`);
       `;params` cut from each segment, empty segments dropped (repeated slashes and the
       trailing slash do not count), trailing dots and spaces of a name and a `::$DATA`
       suffix dropped (Windows file APIs behind IIS), `.` and `..` resolved (after params are cut, so `..;` is
       `..`, as Tomcat reads it), then case-folded. Paths are case-sensitive on most origins
       but not on all (IIS, case-insensitive file systems): folding over-blocks `/MANGA` next
       to a listed `/manga` on the former, where keeping case would let `/MANGA` through on
       the latter. A blocklist errs on the side of blocking, so folding is the default; a site
       that declares `case_sensitive_paths` is checked against the unfolded path
       (`MatchKeys.exact_path`, `exact_url_key`, `Snapshot.check(..., case_sensitive=True)`).
query  decoded as the path is (whole, before splitting: an origin that decodes first reads
       `a=1%26v=42` as two pairs), split on `&` and `;`, each pair split at the first `=`,
       `+` read as a space, then sorted: a multiset of pairs. A request's pairs also include
       those before a decoded `#`. A url entry with a query matches requests whose query
       holds all of its pairs (extra pairs and order do not matter); a url entry without a
       query matches any query.
scheme ignored: http and https are blocked alike.

Nothing here raises for request input: every string has some key. Entry values are parsed by
`parse_url_value` / `parse_host_value`, which do raise ValueError for values that are not URLs
or host names.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_to_bytes

import idna

from proxy.rfc.target import MAX_DECODE_ROUNDS

# The version of the rules above, as entries see them. A table compiled elsewhere (a signer's
# shipped table, blocklists/FORMAT.md "Compiled tables") holds keys made by the signer's copy of
# this module: a node uses it only when both say the same version. Bump it with any change to
# a key an entry value gets (tests/blocklist/test_canonicaliser_version.py fails until you do).
CANONICALISER_VERSION = 1
MATCH_CACHE_SIZE = 8192  # distinct (host, path, query) inputs memoised for the request path
MEMO_MAX_CHARS = 1024  # longer inputs are computed each time, so the memo stays small

QueryPairs = tuple[tuple[str, str], ...]

_PLAIN_HOST = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z_-][a-z0-9_-]*")
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_DEC = re.compile(r"[0-9]+")
_OCT = re.compile(r"[0-7]+")
_HEX = re.compile(r"[0-9a-fA-F]*")
_VALID_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
_SCHEME = re.compile(r"[hH][tT][tT][pP][sS]?://")
_QUERY_SEP = re.compile(r"[&;]")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


@dataclass(frozen=True, slots=True)
class MatchKeys:
    """Everything the snapshot looks up for one request, computed once per distinct input."""

    host: str  # canonical host
    path: str  # canonical path, "/" for the root, never a trailing "/" otherwise
    exact_path: str  # `path` before case folding (the same object when folding changes nothing)
    query: QueryPairs | None  # sorted pairs; None when the request had no "?"
    host_suffixes: tuple[str, ...]  # host, parent domain, ..., top label (IP literals: host)
    url_key: str  # url_key(host, path)
    # url_key[:prefix_ends[d]] is the prefix key at depth d: "host/", "host/a", "host/a/b", ...
    # Offsets rather than strings, so a long path costs O(length), not O(length^2).
    prefix_ends: tuple[int, ...]


def url_key(host: str, path: str) -> str:
    """The string url and prefix entries are indexed by; a canonical host never holds "/"."""
    return host + path


def match_keys(host: str, path: str, query: str | None) -> MatchKeys:
    """Match keys of a request (target host, path, query); memoised for the hit path."""
    if len(path) + len(host) + (len(query) if query else 0) > MEMO_MAX_CHARS:
        return _match_keys(host, path, query)
    return _match_keys_memo(host, path, query)


def _match_keys(host: str, path: str, query: str | None) -> MatchKeys:
    chost = canonical_host(host)
    if _plain(path):
        # `path_key`'s own first answer, without its PathKey: a new URL's keys (each cold
        # miss's) are made here, and most paths are plain (tests/blocklist/test_keys_fast.py).
        exact = path
        cpath = path.lower()
        tail = None
    else:
        pk = path_key(path)
        exact, cpath, tail = pk.exact, pk.folded, pk.tail
    key = chost + cpath
    root = len(chost) + 1
    ends = [root]
    if cpath != "/":
        i = key.find("/", root)
        while i != -1:
            ends.append(i)
            i = key.find("/", i + 1)
        ends.append(len(key))
    # Positional, in MatchKeys' field order (tests/blocklist/test_keys_fast.py holds it):
    # keywords cost every new URL 0.24 µs more (issue 18).
    return MatchKeys(
        chost,  # host
        cpath,  # path
        cpath if exact == cpath else exact,  # exact_path
        None if query is None and tail is None else request_query(query, tail),  # query
        host_suffixes(chost),  # host_suffixes
        key,  # url_key
        tuple(ends),  # prefix_ends
    )


_match_keys_memo = lru_cache(maxsize=MATCH_CACHE_SIZE)(_match_keys)


@lru_cache(maxsize=4096)
def host_suffixes(chost: str) -> tuple[str, ...]:
    """A canonical host and each parent domain; host entries match any of them. Memoised as
    `canonical_host` is: a node serves few hosts and many paths, and every new path's match
    keys (each cold miss's) asked for them again (1.2-2.4 µs a time, issue 18)."""
    if chost.startswith("[") or len(chost) > 253 or _is_dotted_quad(chost):
        return (chost,)
    labels = chost.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


# -- decoding -------------------------------------------------------------------------------

_U_ESCAPE = re.compile(rb"%[uU]([0-9a-fA-F]{4})")


def _u_escape(m: re.Match[bytes]) -> bytes:
    return chr(int(m[1], 16)).encode("utf-8", "surrogatepass")


def _decode(text: str) -> str:
    """Percent-decode until stable, at most MAX_DECODE_ROUNDS rounds, reading IIS's `%uHHHH`
    too, then UTF-8 as laxly as any decoder would (`_lax_utf8`)."""
    if "%" not in text:
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote_to_bytes(_U_ESCAPE.sub(_u_escape, raw) if b"%u" in raw.lower() else raw)
        if decoded == raw:
            break
        raw = decoded
        if b"%" not in raw:
            break
    return _lax_utf8(raw)


def _lax_utf8(raw: bytes) -> str:
    """UTF-8 read the way the laxest decoders read it: overlong forms give their code point
    (`C0 AF` is `/`, as old IIS and Java read it), a surrogate pair encoded as two 3-byte
    sequences (CESU-8) gives the character it encodes, a lone surrogate gives U+FFFD; bytes
    that start no sequence are kept as `surrogateescape` characters. Valid UTF-8 decodes as
    usual (the fast path)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    i, n = 0, len(raw)
    pending_high = -1  # a decoded high surrogate waiting for its low half
    while i < n:
        cp, j = _lax_sequence(raw, i, n)
        if pending_high >= 0:
            if 0xDC00 <= cp < 0xE000:
                out.append(chr(0x10000 + ((pending_high - 0xD800) << 10) + (cp - 0xDC00)))
                pending_high = -1
                i = j
                continue
            out.append("\ufffd")
            pending_high = -1
        if cp < 0:  # bytes that form no sequence, kept one by one
            out.extend(chr(0xDC00 + x) for x in raw[i:j])
        elif 0xD800 <= cp < 0xDC00:
            pending_high = cp
        elif 0xDC00 <= cp < 0xE000 or cp > 0x10FFFF:
            out.append("\ufffd")
        else:
            out.append(chr(cp))
        i = j
    if pending_high >= 0:
        out.append("\ufffd")
    return "".join(out)


def _lax_sequence(raw: bytes, i: int, n: int) -> tuple[int, int]:
    """(code point, end) of the sequence at `i`, overlong forms accepted; (-1, end) when the
    bytes there form none."""
    b = raw[i]
    if b < 0x80:
        return b, i + 1
    if 0xC0 <= b < 0xE0:
        need, cp = 1, b & 0x1F
    elif 0xE0 <= b < 0xF0:
        need, cp = 2, b & 0x0F
    elif 0xF0 <= b < 0xF8:
        need, cp = 3, b & 0x07
    else:  # a continuation byte without a lead, or a byte no UTF-8 form starts with
        return -1, i + 1
    j = i + 1
    while j < n and j - i <= need and 0x80 <= raw[j] < 0xC0:
        cp = (cp << 6) | (raw[j] & 0x3F)
        j += 1
    if j - i - 1 != need:  # truncated
        return -1, j
    return cp, j


def _nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _nfkc(text: str) -> str:
    """Compatibility forms too, for paths and queries: IIS's best-fit mapping reads a
    fullwidth `／` (U+FF0F) as `/` and `ｍａｎｇａ` as `manga`, so the keys do as well."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _windows_segment(seg: str) -> str:
    """A segment as Windows file APIs (IIS) resolve it: trailing dots and spaces dropped
    (`ch1.` and `ch1%20` are `ch1`), the `::$DATA` stream suffix cut. A segment of dots
    only is left alone (`.` and `..` are resolved apart)."""
    if seg[-1] in ". ":
        stripped = seg.rstrip(". ")
        if stripped:
            seg = stripped
    if seg[-6:].lower() == ":$data":
        seg = seg.partition(":")[0] or seg
    return seg


# -- path and query -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathKey:
    """A request or entry path, read laxly: `exact` before case folding, `folded` after,
    `tail` what followed a decoded `?` (query text an origin that decodes first would see),
    `cut` whether a decoded `?` or `#` ended the path early."""

    exact: str
    folded: str
    tail: str | None
    cut: bool


def _plain(path: str) -> bool:
    return (
        path.startswith("/")
        and path.isascii()
        and "%" not in path
        and "\\" not in path
        and ";" not in path
        and "//" not in path
        and "/." not in path
        and "./" not in path
        and not path.endswith(".")
        and " " not in path
        and ":$" not in path
        and "?" not in path
        and "#" not in path
        and (len(path) == 1 or not path.endswith("/"))
    )


def path_key(path: str) -> PathKey:
    """The lossy path key; see the module docstring for the rules."""
    if _plain(path):
        return PathKey(path, path.lower(), None, False)
    text = _nfkc(_decode(path)).replace("\\", "/")
    tail: str | None = None
    cut = False
    hash_at = text.find("#")
    if hash_at != -1:
        text, cut = text[:hash_at], True
    q_at = text.find("?")
    if q_at != -1:
        text, tail, cut = text[:q_at], text[q_at + 1 :], True
    out: list[str] = []
    for seg in text.split("/"):
        if ";" in seg:
            seg = seg.partition(";")[0]
        if not seg or seg == ".":
            continue
        if seg[-1] in ". " or ":" in seg:
            seg = _windows_segment(seg)
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    exact = "/" + "/".join(out)
    return PathKey(exact, exact.casefold(), tail, cut)


def canonical_path(path: str, *, fold: bool = True) -> str:
    """The lossy path key (folded unless `fold` is False); see the module docstring."""
    k = path_key(path)
    return k.folded if fold else k.exact


def _query_component(text: str) -> str:
    return text.replace("+", " ")


def _pairs(text: str, pairs: list[tuple[str, str]]) -> None:
    for part in _QUERY_SEP.split(text):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_query_component(name), _query_component(value)))


def canonical_query(query: str | None, path_tail: str | None = None) -> QueryPairs | None:
    """Sorted (name, value) pairs; None when there is no query at all (no "?", raw or
    decoded in the path). Decoded first, then split: an origin that decodes the whole query
    before splitting reads `a=1%26v=42` as two pairs, so the key does too (an entry's value
    is read the same way, so a listed `q=a%26b` still matches itself)."""
    if query is None and path_tail is None:
        return None
    pairs: list[tuple[str, str]] = []
    for part in (path_tail, query):
        if part:
            _pairs(_nfkc(_decode(part)), pairs)
    pairs.sort()
    return tuple(pairs)


def request_query(query: str | None, path_tail: str | None = None) -> QueryPairs | None:
    """`canonical_query` for a request, plus the pairs an origin that decodes first and then
    drops a decoded `#...` would see: `v=42%23x` also holds `v=42`. Extra pairs in a request
    only ever add matches."""
    pairs = canonical_query(query, path_tail)
    if pairs is None:
        return None
    extra: list[tuple[str, str]] = []
    for part in (path_tail, query):
        if part and "%" in part:
            decoded = _nfkc(_decode(part))
            if "#" in decoded:
                _pairs(decoded.partition("#")[0], extra)
    if not extra:
        return pairs
    return tuple(sorted(pairs + tuple(extra)))


def query_contains(have: QueryPairs, need: QueryPairs) -> bool:
    """Whether the multiset `have` holds every pair of `need` (both sorted)."""
    i = 0
    n = len(have)
    for pair in need:
        while i < n and have[i] < pair:
            i += 1
        if i == n or have[i] != pair:
            return False
        i += 1
    return True


# -- host -----------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """The lossy host key (memoised); see the module docstring for the rules."""
    return _canonical_host(host)


def _canonical_host(host: str) -> str:
    h = host.strip()
    if _PLAIN_HOST.fullmatch(h) and "xn--" not in h:
        return h
    h = _nfc(_decode(h)).translate(_DOTS).strip()
    if h.startswith("["):
        inner = h[1:].partition("]")[0]
        return _ipv6(inner) or h.lower()
    if h.count(":") > 1:
        return _ipv6(h) or h.lower()
    h = h.partition(":")[0].lower()
    labels = [label for label in h.split(".") if label]
    h = ".".join(labels)
    if labels and _NUMERIC_LABEL.fullmatch(labels[-1]):
        ipv4 = _ipv4(labels)
        if ipv4 is not None:
            return ipv4
    if not h.isascii() or "xn--" in h:
        h = _idna(labels)
    return h.replace("/", "%2F")


def _ipv6(text: str) -> str | None:
    try:
        return "[" + ipaddress.IPv6Address(text.partition("%")[0]).compressed + "]"
    except ValueError:
        return None


def _ipv4(labels: list[str]) -> str | None:
    """WHATWG URL IPv4 parsing: 1-4 parts, each decimal, 0-octal or 0x-hex."""
    if len(labels) > 4:
        return None
    nums: list[int] = []
    for label in labels:
        if label[:2] in ("0x", "0X"):
            digits = label[2:]
            if not _HEX.fullmatch(digits):
                return None
            nums.append(int(digits or "0", 16))
        elif len(label) > 1 and label[0] == "0":
            if not _OCT.fullmatch(label):
                return None
            nums.append(int(label, 8))
        elif _DEC.fullmatch(label):
            nums.append(int(label))
        else:
            return None
    last = nums.pop()
    if any(n > 255 for n in nums) or last >= 256 ** (4 - len(nums)):
        return None
    value = last
    for i, n in enumerate(nums):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def _is_dotted_quad(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and p.isascii() for p in parts)


def _idna(labels: list[str]) -> str:
    """IDN to punycode; punycode labels are decoded and re-encoded so every spelling meets."""
    unicode_labels: list[str] = []
    for label in labels:
        if label.startswith("xn--"):
            try:
                label = _nfc(label[4:].encode("ascii").decode("punycode").lower())
            except (UnicodeError, ValueError):
                pass
        unicode_labels.append(label)
    try:
        return idna.encode(".".join(unicode_labels), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    out: list[str] = []
    for label in unicode_labels:
        if label.isascii():
            out.append(label)
            continue
        try:
            out.append(idna.encode(label, uts46=True).decode("ascii"))
        except (idna.IDNAError, UnicodeError, ValueError):
            out.append("xn--" + label.encode("punycode").decode("ascii"))
    return ".".join(out)


# -- entry values ---------------------------------------------------------------------------


def _split_port(authority: str) -> str:
    """The host part of an authority; raises ValueError for a non-numeric port."""
    if authority.startswith("["):
        inner, _, rest = authority.partition("]")
        port = rest[1:] if rest.startswith(":") else rest
        host = inner + "]"
    elif authority.count(":") == 1:
        host, _, port = authority.partition(":")
    else:
        host, port = authority, ""
    if port and not (port.isascii() and port.isdigit()):
        raise ValueError(f"bad port {port!r}")
    return host


def _checked_host(host: str) -> str:
    if not host.strip():
        raise ValueError("no host")
    # Memoised: a list names few hosts many times (a site's thousands of URLs), and reading a
    # version then compiling it canonicalises every entry's host twice.
    chost = canonical_host(host)
    if not chost or len(chost) > 253 or not _VALID_HOST.fullmatch(chost):
        raise ValueError(f"{host!r} is not a valid host name")
    return chost


# Entry values already in canonical form, the common case (a publisher that canonicalises, or a
# list of plain URLs): lowercase scheme, a plain host (no port, userinfo, IP literal, IDNA or
# upper case), a path and query with no escape, `\\`, `;`, `#`, space or non-ASCII. One regex
# and a few string checks decide, and the key is the value's own text: loading a version of
# millions of entries spends most of its time here. Anything else takes the full path, and
# tests/blocklist/test_keys_fast.py holds the two to the same answer on many variants.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_HOST = rf"(?:[a-z0-9_-]+\.)*[a-z_-][a-z0-9_-]*|(?:{_OCTET}\.){{3}}{_OCTET}"
_CANONICAL_URL = re.compile(
    rf"https?://({_CANONICAL_HOST})"
    r"(/[A-Za-z0-9_~!$&'()*+,=:@./-]*)?"
    r"(?:\?([A-Za-z0-9_~!$&'()*+,;=:@./?-]*))?"
)
_CANONICAL_HOST_RE = re.compile(_CANONICAL_HOST)


def _canonical_url_value(value: str) -> tuple[str, str, QueryPairs | None] | None:
    """`parse_url_value(value)` when `value` is already canonical, else None (not known)."""
    m = _CANONICAL_URL.fullmatch(value)
    if m is None:
        return None
    host, path, query = m.groups()
    if len(host) > 253 or "xn--" in host:
        return None
    if path is None or path == "/":
        path = "/"
    else:
        if path[-1] == "/":  # an empty last segment: dropped, as by `path_key`
            path = path[:-1]
        if not _plain(path):
            return None
        path = path.lower()
    if not query:  # no "?", or an empty query: the entry matches any query
        return host, path, None
    if "&" not in query and ";" not in query and "+" not in query:
        name, _, val = query.partition("=")  # one pair, nothing to split or sort
        return host, path, ((name, val),)
    pairs: list[tuple[str, str]] = []
    _pairs(query, pairs)
    if not pairs:
        return host, path, None
    pairs.sort()
    return host, path, tuple(pairs)


def parse_url_value(
    value: str, *, fold: bool = True, prefix: bool = False
) -> tuple[str, str, QueryPairs | None]:
    """Canonical (host, path, query) of a url or prefix entry value like http://h/p?q.

    The query is None when the value has none (or an empty one): such an entry matches any query.
    A decoded `?` in the path starts the query, a decoded `#` ends the path, as for requests;
    a `prefix` value whose path does either is refused (it would silently list the parent).
    `fold=False` gives the path before case folding (case-sensitive sites).
    """
    if fold:
        fast = _canonical_url_value(value)
        if fast is not None:
            return fast
    return _parse_url_value(value, fold=fold, prefix=prefix)


def _parse_url_value(
    value: str, *, fold: bool = True, prefix: bool = False
) -> tuple[str, str, QueryPairs | None]:
    """`parse_url_value` by the full rules, whatever the value's form."""
    text = value.strip()
    m = _SCHEME.match(text)
    if m is None:
        raise ValueError("must start with http:// or https://")
    rest = text[m.end() :]
    end = len(rest)
    for sep in "/?#\\":
        i = rest.find(sep)
        if i != -1 and i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    authority = authority.rpartition("@")[2]
    host = _checked_host(_split_port(authority))
    tail = tail.partition("#")[0]
    path, qmark, query = tail.partition("?")
    pk = path_key(path or "/")
    if prefix and pk.cut:
        raise ValueError("a prefix path cannot hold an encoded ? or # (list a url entry)")
    pairs = canonical_query(query if qmark else None, pk.tail)
    return host, pk.folded if fold else pk.exact, pairs or None


@lru_cache(maxsize=4096)
def exact_url_key(value: str) -> str:
    """`url_key` of a url or prefix entry value without case folding: read only when a
    case-sensitive site's request meets a folded key (so it costs the compiled list nothing
    per entry); memoised, since a blocked URL tends to be asked for again."""
    host, path, _ = parse_url_value(value, fold=False)
    return url_key(host, path)


def parse_host_value(value: str) -> str:
    """Canonical host of a host entry value (a bare host name or IP literal, no port)."""
    if len(value) <= 253 and _CANONICAL_HOST_RE.fullmatch(value) and "xn--" not in value:
        return value  # already canonical (as `_parse_host_value` would find it)
    return _parse_host_value(value)


def _parse_host_value(value: str) -> str:
    """`parse_host_value` by the full rules, whatever the value's form."""
    text = value.strip()
    if "/" in text or "?" in text or "@" in text:
        raise ValueError("a host entry is a bare host name like example.com, not a URL")
    if _split_port(text) != text:
        raise ValueError("a host entry cannot carry a port (ports are ignored when matching)")
    return _checked_host(text)


def parse_sha256(value: str) -> bytes:
    """32 digest bytes from 64 hex digits (either case)."""
    text = value.strip()
    if not _HEX64.fullmatch(text):
        raise ValueError("a sha256 entry is 64 hexadecimal digits")
    return bytes.fromhex(text)
