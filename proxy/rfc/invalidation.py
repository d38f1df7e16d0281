"""Invalidation after unsafe requests, RFC 9111 §4.4."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from proxy.rfc.target import BadTarget, canonical_target

__all__ = ["SAFE_METHODS", "content_location_is_target", "invalidated_targets"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""RFC 9110 §9.2.1. Methods are case-sensitive: "get" is an unknown, hence unsafe, method."""


def _canonical(url: str, scheme: str) -> tuple[str, str] | None:
    parts = urlsplit(url)
    if parts.scheme.lower() != scheme or not parts.netloc:
        return None
    path_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        t = canonical_target(
            path_query.encode("ascii"), parts.netloc.encode("ascii"), default_scheme=scheme
        )
    except (BadTarget, UnicodeEncodeError):
        return None
    return t.authority, t.raw_path_query.decode("ascii")


def invalidated_targets(
    method: str,
    status: int,
    request_authority: str,
    location: str | None,
    content_location: str | None,
    *,
    request_path: str | None = None,
    scheme: str = "http",
) -> list[tuple[str, str]]:
    """(authority, path-and-query) pairs to invalidate (RFC 9111 §4.4).

    Only for an unsafe method answered with a non-error status (2xx/3xx). The target URI
    itself is included when ``request_path`` (its forward form) is given, and is then also the
    base for relative references. Location and Content-Location count only when their
    origin (scheme, host, port) is the request's. Results are in canonical forward form
    (target.canonical_target), deduplicated, request target first.
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    own = _canonical(f"{scheme}://{request_authority}/", scheme)
    if own is None:
        return []
    authority = own[0]
    out: list[tuple[str, str]] = []
    if request_path is not None:
        found = _canonical(f"{scheme}://{authority}{request_path}", scheme)
        if found is not None:
            out.append(found)
    base = f"{scheme}://{authority}{request_path if request_path is not None else '/'}"
    for ref in (location, content_location):
        if not ref:
            continue
        ref = ref.strip(" \t")
        if request_path is None and not ref.startswith("/") and "://" not in ref:
            continue  # a relative-path reference needs the request's path as its base
        found = _canonical(urljoin(base, ref), scheme)
        if found is not None and found[0] == authority and found not in out:
            out.append(found)
    return out


def content_location_is_target(
    content_location: str | None, request_authority: str, request_path: str, scheme: str = "http"
) -> bool:
    """Does a response's Content-Location (RFC 9110 §8.7, relative to the target URI) name the
    request's own target? Then a POST response is a representation of that resource, and
    with explicit freshness it may answer a later GET or HEAD of it (§9.3.3)."""
    if not content_location:
        return False
    base = f"{scheme}://{request_authority}{request_path}"
    own = _canonical(base, scheme)
    return (
        own is not None and _canonical(urljoin(base, content_location.strip(" \t")), scheme) == own
    )
