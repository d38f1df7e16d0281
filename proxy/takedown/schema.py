"""The shape of every body the API accepts (msgspec), and errors that name the offending field.

The legal elements (`elements.py`) say what a notice must *contain*; this module says what a
body must *look like* before it is judged at all. A body that is not JSON, not an object, or has
a field of the wrong type (`material` as a string, `targets` as an object) is junk: it is
refused with one precise error (`material: must be a list, got a string`) and kept as a
rejected submission, and it never opens a case. A well-formed notice that lacks elements is
not junk: it is kept on an incomplete case and answered with what is missing (512(c)(3)(B)(ii)).

Unknown fields are allowed (submitters add their own references); the known ones are typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec

T = TypeVar("T")


class Complainant(msgspec.Struct):
    name: str | None = None
    email: str | None = None
    address: str | None = None
    phone: str | None = None


class Work(msgspec.Struct):
    title: str | None = None
    description: str | None = None


class TargetDoc(msgspec.Struct):
    url: str | None = None
    sha256: str | None = None


class NoticeStatements(msgspec.Struct):
    good_faith: bool | None = None
    accurate: bool | None = None


class NoticeDoc(msgspec.Struct):
    """DMCA 512(c)(3) / DSA 16(2). `targets` is required: without a location there is nothing
    to act on and nothing a later, complete notice could join (512(c)(3)(A)(iii))."""

    targets: Annotated[list[TargetDoc], msgspec.Meta(min_length=1)]
    complainant: Complainant | None = None
    works: list[Work] | None = None
    legal_basis: str | None = None
    statements: NoticeStatements | None = None
    signature: str | None = None


class Subscriber(msgspec.Struct):
    name: str | None = None
    address: str | None = None
    phone: str | None = None


class CounterStatements(msgspec.Struct):
    good_faith_mistake: bool | None = None
    consent_to_jurisdiction: bool | None = None
    accept_service: bool | None = None


class CounterNoticeDoc(msgspec.Struct):
    """DMCA 512(g)(3). `material` (or its alias `targets`) lists what was removed."""

    material: list[TargetDoc | str] | None = None
    targets: list[TargetDoc | str] | None = None
    subscriber: Subscriber | None = None
    statements: CounterStatements | None = None
    signature: str | None = None


class Statement(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /cases/{case}/reverse`, `/complaint`, `/complaint/dismiss`,
    `POST /sites/{host}/unsuspend`: why, in words the parties will read. Its size is bounded
    by `[service] max_notice_bytes`, like every body."""

    statement: Annotated[str, msgspec.Meta(min_length=1)]


@dataclass(frozen=True, slots=True)
class SchemaError:
    field: str  # "material", "targets[0].url", "" for the body itself
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field or "(body)", "message": self.message}


_TYPES = {
    "array": "a list",
    "object": "an object",
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "null": "null",
}
_EXPECTED = re.compile(r"^Expected `([^`]+)`(?:, got `([^`]+)`)?(.*?)(?: - at `\$(.*)`)?$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`(?: - at `\$(.*)`)?$")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`(?: - at `\$(.*)`)?$")


def _path(at: str | None) -> str:
    return (at or "").lstrip(".")


def _kind(names: str) -> str:
    kinds = [_TYPES.get(n.strip(), n.strip()) for n in names.split("|") if n.strip() != "null"]
    return " or ".join(kinds) or "null"


def describe(exc: msgspec.ValidationError | msgspec.DecodeError) -> SchemaError:
    """msgspec's message as a field path and a sentence a submitter can act on."""
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return SchemaError("", f"the body is not valid JSON ({text})")
    if m := _MISSING.match(text):
        parent = _path(m.group(2))
        return SchemaError(f"{parent}.{m.group(1)}" if parent else m.group(1), "is required")
    if m := _UNKNOWN.match(text):
        parent = _path(m.group(2))
        return SchemaError(f"{parent}.{m.group(1)}" if parent else m.group(1), "unknown field")
    if m := _EXPECTED.match(text):
        expected, got, extra, at = m.groups()
        field = _path(at)
        if got is None:  # a constraint, e.g. "`array` of length >= 1"
            return SchemaError(field, f"must be {_kind(expected)}{extra}".rstrip())
        return SchemaError(field, f"must be {_kind(expected)}, got {_kind(got)}")
    at = re.search(r" - at `\$(.*)`$", text)
    return SchemaError(_path(at.group(1)) if at else "", text.split(" - at ")[0])


def decode(raw: bytes) -> tuple[dict[str, Any] | None, SchemaError | None]:
    """The body as a JSON object, or why it is not one."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        return None, describe(exc)
    if not isinstance(doc, dict):
        return None, SchemaError("", f"must be a JSON object, got {_kind(_json_type(doc))}")
    return doc, None


def check(doc: dict[str, Any], shape: type[T]) -> tuple[T | None, SchemaError | None]:
    try:
        return msgspec.convert(doc, shape), None
    except msgspec.ValidationError as exc:
        return None, describe(exc)


def parse(raw: bytes, shape: type[T]) -> tuple[T | None, SchemaError | None]:
    doc, err = decode(raw)
    if doc is None:
        return None, err
    return check(doc, shape)


def _json_type(v: Any) -> str:
    if isinstance(v, list):
        return "array"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return "null"
