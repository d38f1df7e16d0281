"""Targeted cache control, RFC 9213 (CDN-Cache-Control and friends).

A targeted field is an RFC 8941 Dictionary. The first field in the cache's priority list that
is present, non-empty and parses replaces Cache-Control entirely for this cache (§2.2); a field
that fails to parse is ignored as if absent (§2.1).

Mapping members to directives (§2.1 "Implementations SHOULD NOT consume values that violate
these inferred constraints"):

* delta-seconds directives want a non-negative Integer; any other type (``max-age="60"``,
  ``max-age=1.5``, ``max-age=-1``) is not consumed, and for max-age/s-maxage marks the
  freshness as invalid (stale), like an invalid value in Cache-Control.
* boolean directives want Boolean true; ``?0`` means absent. For the directives that forbid
  something (no-store, no-cache, private, must-revalidate, proxy-revalidate, no-transform)
  any other value type is read as present, because ignoring a restriction is the unsafe
  mistake; for the ones that permit something (public, immutable, must-understand) it is
  read as absent.
* no-cache and private also accept a String of field names (the qualified form).
* parameters on members are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from proxy.rfc.cachecontrol import (
    DELTA_SECONDS_MAX,
    EMPTY_CC,
    MAX_STALE_UNLIMITED,
    CacheControl,
    from_parts,
    parse_cache_control,
    split_field_names,
)
from proxy.rfc.structured import InnerList, Item, Token, parse_dictionary

__all__ = ["parse_targeted", "select_cache_control"]

_DELTA = ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh")
_RESTRICTIVE = frozenset(
    {"no-store", "no-cache", "private", "must-revalidate", "proxy-revalidate", "no-transform"}
)
# must-understand belongs here: it *relaxes* no-store (RFC 9111 §5.2.2.3)
_PERMISSIVE = frozenset({"public", "immutable", "must-understand", "only-if-cached"})


def _int(member: Item | InnerList) -> int | None:
    if not isinstance(member, Item):
        return None
    v = member.value
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return None
    return min(v, DELTA_SECONDS_MAX)


def _present(name: str, member: Item | InnerList) -> bool:
    if isinstance(member, Item) and isinstance(member.value, bool):
        return member.value
    return name in _RESTRICTIVE


@lru_cache(maxsize=1024)
def parse_targeted(value: str) -> CacheControl | None:
    """Parse one targeted field's combined value; None if empty or not a valid Dictionary."""
    d = parse_dictionary(value)
    if not d:
        return None
    deltas: dict[str, int | None] = {}
    invalid: set[str] = set()
    for name in _DELTA:
        if name in d:
            n = _int(d[name])
            if n is None:
                invalid.add(name)
            deltas[name] = n
    fields: dict[str, tuple[str, ...]] = {}
    flags: set[str] = set()
    for name in ("no-cache", "private"):
        m = d.get(name)
        if m is None:
            continue
        if isinstance(m, Item) and isinstance(m.value, str) and not isinstance(m.value, Token):
            names = split_field_names(m.value)
            if names:
                fields[name] = names
                continue
        if _present(name, m):
            flags.add(name)
    for name in _RESTRICTIVE | _PERMISSIVE:
        if name not in ("no-cache", "private") and name in d and _present(name, d[name]):
            flags.add(name)
    max_stale: int | None = None
    if "max-stale" in d:
        ms = d["max-stale"]
        if isinstance(ms, Item) and ms.value is True:
            max_stale = MAX_STALE_UNLIMITED
        else:
            max_stale = _int(ms)
    return from_parts(
        flags,
        deltas,
        fields.get("no-cache", ()),
        fields.get("private", ()),
        max_stale,
        invalid,
    )


def select_cache_control(
    cache_control: Sequence[str],
    targeted: Sequence[tuple[str, Sequence[str]]],
) -> tuple[CacheControl, str]:
    """Pick the directives this cache obeys (RFC 9213 §2.2) and the field they came from.

    ``targeted`` lists (lowercase field name, field lines) in this cache's priority order.
    Returns ("cache-control") when no targeted field applies.
    """
    for name, values in targeted:
        if not values:
            continue
        joined = values[0] if len(values) == 1 else ", ".join(values)
        cc = parse_targeted(joined)
        if cc is not None:
            return cc, name
    if not cache_control:
        return EMPTY_CC, "cache-control"
    return parse_cache_control(cache_control), "cache-control"
