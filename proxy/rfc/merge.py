"""Freshening stored responses with a 304 (RFC 9111 §3.2 and §4.3.4) or with the 200 answer to
a HEAD (§4.3.5)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from proxy.rfc.conditional import is_weak, normalise_etag
from proxy.rfc.dates import parse_http_date
from proxy.rfc.hopbyhop import HOP_BY_HOP

__all__ = ["NOT_UPDATED", "head_updates_stored", "merge_304", "select_for_304", "text_fields"]


def text_fields(fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header fields as this module takes them: names and values as latin-1 text (RFC 9110
    §5.5: obs-text octets survive the round trip)."""
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]


NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range"}) | HOP_BY_HOP
"""Fields a 304 never replaces in the stored response (§3.2):

* Content-Length: named by §3.2 itself;
* Content-Encoding and Content-Range: the stored body depends on them ("header fields that
  the cache's stored response depends upon"); a 304 cannot change the stored bytes;
* hop-by-hop fields and those named by the 304's Connection: excluded from storage (§3.1).

Everything else, Content-Type, Set-Cookie, Cache-Control and Expires included, is replaced,
as the cache-tests "update304" group expects.
"""


def merge_304(
    stored: Sequence[tuple[str, str]],
    fresh: Sequence[tuple[str, str]],
    *,
    drop: Collection[str] = (),
) -> list[tuple[str, str]]:
    """Stored header fields updated with a 304's (RFC 9111 §3.2).

    Every field in ``fresh`` (except NOT_UPDATED, Connection-listed fields and ``drop``,
    lowercase names such as the 304's qualified private/no-cache fields) replaces all stored
    lines of that name, at the position of the first stored line; new names are appended in
    the 304's order. Other stored fields keep their order. Names compare case-insensitively.
    """
    excluded = set(NOT_UPDATED)
    excluded.update(drop)
    for name, value in fresh:
        if name.lower() == "connection":
            excluded.update(t.strip(" \t").lower() for t in value.split(","))
    updates: dict[str, list[tuple[str, str]]] = {}
    for name, value in fresh:
        key = name.lower()
        if key not in excluded:
            updates.setdefault(key, []).append((name, value))
    if not updates:
        return list(stored)
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in stored:
        key = name.lower()
        if key in updates:
            if key not in placed:
                out.extend(updates[key])
                placed.add(key)
        else:
            out.append((name, value))
    for key, lines in updates.items():
        if key not in placed:
            out.extend(lines)
    return out


def select_for_304(
    stored_etag: str | None,
    stored_last_modified: str | None,
    new_etag: str | None,
    new_last_modified: str | None,
    *,
    answers_stored: bool = False,
) -> bool:
    """RFC 9111 §4.3.4: does this 304 identify the (single) stored response for update?

    * the 304 has a strong ETag: only a stored response with the same strong ETag;
    * otherwise it has weak validators (weak ETag, Last-Modified): each one it carries must
      match the stored response's (ETag by weak comparison, dates by value);
    * it has no validator at all: only a stored response that has none either, unless
      ``answers_stored``: the 304 answers a conditional request this cache made from that
      stored response's own validators, so it can only mean that response. Every measured
      peer (nginx, Varnish, Traffic Server, Squid) accepts it; refusing it doubled the
      origin request (cache-tests "304 without validators").

    When this returns False the 304 must not be used to update or serve the stored response:
    the caller fetches again without validators.
    """
    new_tag = normalise_etag(new_etag)
    old_tag = normalise_etag(stored_etag)
    if new_tag is not None and not is_weak(new_tag):
        return old_tag == new_tag and not is_weak(old_tag)
    new_lm = parse_http_date(new_last_modified) if new_last_modified else None
    if new_tag is None and new_lm is None:
        if answers_stored:
            return True
        old_lm = parse_http_date(stored_last_modified) if stored_last_modified else None
        return old_tag is None and old_lm is None
    if new_tag is not None:
        if old_tag is None or old_tag.removeprefix("W/") != new_tag.removeprefix("W/"):
            return False
    if new_lm is not None:
        old_lm = parse_http_date(stored_last_modified) if stored_last_modified else None
        if old_lm != new_lm:
            return False
    return True


def head_updates_stored(
    stored: Sequence[tuple[str, str]], stored_length: int, head: Sequence[tuple[str, str]]
) -> bool:
    """RFC 9111 §4.3.5: may the 200 answer to a HEAD update the stored GET response (True), or
    must the stored response be invalidated (False)?

    The RFC's conditions: every validator the HEAD response carries (ETag, Last-Modified)
    matches the stored response's, and so does its Content-Length if it has one (against
    ``stored_length``, the stored body's length; stored fields hold no Content-Length).
    Content-Encoding and Vary are compared as well, present or not: the stored bytes are
    only the representation under the stored coding, and a changed Vary would file them
    under other keys (RFC 9110 §9.3.2: a HEAD response carries the fields a GET's would).
    Every case of doubt (a validator that does not parse, or that the stored response has
    twice) invalidates: that costs one fetch, whereas an update would keep serving a body the
    origin no longer has under these fields. A body never comes with a HEAD, so nothing
    unjudged is stored either way.
    """
    old, new = _fields(stored), _fields(head)
    for raw in new.get("etag", ()):
        tag = normalise_etag(raw)
        if tag is None or [tag] != [normalise_etag(v) for v in old.get("etag", ())]:
            return False
    for raw in new.get("last-modified", ()):
        date = parse_http_date(raw)
        olds = old.get("last-modified", [])
        if date is None or len(olds) != 1 or parse_http_date(olds[0]) != date:
            return False
    lengths = new.get("content-length", [])
    if lengths and any(not v.isdigit() or int(v) != stored_length for v in lengths):
        return False
    codings = "content-encoding"
    if _tokens(old.get(codings, ())) != _tokens(new.get(codings, ())):
        return False  # applied in order: the order counts
    return sorted(_tokens(old.get("vary", ()))) == sorted(_tokens(new.get("vary", ())))


def _fields(lines: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in lines:
        found.setdefault(name.lower(), []).append(value.strip(" \t"))
    return found


def _tokens(values: Sequence[str]) -> list[str]:
    """A list field's members, lowercased, in order (``identity`` is no coding)."""
    members = (t.strip(" \t").lower() for v in values for t in v.split(","))
    return [t for t in members if t and t != "identity"]
