"""Structured Field Values (RFC 8941, with RFC 9651's Date and Display String): just what the
cache needs: parsing a Dictionary (targeted cache-control, RFC 9213) and serialising the bare
items a Cache-Status member (RFC 9211) is made of.

Parsing follows RFC 8941 §4.2 strictly: any error fails the whole field (returns None), which
RFC 9213 §2.1 turns into "ignore the field".
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "BareItem",
    "InnerList",
    "Item",
    "Token",
    "parse_dictionary",
    "serialize_bare_item",
    "serialize_key",
    "serialize_string",
    "serialize_token",
    "is_token",
]


class Token(str):
    """An sf-token, kept apart from an sf-string (same Python type otherwise)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class DisplayString:
    """An RFC 9651 Display String (%"...")."""

    value: str


@dataclass(frozen=True, slots=True)
class Date:
    """An RFC 9651 Date (@seconds)."""

    seconds: int


BareItem = int | Decimal | str | Token | bytes | bool | Date | DisplayString
Params = dict[str, BareItem]


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: Params


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params


_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGIT = frozenset("0123456789")
_KEY_CHARS = _LCALPHA | _DIGIT | frozenset("_-.*")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TCHAR = _ALPHA | _DIGIT | frozenset("!#$%&'*+-.^_`|~")
_TOKEN_CHARS = _TCHAR | frozenset(":/")
_B64 = _ALPHA | _DIGIT | frozenset("+/=")


class _Fail(Exception):
    pass


class _Parser:
    __slots__ = ("s", "i")

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def key(self) -> str:
        c = self.peek()
        if not c or (c not in _LCALPHA and c != "*"):
            raise _Fail
        start = self.i
        while self.peek() and self.peek() in _KEY_CHARS:
            self.i += 1
        return self.s[start : self.i]

    def params(self) -> Params:
        out: Params = {}
        while self.peek() == ";":
            self.i += 1
            self.skip_sp()
            k = self.key()
            v: BareItem = True
            if self.peek() == "=":
                self.i += 1
                v = self.bare_item()
            out[k] = v
        return out

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() == "(":
            return self.inner_list()
        value = self.bare_item()
        return Item(value, self.params())

    def inner_list(self) -> InnerList:
        self.i += 1  # "("
        items: list[Item] = []
        while self.i < len(self.s):
            self.skip_sp()
            if self.peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            value = self.bare_item()
            items.append(Item(value, self.params()))
            if self.peek() not in (" ", ")"):
                raise _Fail
        raise _Fail

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == "-" or (c and c in _DIGIT):
            return self.number()
        if c == '"':
            return self.string()
        if c == "*" or (c and c in _ALPHA):
            return self.token()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c == "@":
            self.i += 1
            n = self.number()
            if not isinstance(n, int) or isinstance(n, bool):
                raise _Fail
            return Date(n)
        if c == "%":
            return self.display_string()
        raise _Fail

    def number(self) -> int | Decimal:
        sign = 1
        if self.peek() == "-":
            sign = -1
            self.i += 1
        digits_start = self.i
        if not (self.peek() and self.peek() in _DIGIT):
            raise _Fail
        is_decimal = False
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in _DIGIT:
                self.i += 1
            elif c == "." and not is_decimal:
                if self.i - digits_start > 12:
                    raise _Fail
                is_decimal = True
                self.i += 1
            else:
                break
            if not is_decimal and self.i - digits_start > 15:
                raise _Fail
            if is_decimal and self.i - digits_start > 16:
                raise _Fail
        text = self.s[digits_start : self.i]
        if not is_decimal:
            return sign * int(text)
        if text.endswith("."):
            raise _Fail
        if len(text.split(".")[1]) > 3:
            raise _Fail
        return Decimal(text) * sign

    def string(self) -> str:
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                if self.i >= len(self.s):
                    raise _Fail
                nxt = self.s[self.i]
                self.i += 1
                if nxt not in ('"', "\\"):
                    raise _Fail
                out.append(nxt)
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise _Fail
            else:
                out.append(c)
        raise _Fail

    def token(self) -> Token:
        start = self.i
        self.i += 1
        while self.peek() and self.peek() in _TOKEN_CHARS:
            self.i += 1
        return Token(self.s[start : self.i])

    def byte_sequence(self) -> bytes:
        self.i += 1
        end = self.s.find(":", self.i)
        if end < 0:
            raise _Fail
        body = self.s[self.i : end]
        if any(c not in _B64 for c in body):
            raise _Fail
        self.i = end + 1
        try:
            return base64.b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise _Fail from exc

    def boolean(self) -> bool:
        self.i += 1
        c = self.peek()
        if c not in ("0", "1") or not c:
            raise _Fail
        self.i += 1
        return c == "1"

    def display_string(self) -> DisplayString:
        if self.s[self.i : self.i + 2] != '%"':
            raise _Fail
        self.i += 2
        buf = bytearray()
        hexdigits = "0123456789abcdef"
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "%":
                h = self.s[self.i : self.i + 2]
                if len(h) != 2 or any(x not in hexdigits for x in h):
                    raise _Fail
                buf.append(int(h, 16))
                self.i += 2
            elif c == '"':
                try:
                    return DisplayString(buf.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise _Fail from exc
            elif not (" " <= c <= "~"):
                raise _Fail
            else:
                buf.append(ord(c))
        raise _Fail


def parse_dictionary(value: str) -> dict[str, Item | InnerList] | None:
    """RFC 8941 §4.2.2: parse a Dictionary; None on any parse error.

    Callers combine multiple field lines with "," first (§4.2). Duplicate keys: the last
    value wins, at the first key's position (§4.2.2 step 2.5).
    """
    p = _Parser(value)
    p.skip_sp()
    out: dict[str, Item | InnerList] = {}
    try:
        while p.i < len(p.s):
            k = p.key()
            member: Item | InnerList
            if p.peek() == "=":
                p.i += 1
                member = p.item_or_inner_list()
            else:
                member = Item(True, p.params())
            out[k] = member
            p.skip_ows()
            if p.i >= len(p.s):
                return out
            if p.peek() != ",":
                return None
            p.i += 1
            p.skip_ows()
            if p.i >= len(p.s):
                return None  # trailing comma
    except _Fail:
        return None
    return out


def is_token(text: str) -> bool:
    """True if ``text`` serialises as an sf-token (RFC 8941 §3.3.4)."""
    return (
        bool(text)
        and (text[0] in _ALPHA or text[0] == "*")
        and all(c in _TOKEN_CHARS for c in text)
    )


def serialize_token(text: str) -> str:
    if not is_token(text):
        raise ValueError(f"not an sf-token: {text!r}")
    return text


def serialize_string(text: str) -> str:
    """RFC 8941 §4.1.6; characters outside printable ASCII are replaced by "?"."""
    out = ['"']
    for c in text:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append("?")
    out.append('"')
    return "".join(out)


def serialize_key(key: str) -> str:
    if (
        not key
        or (key[0] not in _LCALPHA and key[0] != "*")
        or any(c not in _KEY_CHARS for c in key)
    ):
        raise ValueError(f"not an sf-key: {key!r}")
    return key


def serialize_bare_item(value: BareItem) -> str:
    """RFC 8941 §4.1.3 for the types Cache-Status uses (and a few more)."""
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > 999_999_999_999_999:
            raise ValueError("sf-integer out of range")
        return str(value)
    if isinstance(value, Token):
        return serialize_token(value)
    if isinstance(value, str):
        return serialize_string(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, Decimal):
        q = value.quantize(Decimal("0.001"))
        text = format(q.normalize(), "f")
        return text if "." in text else text + ".0"
    if isinstance(value, Date):
        return "@" + str(value.seconds)
    raise ValueError(f"cannot serialise {value!r}")
