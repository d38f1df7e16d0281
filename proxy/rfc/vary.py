"""Vary and secondary cache keys, RFC 9111 §4.1.

Normalisation of the presented field values (§4.1 allows "combining multiple field lines,
normalizing whitespace ... and ordering of values when semantically insignificant"):

* field lines are combined, list members split on commas outside quoted-strings, OWS around
  members removed, empty members dropped, and the members re-joined with ",";
* for Accept, Accept-Charset, Accept-Encoding and Accept-Language, whose members are
  case-insensitive and whose order carries no meaning beyond their weights, members are also
  lowercased, spaces around ";" and "=" removed, and the members sorted;
* an absent field normalises to ABSENT ("\\x00", which no field value can contain), distinct
  from a field that is present but empty (""): §4.1 "a header field that is absent from a
  request can only match another request if it is also absent there".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from proxy.rfc.cachecontrol import split_list

__all__ = ["ABSENT", "normalise_field", "vary_fields", "vary_key"]

ABSENT = "\x00"

_UNORDERED = frozenset({"accept", "accept-charset", "accept-encoding", "accept-language"})
_OWS = " \t"


def vary_fields(values: Sequence[str]) -> tuple[str, ...] | None:
    """The field names a response varies on: lowercased, sorted, deduplicated; None for "*"."""
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip(_OWS).lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def _members(value: str) -> list[str]:
    raw = split_list(value)
    return [m for m in (r.strip(_OWS) for r in raw) if m]


def _tidy_params(member: str) -> str:
    if ";" not in member and "=" not in member:
        return member
    parts = [p.strip(_OWS) for p in member.split(";")]
    out = []
    for p in parts:
        if "=" in p:
            k, _, v = p.partition("=")
            p = k.strip(_OWS) + "=" + v.strip(_OWS)
        out.append(p)
    return ";".join(out)


@lru_cache(maxsize=4096)
def _normalise(name: str, values: tuple[str, ...]) -> str:
    members: list[str] = []
    for v in values:
        members.extend(_members(v))
    if name in _UNORDERED:
        members = sorted(_tidy_params(m.lower()) for m in members)
    return ",".join(members)


def normalise_field(name: str, values: Sequence[str]) -> str:
    """One request field's contribution to a secondary cache key (RFC 9111 §4.1).

    ``values`` holds the field lines; an empty sequence means the field is absent (ABSENT).
    """
    if not values:
        return ABSENT
    return _normalise(name.lower(), tuple(values))


def vary_key(fields: Sequence[str], get: Callable[[str], Sequence[str]]) -> tuple[str, ...]:
    """The secondary key for ``fields`` (from vary_fields) given a request-field getter."""
    return tuple(normalise_field(f, get(f)) for f in fields)
