"""The laxest decoder among common origins (nginx, Apache, IIS, Node, WSGI/CGI, Tomcat),
written apart from the edge's match keys so that tests can hold the keys to it: whatever this
reads as a listed resource, the edge must match (451) or refuse (400)."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse

_U = re.compile(rb"%[uU]([0-9a-fA-F]{4})")
_OVERLONG = re.compile(
    rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f][\x80-\xbf]|\xf0[\x80-\x8f][\x80-\xbf]{2}"
)


def _overlong(m: re.Match[bytes]) -> bytes:
    b = m[0]
    if len(b) == 2:
        cp = ((b[0] & 0x1F) << 6) | (b[1] & 0x3F)
    elif len(b) == 3:
        cp = ((b[0] & 0x0F) << 12) | ((b[1] & 0x3F) << 6) | (b[2] & 0x3F)
    else:
        cp = ((b[0] & 0x07) << 18) | ((b[1] & 0x3F) << 12) | ((b[2] & 0x3F) << 6) | (b[3] & 0x3F)
    return chr(cp).encode()


def laxest_decode(raw: str) -> str:
    """What the laxest common servers do together: percent-decoding until stable (IIS
    decoded twice; here up to eight rounds), IIS `%uHHHH`, overlong UTF-8 read as its code
    point (old IIS, Java), and whatever is still not UTF-8 (lone continuation bytes,
    surrogates, truncated sequences) dropped, as decoders that skip bad bytes do."""
    data = raw.encode("latin-1")
    for _ in range(8):
        new = urllib.parse.unquote_to_bytes(
            _U.sub(lambda m: chr(int(m[1], 16)).encode("utf-8", "surrogatepass"), data)
        )
        if new == data:
            break
        data = new
    data = _OVERLONG.sub(_overlong, data)
    return data.decode("utf-8", "ignore")


def laxest_resolve(raw_target: str) -> tuple[str, list[tuple[str, str]]]:
    """(path, query pairs) as an origin that decodes before it parses reads a target: the
    whole target decoded, then a NUL or `#` ends it and a `?` starts the query; `\\` is `/`,
    `;params` cut (Tomcat), dot segments and empty segments dropped; IIS on NTFS: case
    ignored, compatibility forms mapped (best fit: `／` is `/`), trailing dots and spaces of
    a name dropped, the `::$DATA` stream suffix ignored."""
    text = unicodedata.normalize("NFKC", laxest_decode(raw_target))
    text = text.partition("\x00")[0].partition("#")[0]  # C strings end at NUL
    path, _, query = text.partition("?")
    path = path.replace("\\", "/")
    parts: list[str] = []
    for seg in path.split("/"):
        seg = seg.partition(";")[0]
        if seg.lower().endswith("::$data"):
            seg = seg[: -len("::$data")]
        if seg not in ("", ".", ".."):
            seg = seg.rstrip(". ") or seg
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    pairs = []
    for part in re.split("[&;]", query):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name.replace("+", " "), value.replace("+", " ")))
    return "/" + "/".join(parts).lower(), pairs
