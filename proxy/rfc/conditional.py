"""Conditional requests, RFC 9110 §13, as a cache answers them (RFC 9111 §4.3.2) and asks
them (RFC 9111 §4.3.1).

Entity-tags are parsed leniently and returned normalised: ``W/"x"`` or ``"x"``. A bare token
(``abc``) is read as ``"abc"`` and a lowercase ``w/`` as ``W/``, so that the common mistakes of
origins and clients still compare equal (the cache-tests suite probes these).
"""

from __future__ import annotations

from typing import Literal

from proxy.rfc.dates import parse_http_date

__all__ = [
    "evaluate_preconditions",
    "is_weak",
    "normalise_etag",
    "parse_etags",
    "revalidation_headers",
    "strong_match",
    "weak_match",
]

_OWS = " \t"


def _scan_tag(s: str, i: int) -> tuple[str | None, int]:
    """Read one entity-tag starting at s[i] (OWS skipped); return (normalised tag, end)."""
    n = len(s)
    while i < n and s[i] in _OWS:
        i += 1
    weak = False
    if s.startswith(("W/", "w/"), i):
        weak = True
        i += 2
    if i < n and s[i] == '"':
        end = s.find('"', i + 1)
        if end < 0:
            return None, n
        tag = s[i : end + 1]
        i = end + 1
    else:
        start = i
        while i < n and s[i] not in ', \t"':
            i += 1
        if i == start:
            return None, i
        tag = '"' + s[start:i] + '"'
    while i < n and s[i] in _OWS:
        i += 1
    return ("W/" + tag if weak else tag), i


def normalise_etag(value: str | None) -> str | None:
    """One ETag field value in normal form, or None when absent/unusable."""
    if not value:
        return None
    if value[0] == '"' and value.find('"', 1) == len(value) - 1:
        return value  # a strong tag as sent, `_scan_tag`'s answer without the scan
    tag, end = _scan_tag(value, 0)
    if tag is None or end != len(value):
        return None
    return tag


def parse_etags(value: str) -> list[str] | Literal["*"]:
    """If-Match / If-None-Match: ``"*"`` or the list of normalised entity-tags (§13.1.1/2).

    Unparseable members are dropped (they can match nothing).
    """
    if value.strip(_OWS) == "*":
        return "*"
    tags: list[str] = []
    i, n = 0, len(value)
    while i < n:
        tag, i = _scan_tag(value, i)
        if tag is not None:
            tags.append(tag)
        # skip to the next list member
        while i < n and value[i] != ",":
            i += 1
        i += 1
    return tags


def is_weak(tag: str) -> bool:
    return tag.startswith("W/")


def strong_match(a: str | None, b: str | None) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison: both strong and identical."""
    if a is None or b is None:
        return False
    return not is_weak(a) and not is_weak(b) and a == b


def weak_match(a: str | None, b: str | None) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: opaque-tags equal, weakness ignored."""
    if a is None or b is None:
        return False
    return a.removeprefix("W/") == b.removeprefix("W/")


def _single_date(value: str | None) -> float | None:
    if value is None:
        return None
    return parse_http_date(value)


def evaluate_preconditions(
    method: str,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    etag: str | None,
    last_modified: float | None,
    date: float | None,
) -> int | None:
    """RFC 9110 §13.2.2 against a stored response: 304, 412, or None (serve normally).

    ``etag`` is the stored ETag (raw or normalised); ``last_modified`` its Last-Modified;
    ``date`` its Date (or receipt time), which stands in for a missing Last-Modified when
    evaluating If-Modified-Since (RFC 9111 §4.3.2). An invalid date in IMS or IUS means the
    header is ignored (§13.1.3, §13.1.4). A ``*`` in If-Match/If-None-Match matches, since a
    stored response is a current representation.
    """
    tag = normalise_etag(etag)
    get_or_head = method in ("GET", "HEAD")
    if if_match is not None:
        tags = parse_etags(if_match)
        if tags != "*" and not any(strong_match(t, tag) for t in tags):
            return 412
    elif if_unmodified_since is not None and last_modified is not None:
        ius = _single_date(if_unmodified_since)
        if ius is not None and last_modified > ius:
            return 412
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        if tags == "*" or any(weak_match(t, tag) for t in tags):
            return 304 if get_or_head else 412
        return None
    if get_or_head and if_modified_since is not None:
        ims = _single_date(if_modified_since)
        lm = last_modified if last_modified is not None else date
        if ims is not None and lm is not None and lm <= ims:
            return 304
    return None


def revalidation_headers(etag: str | None, last_modified_raw: str | None) -> list[tuple[str, str]]:
    """Validators for a conditional request to the origin (RFC 9111 §4.3.1).

    If-None-Match with the stored entity-tag (quoted if the origin sent it bare), and
    If-Modified-Since with the stored Last-Modified when it is a valid HTTP-date.
    """
    out: list[tuple[str, str]] = []
    tag = normalise_etag(etag)
    if tag is not None:
        out.append(("If-None-Match", tag))
    if last_modified_raw and parse_http_date(last_modified_raw) is not None:
        out.append(("If-Modified-Since", last_modified_raw.strip(_OWS)))
    return out
