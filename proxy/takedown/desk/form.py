"""The public notice form's fields, turned into the notice document `POST /notices` takes.

The form is judged by the API's own checks (`elements.check_notice` on the document's JSON
bytes, and `elements.parse_target` for each URL), so the form and the API cannot disagree on
what a complete notice is; this module only maps element paths back to the fields that carry
them, with a sentence a member of the public can act on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.takedown import elements

# Form field -> (element path it fills, what to tell the person when it is missing).
FIELDS: dict[str, tuple[str, str]] = {
    "complainant_name": ("complainant.name", "Give your full name (or your organisation's)."),
    "complainant_email": ("complainant.email", "Give an email address: the receipt goes there."),
    "works": ("works", "Name at least one work you say is infringed, one per line."),
    "urls": ("targets", "Give the exact URL of at least one infringing item, one per line."),
    "legal_basis": ("legal_basis", "Choose why the content should be removed."),
    "good_faith": (
        "statements.good_faith",
        "Confirm that you believe in good faith the use is not authorised.",
    ),
    "accurate": (
        "statements.accurate",
        "Confirm that the notice is accurate and that you may act for the owner.",
    ),
    "signature": ("signature", "Type your full name as your electronic signature."),
}
ELEMENT_FIELD = {path: name for name, (path, _) in FIELDS.items()}
TEXT_FIELDS = (
    "complainant_name",
    "complainant_email",
    "complainant_address",
    "complainant_phone",
    "acting_for",
    "works",
    "urls",
    "explanation",
    "signature",
)
MAX_LINES = 200  # URLs or works on one form


@dataclass(slots=True)
class Filled:
    """A submitted form: the values to show again, the notice built from them, its errors."""

    values: dict[str, str]
    document: dict[str, Any]
    raw: bytes
    errors: dict[str, str] = field(default_factory=dict)
    checked: elements.Checked | None = None


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()][:MAX_LINES]


def document(values: Mapping[str, str]) -> dict[str, Any]:
    """The notice as the API would receive it (unknown or empty fields left out)."""
    complainant = {
        k: values[f"complainant_{k}"].strip()
        for k in ("name", "email", "address", "phone")
        if values.get(f"complainant_{k}", "").strip()
    }
    if values.get("acting_for", "").strip():
        complainant["acting_for"] = values["acting_for"].strip()
    doc: dict[str, Any] = {
        "complainant": complainant,
        "works": [{"title": t} for t in _lines(values.get("works", ""))],
        "targets": [{"url": u} for u in _lines(values.get("urls", ""))],
        "legal_basis": values.get("legal_basis", ""),
        "statements": {
            "good_faith": values.get("good_faith") == "yes",
            "accurate": values.get("accurate") == "yes",
        },
        "signature": values.get("signature", "").strip(),
    }
    if values.get("explanation", "").strip():  # DSA 16(2)(a): why the content is illegal
        doc["explanation"] = values["explanation"].strip()
    return doc


def fill(form: Mapping[str, Any]) -> Filled:
    values = {k: str(form.get(k, ""))[:20_000] for k in TEXT_FIELDS}
    for k in ("legal_basis", "good_faith", "accurate"):
        values[k] = str(form.get(k, ""))[:64]
    doc = document(values)
    raw = json.dumps(doc, ensure_ascii=False).encode()
    out = Filled(values, doc, raw)
    out.checked = elements.check_notice(raw)
    if out.checked.error is not None:  # what the API would refuse as junk (400): say where
        out.errors[_field_of(out.checked.error.field)] = _schema_sentence(out.checked.error)
    for path in out.checked.missing:
        name = ELEMENT_FIELD.get(path)
        if name is not None:
            out.errors.setdefault(name, FIELDS[name][1])
    bad = [f"{json.loads(t.raw).get('url', '')}: {t.error}" for t in out.checked.targets if t.error]
    if bad and "urls" not in out.errors:
        out.errors["urls"] = "These lines are not usable URLs: " + "; ".join(bad[:5])
    return out


def _field_of(path: str) -> str:
    """The form field that carries a schema error's path (`targets`, `complainant.email` …)."""
    head = path.split("[", 1)[0]
    for name, (element, _) in FIELDS.items():
        if head == element or head.startswith(element + "."):
            return name
    if head.startswith(("targets", "material")):
        return "urls"
    if head.startswith("works"):
        return "works"
    return "urls"  # the form builds every other part itself: only its URLs can be off


def _schema_sentence(err: Any) -> str:
    name = _field_of(err.field)
    if name in FIELDS and "length >= 1" in err.message:
        return FIELDS[name][1]  # an empty list: the element is missing
    return f"This is not usable: {err.message}."
