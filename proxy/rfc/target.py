r"""The canonical request target: RFC 9112 §3.2, normalised per RFC 3986 §6.2.2.

``canonical_target()`` is called once per request (in admit). Its ``raw_path_query`` is the
forward form: what is sent upstream *and* the cache key. Only equivalence-preserving changes
are made: scheme and host case, default port, a trailing dot on the host, unreserved
percent-escapes decoded, the hex of other escapes uppercased, dot segments removed (after
decoding, so ``%2E%2E`` counts). Nothing else: ``%2F`` stays encoded, ``//`` stays, ``;``
stays, the query keeps its order. Lossy matching belongs to the blocklist's match keys.

Ambiguous input is refused (BadTarget, 400): fragments, control bytes, spaces, non-ASCII,
malformed escapes, ``%00``, a missing or invalid Host for origin-form, userinfo, several Host
lines (the caller passes the lines joined with "," which is then invalid), authority-form and
asterisk-form (``.asterisk`` is set so the caller can answer OPTIONS * itself). Over-long
targets get 414.

Encodings (issue 10). The rule: a target that some common origin (nginx, Apache, IIS, Node,
WSGI/CGI, Tomcat) could decode into a listed resource is either matched by the blocklist's
match keys (451) or refused here (400, connection closed), never forwarded unchecked. Refused
is what no browser sends and decoders disagree about; matched is what browsers do send, which
the match keys then read as the laxest decoder would (proxy.blocklist.keys).

======================================  ======  ===============================================
path input                              answer  why
======================================  ======  ===============================================
``%2F`` ``%5C`` ``%3B`` (slash, ``\``,   match   sent by real sites (``a%2Fb`` ids, Wikipedia
``;``)                                          titles); keys read them as ``/`` ``/`` ``;``
``%3F`` ``%23`` (``?``, ``#``)          match   ``/wiki/What%3F``; keys end the path there, the
                                                rest after ``?`` joins the query pairs
``%2E`` ``%2e%2e``                      fwd     unreserved: decoded, dot segments removed in
                                                the forward form itself
valid UTF-8 escapes, ``%20``            match   what browsers send for non-ASCII paths
double-encoded letters (``%2561``)      match   keys decode up to ``MAX_DECODE_ROUNDS`` rounds
double-encoded delimiter, dot, ``%``,   refuse  ``%252F %253F %2523 %255C %253B %252E %2525``
control (``%25XX`` with XX one of them)         ``%2500``: only a double-decoding origin reads
                                                them, and reads them as structure
still decodable after 4 rounds          refuse  no origin may decode further than the keys did
``%00``, ``%01``-``%1F``, ``%7F``       refuse  NUL truncation, CR/LF in logs and redirects
``%uHHHH`` (IIS), at any depth          refuse  not RFC 3986; only IIS and old JS read it
invalid UTF-8 at any depth: overlong    refuse  ``%C0%AF`` is ``/`` to lax decoders and an
(``%C0%AF`` ``%E0%80%AF``), lone                error to strict ones; browsers encode paths as
continuation (``%80``), surrogates              UTF-8 only (a site with Latin-1 escapes in
(``%ED%A0%80``), truncated, > U+10FFFF          paths gets 400: the price of certainty)
``;params`` (``;jsessionid=``)          match   Tomcat URL rewriting is real; keys cut params
trailing ``.``/``%20``, ``::$DATA``,    match   real names (``/wiki/U.S.``); keys read them as
fullwidth forms (``%EF%BC%8F``)                 Windows and IIS's best fit do
dot segment visible only after ``\``,   refuse  ``..;/`` (Tomcat), ``..\``, ``..%2F``,
``;params`` or ``%2F`` are read                 ``.%5C``: a traversal the cache key and the
                                                origin would disagree about
raw ``\``                               match   keys read it as ``/`` (browsers never send it)
case (``/A`` vs ``/a``)                 match   keys fold case unless the site sets
                                                ``case_sensitive_paths``
======================================  ======  ===============================================

In the query, escapes are only checked for form (``%00``, ``%u`` and malformed ones are
refused): forms send ``%0D%0A``, legacy charsets and nested encoded URLs (``next=%252F``), so
the match keys decode queries laxly instead (decoded first, then split into pairs).

Results are memoised (LRU, ``MEMO_SIZE`` entries) for targets up to ``MEMO_MAX_BYTES``: the
hit path calls this per request and popular URLs repeat.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "DEFAULT_PORTS",
    "MAX_DECODE_ROUNDS",
    "MAX_TARGET_BYTES",
    "BadTarget",
    "Target",
    "canonical_target",
    "clear_memo",
]

# The longest target this module canonicalises, anywhere: requests (where the front's
# `limits.max_request_line_bytes`, at most this, refuses longer ones first with 414), records
# read back from the cache tiers, purge and invalidation URLs. It is the ceiling that limit may
# be raised to, so that a target the front admitted is never refused later. It was 8192, the
# limit's default: raising the limit only moved the 414 from the front to admit.
MAX_TARGET_BYTES = 65536
# Percent-decoding rounds the blocklist's match keys apply (proxy.blocklist.keys); a path that
# still decodes after this many is refused, so no origin can decode further than the keys did.
MAX_DECODE_ROUNDS = 4
MEMO_MAX_BYTES = 1024
MEMO_SIZE = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}


class BadTarget(Exception):
    """A request target or Host the proxy refuses; ``status`` is 400 or 414."""

    def __init__(self, status: int, reason: str, *, asterisk: bool = False) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.asterisk = asterisk


@dataclass(frozen=True, slots=True, init=False)
class Target:
    scheme: str
    host: str
    port: int | None
    path: str
    query: str | None
    raw_path_query: bytes
    authority: str

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        path: str,
        query: str | None,
        raw_path_query: bytes,
        authority: str,
    ) -> None:
        # Frozen, but set through the slots' own setters: the generated __init__ of a frozen
        # dataclass calls object.__setattr__ per field, 1.4 µs a new URL against 0.5 (issue 18).
        s = _TARGET_SLOTS
        s[0](self, scheme)
        s[1](self, host)
        s[2](self, port)
        s[3](self, path)
        s[4](self, query)
        s[5](self, raw_path_query)
        s[6](self, authority)

    @property
    def url(self) -> str:
        """The absolute URI (for logs and Content-Location/Location comparisons)."""
        return f"{self.scheme}://{self.authority}{self.raw_path_query.decode('ascii')}"


# Target's slot setters, in field order (what its __init__ sets).
_TARGET_SLOTS: tuple[Callable[[Target, Any], None], ...] = tuple(
    Target.__dict__[f.name].__set__ for f in fields(Target)
)

_ALLOWED = bytes(b for b in range(0x21, 0x7F) if b != ord("#"))
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789-._"


def _bad_bytes_reason(bad: bytes) -> str:
    if b"#" in bad:
        return "fragment"
    if any(b >= 0x80 for b in bad):
        return "non-ascii"
    return "control-or-space"


def _escapes(part: bytes, *, decode_unreserved: bool) -> bytes:
    """Check every %XX, refuse %00, uppercase hex, optionally decode unreserved ones."""
    pieces = part.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            if piece[:1] in (b"u", b"U"):
                raise BadTarget(400, "u-escape")
            raise BadTarget(400, "bad-escape")
        byte = int(piece[:2], 16)
        if byte == 0:
            raise BadTarget(400, "nul-escape")
        if decode_unreserved and byte in _UNRESERVED:
            out.append(bytes((byte,)))
        else:
            out.append(b"%" + piece[:2].upper())
        out.append(piece[2:])
    return b"".join(out)


_ESCAPE = re.compile(rb"%([0-9a-fA-F]{2})")
_U_ESCAPE = re.compile(rb"%[uU][0-9a-fA-F]{4}")
_CONTROL = frozenset(range(0x20)) | {0x7F}
# What a second (or later) round of decoding must not produce: delimiters, dots, another
# escape, control bytes. A browser never encodes these twice; an origin that decodes twice
# (IIS's old double decoding, a rewrite layer in front of a decoding app) would read them.
_DEEP_REFUSED = frozenset(b"/\\?#;.%") | _CONTROL


def _check_path_decodings(path: bytes) -> str:
    """Refuse a path that some decoder could read otherwise than the match keys do; return
    it fully decoded (as text: valid UTF-8 by then). See the module docstring's table."""
    layer = path
    for depth in range(MAX_DECODE_ROUNDS + 1):
        if depth and _U_ESCAPE.search(layer):
            raise BadTarget(400, "u-escape")
        escapes = _ESCAPE.findall(layer)
        if not escapes:
            return layer.decode("utf-8")
        if depth == MAX_DECODE_ROUNDS:
            raise BadTarget(400, "encoded-too-deep")
        values = {int(e, 16) for e in escapes}
        if depth == 0:
            if values & _CONTROL:
                raise BadTarget(400, "control-escape")
        elif values & _DEEP_REFUSED:
            raise BadTarget(400, "double-encoded-delimiter")
        layer = unquote_to_bytes(layer)
        if not layer.isascii():
            try:
                layer.decode("utf-8")
            except UnicodeDecodeError:
                raise BadTarget(400, "bad-utf8") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _check_hidden_dot_segments(decoded: str) -> None:
    """The forward form has no dot segments left (RFC 3986 §5.2.4); one that appears only
    once `\\`, `;params` or an encoded `/` are read as an origin might (`..;/`, `..\\`,
    `..%2F`) is a traversal the cache key and the origin would disagree about: refused."""
    text = decoded.replace("\\", "/").partition("#")[0].partition("?")[0]
    for seg in text.split("/"):
        if seg.partition(";")[0] in (".", ".."):
            raise BadTarget(400, "hidden-dot-segment")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for seg in segments:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def _host(raw: bytes, what: str) -> str:
    """Validate and normalise a host (reg-name or IP literal) to lowercase ASCII."""
    if raw.startswith(b"["):
        if not raw.endswith(b"]"):
            raise BadTarget(400, f"bad-{what}")
        try:
            ip = ipaddress.IPv6Address(raw[1:-1].decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadTarget(400, f"bad-{what}") from exc
        return f"[{ip.compressed}]"
    if not raw.isascii():
        try:
            import idna

            raw = idna.encode(raw.decode("utf-8"), uts46=True)
        except (UnicodeError, idna.IDNAError) as exc:
            raise BadTarget(400, f"bad-{what}") from exc
    host = raw.lower()
    if host.endswith(b"."):
        host = host[:-1]
    if not host or len(host) > 253 or host.translate(None, _HOST_CHARS):
        raise BadTarget(400, f"bad-{what}")
    for label in host.split(b"."):
        if not label or len(label) > 63:
            raise BadTarget(400, f"bad-{what}")
    return host.decode("ascii")


@lru_cache(maxsize=1024)
def _authority(raw: bytes, scheme: str, what: str) -> tuple[str, int | None]:
    """(host, port or None when default) of an authority or Host value; memoised, since a
    site sees few distinct Host values."""
    raw = raw.strip(b" \t")
    if not raw:
        raise BadTarget(400, f"missing-{what}")
    if b"@" in raw:
        raise BadTarget(400, "userinfo")
    if b"," in raw:
        raise BadTarget(400, f"multiple-{what}")
    if raw.startswith(b"["):
        end = raw.find(b"]")
        if end < 0:
            raise BadTarget(400, f"bad-{what}")
        host_b, rest = raw[: end + 1], raw[end + 1 :]
        if rest and not rest.startswith(b":"):
            raise BadTarget(400, f"bad-{what}")
        port_b = rest[1:] if rest else b""
    else:
        host_b, _, port_b = raw.partition(b":")
        if b":" in port_b:
            raise BadTarget(400, f"bad-{what}")
    port: int | None = None
    if port_b:
        if not port_b.isdigit() or len(port_b) > 5:
            raise BadTarget(400, f"bad-{what}-port")
        port = int(port_b)
        if not 0 < port < 65536:
            raise BadTarget(400, f"bad-{what}-port")
        if port == DEFAULT_PORTS.get(scheme):
            port = None
    return _host(host_b, what), port


def _canonical(raw: bytes, host_header: bytes | None, default_scheme: str) -> Target:
    if not raw:
        raise BadTarget(400, "empty-target")
    bad = raw.translate(None, _ALLOWED)
    if bad:
        raise BadTarget(400, _bad_bytes_reason(bad))
    if raw[0] == 0x2F:  # "/": origin-form
        if host_header is None:
            raise BadTarget(400, "missing-host")
        scheme = default_scheme
        host, port = _authority(host_header, scheme, "host")
        path_query = raw
    elif raw == b"*":
        raise BadTarget(400, "asterisk-form", asterisk=True)
    else:
        sep = raw.find(b"://")
        if sep <= 0:
            raise BadTarget(400, "authority-form")
        scheme = raw[:sep].lower().decode("ascii")
        if scheme not in DEFAULT_PORTS:
            raise BadTarget(400, "scheme")
        rest = raw[sep + 3 :]
        end = len(rest)
        for delim in (b"/", b"?"):
            i = rest.find(delim)
            if 0 <= i < end:
                end = i
        host, port = _authority(rest[:end], scheme, "uri-host")
        if host_header is not None:
            _authority(host_header, scheme, "host")  # must be valid even if overridden
        path_query = rest[end:]
        if not path_query.startswith(b"/"):
            path_query = b"/" + path_query
    q = path_query.find(b"?")
    if q < 0:
        path_b, query_b = path_query, None
    else:
        path_b, query_b = path_query[:q], path_query[q + 1 :]
    decoded: str | None = None
    same = True  # the forward form is `path_query` as received (no escape or dot changed)
    if b"%" in path_b:
        path_b = _escapes(path_b, decode_unreserved=True)
        decoded = _check_path_decodings(path_b)
        same = False
    path = path_b.decode("ascii")
    if "/." in path:
        path = _remove_dot_segments(path)
        same = False
    if "." in path and (decoded is not None or "\\" in path or ";" in path):
        _check_hidden_dot_segments(_check_path_decodings(path.encode("ascii")))
    query: str | None = None
    if query_b is not None:
        if b"%" in query_b:
            query_b = _escapes(query_b, decode_unreserved=False)
            same = False
        query = query_b.decode("ascii")
    authority = host if port is None else f"{host}:{port}"
    if same:
        raw_path_query = path_query  # what the join below would give back (issue 18)
    else:
        raw_path_query = (path if query is None else f"{path}?{query}").encode("ascii")
    # Positional, in Target's field order (tests/rfc/test_target.py holds it): keywords cost
    # a new URL 0.26 µs more (issue 18).
    return Target(scheme, host, port, path, query, raw_path_query, authority)


_memo = lru_cache(maxsize=MEMO_SIZE)(_canonical)


def canonical_target(
    raw: bytes, host_header: bytes | None, *, default_scheme: str = "http"
) -> Target:
    """Parse and canonicalise a request target (RFC 9112 §3.2) with its Host header.

    Origin-form takes host and port from ``host_header``; absolute-form takes them from the
    URI, which wins over Host (§3.2.2), though a Host that is present must still be valid.
    ``host_header`` is the field value, or all lines joined with "," (then refused), or None.
    Raises BadTarget.
    """
    if len(raw) > MAX_TARGET_BYTES:
        raise BadTarget(414, "target-too-long")
    if len(raw) <= MEMO_MAX_BYTES and (host_header is None or len(host_header) <= 300):
        return _memo(raw, host_header, default_scheme)
    return _canonical(raw, host_header, default_scheme)


def clear_memo() -> None:
    """Forget memoised targets (tests, and config reloads that change default_scheme)."""
    _memo.cache_clear()
