"""The elements a notice and a counter-notice must contain, checked without I/O.

Notice: 17 U.S.C. 512(c)(3)(A)(i)-(vi) and DSA Art. 16(2)(a)-(d). Counter-notice: 512(g)(3).
A missing element is named by its field path (e.g. ``statements.good_faith``); the law it comes
from travels alongside so the reply to the submitter can cite it. A body that does not even have
the shape of a notice (`schema.py`: not JSON, a field of the wrong type) is not checked for
elements at all: `Checked.error` says what is wrong with it, and it never becomes a case.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import idna
from yarl import URL

from proxy.takedown import schema


class LegalBasis(StrEnum):
    HOSTED = "hosted"  # 512(c): content stored on our systems
    CACHE = "cache"  # 512(b)(2)(E) / DSA Art. 5(1)(e): origin removed it or a court ordered it
    ORDER = "order"  # court or authority order (DSA Art. 9)


BASIS_ALIASES = {
    "hosted": LegalBasis.HOSTED,
    "512c_hosted": LegalBasis.HOSTED,
    "cache": LegalBasis.CACHE,
    "cached": LegalBasis.CACHE,
    "512b_cache_origin_removed": LegalBasis.CACHE,
    "order": LegalBasis.ORDER,
    "court_order": LegalBasis.ORDER,
}

NOTICE_ELEMENTS: dict[str, str] = {
    "signature": "DMCA 512(c)(3)(A)(i)",
    "works": "DMCA 512(c)(3)(A)(ii)",
    "targets": "DMCA 512(c)(3)(A)(iii); DSA 16(2)(b)",
    "complainant.name": "DMCA 512(c)(3)(A)(iv); DSA 16(2)(c)",
    "complainant.email": "DMCA 512(c)(3)(A)(iv); DSA 16(2)(c)",
    "statements.good_faith": "DMCA 512(c)(3)(A)(v)",
    "statements.accurate": "DMCA 512(c)(3)(A)(vi); DSA 16(2)(d)",
    "legal_basis": "DMCA 512(b)(2)(E)/512(c); DSA Art. 5/6/9",
}

COUNTER_ELEMENTS: dict[str, str] = {
    "signature": "DMCA 512(g)(3)(A)",
    "material": "DMCA 512(g)(3)(B)",
    "statements.good_faith_mistake": "DMCA 512(g)(3)(C)",
    "subscriber.name": "DMCA 512(g)(3)(D)",
    "subscriber.address": "DMCA 512(g)(3)(D)",
    "subscriber.phone": "DMCA 512(g)(3)(D)",
    "statements.consent_to_jurisdiction": "DMCA 512(g)(3)(D)",
    "statements.accept_service": "DMCA 512(g)(3)(D)",
}

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class TargetKind(StrEnum):
    URL = "url"
    SHA256 = "sha256"


@dataclass(frozen=True, slots=True)
class Target:
    raw: str  # the target object as sent (JSON)
    kind: TargetKind | None
    value: str | None  # canonical URL or lowercase hex digest
    host: str | None  # the URL's host, if known
    error: str | None  # why the target itself is unusable (before the served-host check)
    authority: str | None = None  # host:port when the URL names a non-default port


@dataclass(slots=True)
class Checked:
    doc: dict[str, Any] | None
    missing: list[str] = field(default_factory=list)
    legal_basis: LegalBasis | None = None
    targets: list[Target] = field(default_factory=list)
    error: schema.SchemaError | None = None  # junk: refused before any element is checked

    @property
    def complete(self) -> bool:
        return not self.missing and self.error is None

    def missing_detail(self, table: dict[str, str]) -> list[dict[str, str]]:
        return [{"element": m, "law": table.get(m, "")} for m in self.missing]


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def canonical_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        return host


def canonical_url(text: str) -> tuple[str, str, str]:
    """(canonical URL, host, authority) for dedupe, site lookup and publishing.

    Raises ValueError if unusable.

    Only equivalence-preserving steps: scheme and host case, IDNA, default port, no fragment.
    The edge applies its own, deliberately lossy, match-key canonicalisation when it loads the
    entry, so nothing here needs to over-block.
    """
    url = URL(text.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("not an absolute http(s) URL")
    host = canonical_host(url.host)
    default_port = 443 if url.scheme == "https" else 80
    port = "" if url.explicit_port in (None, default_port) else f":{url.explicit_port}"
    path = url.raw_path or "/"
    query = f"?{url.raw_query_string}" if url.raw_query_string else ""
    literal = f"[{host}]" if ":" in host else host
    return f"{url.scheme}://{literal}{port}{path}{query}", literal, f"{literal}{port}"


def site_key(text: str) -> str:
    """A site as registered: canonical host, or host:port; IPv6 literals in brackets."""
    text = text.strip().lower()
    port = ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = rest
    else:
        h, sep, p = text.rpartition(":")
        host, port = (h, f":{p}") if sep and p.isdigit() and ":" not in h else (text, "")
    host = canonical_host(host)
    return (f"[{host}]" if ":" in host else host) + port


def bare_host(site: str) -> str:
    """The host of a site key (`host`, `host:port`, `[v6]:port`): what a host entry names."""
    if site.startswith("["):
        return site[1 : site.index("]")]
    return site.partition(":")[0] if site.count(":") == 1 else site


def parse_target(t: Any) -> Target:
    raw = json.dumps(t, sort_keys=True, ensure_ascii=False)
    if not isinstance(t, dict):
        return Target(raw, None, None, None, "a target is an object with `url` or `sha256`")
    if "sha256" in t:
        digest = t["sha256"]
        if not isinstance(digest, str) or not SHA256_RE.match(digest.strip().lower()):
            return Target(raw, TargetKind.SHA256, None, None, "sha256 is not 64 hex digits")
        host = authority = None
        if isinstance(t.get("url"), str):  # where the content was seen: for strikes
            try:
                _, host, authority = canonical_url(t["url"])
            except ValueError:
                host = authority = None
        return Target(raw, TargetKind.SHA256, digest.strip().lower(), host, None, authority)
    if isinstance(t.get("url"), str):
        try:
            value, host, authority = canonical_url(t["url"])
        except ValueError as exc:
            return Target(raw, TargetKind.URL, None, None, str(exc))
        return Target(raw, TargetKind.URL, value, host, None, authority)
    return Target(raw, None, None, None, "a target is an object with `url` or `sha256`")


def check_notice(raw: bytes) -> Checked:
    doc, err = schema.decode(raw)
    if doc is not None:
        shaped, err = schema.check(doc, schema.NoticeDoc)
        if shaped is not None and not any(t.url or t.sha256 for t in shaped.targets):
            # Nothing located at all: no case could act on it or be joined by a fix.
            err = schema.SchemaError("targets", "no target names a `url` or a `sha256`")
    if err is not None:
        return Checked(doc, error=err)
    assert doc is not None
    out = Checked(doc)
    if not _text(doc.get("signature")):
        out.missing.append("signature")
    works = doc.get("works")
    if not (
        isinstance(works, list)
        and works
        and all(
            isinstance(w, dict) and (_text(w.get("title")) or _text(w.get("description")))
            for w in works
        )
    ):
        out.missing.append("works")
    targets = doc.get("targets")
    if not isinstance(targets, list) or not targets:
        out.missing.append("targets")
    else:
        out.targets = [parse_target(t) for t in targets]
    for path in ("complainant.name", "complainant.email"):
        if not _text(_get(doc, path)):
            out.missing.append(path)
    for path in ("statements.good_faith", "statements.accurate"):
        if _get(doc, path) is not True:
            out.missing.append(path)
    basis = doc.get("legal_basis")
    out.legal_basis = BASIS_ALIASES.get(basis) if isinstance(basis, str) else None
    if out.legal_basis is None:
        out.missing.append("legal_basis")
    return out


def check_counter_notice(raw: bytes) -> Checked:
    doc, err = schema.decode(raw)
    if doc is not None:
        _, err = schema.check(doc, schema.CounterNoticeDoc)
    if err is not None:
        return Checked(doc, error=err)
    assert doc is not None
    out = Checked(doc)
    if not _text(doc.get("signature")):
        out.missing.append("signature")
    material = doc.get("material", doc.get("targets"))
    if not isinstance(material, list) or not material:
        out.missing.append("material")
    for path in ("subscriber.name", "subscriber.address", "subscriber.phone"):
        if not _text(_get(doc, path)):
            out.missing.append(path)
    for path in (
        "statements.good_faith_mistake",
        "statements.consent_to_jurisdiction",
        "statements.accept_service",
    ):
        if _get(doc, path) is not True:
            out.missing.append(path)
    order = list(COUNTER_ELEMENTS)
    out.missing.sort(key=order.index)
    return out
