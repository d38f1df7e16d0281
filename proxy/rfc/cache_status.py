"""The Cache-Status response header, RFC 9211."""

from __future__ import annotations

from proxy.rfc.structured import is_token, serialize_string

__all__ = ["FWD_REASONS", "append_cache_status", "cache_status", "cache_status_bytes"]

FWD_REASONS = frozenset(
    {"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"}
)
"""RFC 9211 §2.2 fwd values."""


def _token_or_string(text: str) -> str:
    return text if is_token(text) else serialize_string(text)


def cache_status(
    cache: str,
    *,
    hit: bool,
    fwd: str | None = None,
    fwd_status: int | None = None,
    ttl: int | None = None,
    stored: bool | None = None,
    collapsed: bool = False,
    key: str | None = None,
    detail: str | None = None,
) -> str:
    """One Cache-Status list member (RFC 9211 §2): the cache's name and its parameters.

    ``cache`` and ``detail`` become sf-tokens when they are valid tokens, sf-strings
    otherwise; ``fwd`` must be one of FWD_REASONS (ValueError otherwise); ``ttl`` may be
    negative (stale, §2.5); ``stored`` False is written as ``stored=?0``.
    """
    parts = [_token_or_string(cache)]
    if hit:
        parts.append("hit")
    if fwd is not None:
        if fwd not in FWD_REASONS:
            raise ValueError(f"unknown Cache-Status fwd reason {fwd!r}")
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={int(fwd_status)}")
    if stored is not None:
        parts.append("stored" if stored else "stored=?0")
    if ttl is not None:
        parts.append(f"ttl={int(ttl)}")
    if collapsed:
        parts.append("collapsed")
    if key is not None:
        parts.append("key=" + serialize_string(key))
    if detail is not None:
        parts.append("detail=" + _token_or_string(detail))
    return "; ".join(parts)


def append_cache_status(existing: str | None, member: str) -> str:
    """Add this cache's member after those of caches nearer the origin (RFC 9211 §2)."""
    if existing is None:
        return member
    existing = existing.strip(" \t").rstrip(",").rstrip(" \t")
    if not existing:
        return member
    return f"{existing}, {member}"


def cache_status_bytes(cache: str, **params: object) -> bytes:
    """`cache_status` as the field value bytes a response head carries."""
    return cache_status(cache, **params).encode("ascii")  # type: ignore[arg-type]
