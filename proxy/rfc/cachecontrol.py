"""Cache-Control parsing, RFC 9111 §5.2 (plus RFC 5861 and RFC 8246 extensions).

One dataclass serves both request and response directives; the fields that only make sense
on one side are simply absent (None/False) on the other.

Decisions where the RFC leaves room, chosen to match the http-tests/cache-tests suite:

* Directive names are case-insensitive; arguments may be a token or a quoted-string
  (§5.2: "recipients ought to accept both forms"). ``max-age = 60`` (whitespace around ``=``)
  is not valid syntax: the element is dropped, and for max-age/s-maxage it counts as an
  invalid freshness directive.
* A delta-seconds that is not ``1*DIGIT`` (negative, decimal, alpha) is invalid. An invalid
  max-age or s-maxage sets ``invalid_max_age``/``invalid_s_maxage`` (and ``invalid_freshness``):
  the caller must treat the response as stale (§4.2.1 lets a cache consider it stale).
* Duplicate max-age/s-maxage with *valid* values: the first occurrence wins (§4.2.1 allows
  "either the first occurrence should be used or the response should be considered stale";
  the suite's check tests prefer reuse). A duplicate with an invalid value is invalid.
* ``no_cache``/``private`` are True only for the unqualified forms; the qualified forms
  (``no-cache="set-cookie"``) fill ``no_cache_fields``/``private_fields`` and do not stop
  reuse of the rest of the response (§5.2.2.4, §5.2.2.7).
* Overflowing delta-seconds are capped at 2147483648 (§1.2.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "DELTA_SECONDS_MAX",
    "EMPTY_CC",
    "MAX_STALE_UNLIMITED",
    "CacheControl",
    "parse_cache_control",
    "parse_delta_seconds",
    "split_field_names",
]

DELTA_SECONDS_MAX = 2147483648
"""RFC 9111 §1.2.2: a delta-seconds that overflows is replaced by 2^31."""

MAX_STALE_UNLIMITED = 1 << 62
"""A bare request ``max-stale`` (§5.2.1.2): the client accepts any staleness."""


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed Cache-Control directives (request or response)."""

    max_age: int | None = None
    s_maxage: int | None = None
    no_store: bool = False
    no_cache: bool = False
    no_cache_fields: tuple[str, ...] = ()
    private: bool = False
    private_fields: tuple[str, ...] = ()
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    no_transform: bool = False
    immutable: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    only_if_cached: bool = False
    invalid_freshness: bool = False
    invalid_max_age: bool = False
    invalid_s_maxage: bool = False

    @property
    def has_explicit_freshness(self) -> bool:
        """True when max-age or s-maxage was present, valid or not (§3 "contains ...")."""
        return (
            self.max_age is not None
            or self.s_maxage is not None
            or self.invalid_max_age
            or self.invalid_s_maxage
        )


EMPTY_CC = CacheControl()

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = " \t"


def parse_delta_seconds(text: str) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds = 1*DIGIT, capped at 2^31; anything else is None."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > 10:
        return DELTA_SECONDS_MAX
    return min(int(text), DELTA_SECONDS_MAX)


def split_field_names(text: str) -> tuple[str, ...]:
    """The field-name list of a qualified no-cache/private argument, lowercased (§5.2.2.4)."""
    out: list[str] = []
    for part in text.split(","):
        name = part.strip(_OWS).lower()
        if name and all(c in _TCHAR for c in name) and name not in out:
            out.append(name)
    return tuple(out)


def _unquote(text: str) -> str | None:
    """Body of a complete quoted-string (RFC 9110 §5.6.4), or None if it is not one."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    out: list[str] = []
    i, end = 1, len(text) - 1
    while i < end:
        c = text[i]
        if c == "\\":
            if i + 1 >= end:
                return None
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return None
        out.append(c)
        i += 1
    return "".join(out)


def split_list(value: str) -> list[str]:
    """Split a list-based field on commas outside quoted-strings (RFC 9110 §5.6.1)."""
    if '"' not in value:
        return value.split(",")
    parts: list[str] = []
    start = 0
    quoted = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ",":
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


_NO_ARG = object()
_BAD = object()


def _directive(element: str) -> tuple[str, object] | None:
    """Split one element into (lowercase name, argument | _NO_ARG | _BAD); None if empty."""
    element = element.strip(_OWS)
    if not element:
        return None
    i = 0
    n = len(element)
    while i < n and element[i] in _TCHAR:
        i += 1
    name = element[:i].lower()
    if not name:
        return ("", _BAD)
    if i == n:
        return (name, _NO_ARG)
    if element[i] != "=":
        return (name, _BAD)
    arg = element[i + 1 :]
    if arg.startswith('"'):
        unq = _unquote(arg)
        return (name, _BAD if unq is None else unq)
    if arg and all(c in _TCHAR for c in arg):
        return (name, arg)
    return (name, _BAD)


_DELTA_DIRECTIVES = frozenset(
    {"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh"}
)


@lru_cache(maxsize=4096)
def _parse_joined(value: str) -> CacheControl:
    deltas: dict[str, int] = {}
    invalid: set[str] = set()
    flags: set[str] = set()
    no_cache_fields: list[str] = []
    private_fields: list[str] = []
    max_stale: int | None = None
    for element in split_list(value):
        parsed = _directive(element)
        if parsed is None:
            continue
        name, arg = parsed
        if name in _DELTA_DIRECTIVES:
            secs = parse_delta_seconds(arg) if isinstance(arg, str) else None
            if secs is None:
                invalid.add(name)
            elif name not in deltas:
                deltas[name] = secs
        elif name == "max-stale":
            if arg is _NO_ARG:
                max_stale = MAX_STALE_UNLIMITED
            elif isinstance(arg, str):
                secs = parse_delta_seconds(arg)
                if secs is not None and max_stale is None:
                    max_stale = secs
        elif name in ("no-cache", "private"):
            if isinstance(arg, str):
                fields = split_field_names(arg)
                target = no_cache_fields if name == "no-cache" else private_fields
                target.extend(f for f in fields if f not in target)
                if not fields:
                    flags.add(name)  # no-cache="" names nothing: be safe, unqualified
            else:
                flags.add(name)  # a malformed argument is treated as the unqualified form
        elif name:
            flags.add(name)
    return from_parts(
        flags, deltas, tuple(no_cache_fields), tuple(private_fields), max_stale, invalid
    )


def from_parts(
    flags: set[str],
    deltas: Mapping[str, int | None],
    no_cache_fields: tuple[str, ...],
    private_fields: tuple[str, ...],
    max_stale: int | None,
    invalid: set[str],
) -> CacheControl:
    """The CacheControl of parsed directives: shared by Cache-Control (§5.2) and the
    targeted fields of RFC 9213, which differ in syntax only. An invalid max-age or s-maxage
    is absent but marks the response stale (§4.2.1)."""
    inv_max = "max-age" in invalid
    inv_s = "s-maxage" in invalid
    return CacheControl(
        max_age=None if inv_max else deltas.get("max-age"),
        s_maxage=None if inv_s else deltas.get("s-maxage"),
        no_store="no-store" in flags,
        no_cache="no-cache" in flags,
        no_cache_fields=no_cache_fields,
        private="private" in flags,
        private_fields=private_fields,
        public="public" in flags,
        must_revalidate="must-revalidate" in flags,
        proxy_revalidate="proxy-revalidate" in flags,
        must_understand="must-understand" in flags,
        no_transform="no-transform" in flags,
        immutable="immutable" in flags,
        stale_while_revalidate=deltas.get("stale-while-revalidate"),
        stale_if_error=deltas.get("stale-if-error"),
        max_stale=max_stale,
        min_fresh=deltas.get("min-fresh"),
        only_if_cached="only-if-cached" in flags,
        invalid_freshness=inv_max or inv_s,
        invalid_max_age=inv_max,
        invalid_s_maxage=inv_s,
    )


def parse_cache_control(values: Sequence[str]) -> CacheControl:
    """Parse all Cache-Control field lines of a message (RFC 9111 §5.2).

    Field lines are combined with ", " (RFC 9110 §5.3); empty list elements are ignored;
    unknown directives are ignored (§5.2.3). Results are memoised on the combined value.
    """
    if not values:
        return EMPTY_CC
    joined = values[0] if len(values) == 1 else ", ".join(values)
    if not joined.strip(_OWS):
        return EMPTY_CC
    return _parse_joined(joined)
