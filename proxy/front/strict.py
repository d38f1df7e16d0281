"""The strict head: the common hot request, matched whole by one compiled regex, so that a
remembered hit is answered without llhttp calling back into Python once per event (issue 18).

llhttp stays the parser. This is a narrower one in front of it, for one shape only: the
connection is between messages, the read holds exactly one complete head and nothing after it,
and every byte of that head is in a grammar far stricter than RFC 9112's:

    ("GET" | "HEAD") SP "/" pchar-or-slash-or-"?"* SP "HTTP/1.1" CRLF
    *( token-without-"_" ":" *(SP / HTAB) [ VCHAR *( 1*(SP / HTAB) VCHAR ) ] *(SP / HTAB) CRLF )
    CRLF

with exactly one Host field and none of the fields that frame a body or change the connection
(`FRAMING_FIELDS`). So there is no body, no pipelined byte, no obs-fold,
no bare CR or LF, no control byte or obs-text, no absolute-form or asterisk target, no HTTP/1.0,
no Expect or Upgrade, no alias of a framing field (no `_` in a name), no duplicate Host: each of
those is left to llhttp and the front's checks, unchanged. Anything the regex does not match is
declined (None) and parsed by llhttp as before; a head it does match is one llhttp would parse
into the same method, target and Host, with keep-alive on (HTTP/1.1 without `Connection`). That
is what tests/front/test_strict_head.py checks, against llhttp, on thousands of heads.

Size limits are the caller's: it offers only reads no larger than the smallest of the front's
per-line and per-field limits (a head is never larger than the read it came in), and the field
count is checked here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

FRAMING_FIELDS = (
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"proxy-connection",  # llhttp reads it as Connection
    b"upgrade",
    b"expect",
)
"""Field names that make a head llhttp's business: body framing, keep-alive, protocol switch,
100-continue."""

# RFC 3986 pchar, "/" and "?": no "#", no quote, no "\\", no byte llhttp might read differently.
_TARGET = rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*"
# RFC 9110 §5.6.2 token, less "_" (a name with "_" may alias a framing field: server.py).
_NAME = rb"[!#$%&'*+\-.^`|~0-9A-Za-z]+"
# Visible ASCII with inner spaces or tabs; the whitespace around it is matched outside it.
_VALUE = rb"(?:[!-~]+(?:[ \t]+[!-~]+)*)?"
# Any other field's line: visible ASCII, spaces and tabs (the exact value is cut out only when
# a header list is asked for). No CR, LF, other control byte, DEL or obs-text.
_LINE = rb"\r\n" + _NAME + rb":[ -~\t]*"
_FIELD = re.compile(rb"\r\n(" + _NAME + rb"):[ \t]*(" + _VALUE + rb")")


STRICT_MAX_BYTES = 2048
"""Reads larger than this go to llhttp without a look: a hot head is a few hundred bytes, and
the regex, at a few ns a byte, should cost a declined head little. Not a limit on clients."""


class StrictHead:
    """One server's strict head matcher; `flag_names` are the server's flagged field names
    (FrontServer(flag_headers=…)): a head with one is taken, and said to be flagged.

    Host must be the first field, as curl, browsers and load generators send it; a second
    Host, a framing field or a flagged one is found by a search of the other field lines,
    lowercased. `Connection: keep-alive` alone is admitted: HTTP/1.1 persists anyway."""

    __slots__ = ("_match", "_refused", "_flagged", "_max_fields")

    def __init__(self, flag_names: Iterable[bytes], max_fields: int) -> None:
        refused = [re.escape(n) for n in (b"host", *FRAMING_FIELDS) if n != b"connection"]
        keep_alive = rb"connection(?!:[ \t]*keep-alive[ \t]*(?:\r|\Z))"
        self._refused = re.compile(rb"\n(?:" + b"|".join([*refused, keep_alive]) + rb"):").search
        flagged = {n.lower() for n in flag_names}
        self._flagged = (
            re.compile(
                rb"\n(?:"
                + b"|".join(re.escape(n) for n in sorted(flagged, key=len, reverse=True))
                + rb"):"
            ).search
            if flagged
            else None
        )
        self._match = re.compile(
            rb"(GET|HEAD) (" + _TARGET + rb") HTTP/1\.1"
            rb"(\r\n[Hh]ost:[ \t]*(" + _VALUE + rb")[ \t]*((?:" + _LINE + rb")*))\r\n\r\n"
        ).fullmatch
        self._max_fields = max_fields

    def parse(self, data: bytes) -> tuple[str, bytes, bytes, bytes, bool] | None:
        """(method, raw target, Host, field lines, flagged) of the one head that is all of
        `data`, or None: llhttp's. The field lines become a header list only when asked
        (`fields`)."""
        m = self._match(data)
        if m is None:
            return None
        others = m[5]
        flagged = False
        if others:
            if others.count(b"\n") >= self._max_fields:
                return None
            lowered = others.lower()
            if self._refused(lowered) is not None:
                return None
            flagged = self._flagged is not None and self._flagged(lowered) is not None
        return ("GET" if len(m[1]) == 3 else "HEAD"), m[2], m[4], m[3], flagged


def fields(lines: bytes) -> list[tuple[bytes, bytes]]:
    """The header list llhttp's callbacks would build from the field lines `parse` matched:
    names as sent, values without the whitespace around them."""
    return _FIELD.findall(lines)


def values(lines: bytes, lnames: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The first non-empty value of each field named in `lnames` (lowercase) in the field
    lines `parse` matched, as `fields` would have them; b"" for none. No header list is built:
    a logged hit reads its User-Agent and Referer this way, one regex call."""
    find = _FINDERS.get(lnames)
    if find is None:
        names = b"|".join(re.escape(n) for n in lnames)
        find = _FINDERS[lnames] = re.compile(rb"\n(" + names + rb"):[ \t]*([^\r]*)", re.I).findall
    found = [b""] * len(lnames)
    for name, value in find(lines):
        value = value.rstrip(b" \t")
        i = lnames.index(name.lower())
        if value and not found[i]:
            found[i] = value
    return tuple(found)


# `values`' searches, by the names asked for (a handful: the access log's).
_FINDERS: dict[tuple[bytes, ...], Callable[[bytes], list[tuple[bytes, bytes]]]] = {}
