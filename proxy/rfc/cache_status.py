"""The Cache-Status response header, RFC 9211."""

from __future__ import annotations

from proxy.rfc.structured import is_token, serialize_string

__all__ = ["FWD_REASONS", "Members", "append_cache_status", "cache_status", "cache_status_bytes"]

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


class Members:
    """One cache's members for answers fetched from the origin, formatted once per distinct
    set of parameters (a few dozen in practice: fwd, fwd-status, stored, collapsed, detail),
    so a miss or a pass-through joins bytes instead of checking tokens and formatting
    (`cache_status`, ~2.5 µs) per request; only `ttl` differs from response to response.
    Bounded: past `max_entries` sets the memo starts again."""

    __slots__ = ("cache", "max_entries", "_memo")

    def __init__(self, cache: str, max_entries: int = 512) -> None:
        self.cache = cache
        self.max_entries = max_entries
        self._memo: dict[
            tuple[str | None, int | None, bool | None, bool, str | None], tuple[bytes, bytes]
        ] = {}

    def member(
        self,
        *,
        fwd: str | None = None,
        fwd_status: int | None = None,
        stored: bool | None = None,
        ttl: int | None = None,
        collapsed: bool = False,
        detail: str | None = None,
    ) -> bytes:
        """`cache_status_bytes(cache, hit=False, …)` with these parameters."""
        key = (fwd, fwd_status, stored, collapsed, detail)
        parts = self._memo.get(key)
        if parts is None:
            # cache_status writes its parameters in a fixed order with ttl between stored and
            # collapsed: what comes before ttl, and what comes after it.
            before = cache_status_bytes(
                self.cache, hit=False, fwd=fwd, fwd_status=fwd_status, stored=stored
            )
            whole = cache_status_bytes(
                self.cache,
                hit=False,
                fwd=fwd,
                fwd_status=fwd_status,
                stored=stored,
                collapsed=collapsed,
                detail=detail,
            )
            if len(self._memo) >= self.max_entries:
                self._memo.clear()
            parts = self._memo[key] = (before, whole[len(before) :])
        before, after = parts
        if ttl is None:
            return before + after
        return before + b"; ttl=%d" % ttl + after
