"""Freshening stored responses with a 304, RFC 9111 §3.2 and §4.3.4."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from proxy.rfc.conditional import is_weak, normalise_etag
from proxy.rfc.dates import parse_http_date
from proxy.rfc.hopbyhop import HOP_BY_HOP

__all__ = ["NOT_UPDATED", "merge_304", "select_for_304"]

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
