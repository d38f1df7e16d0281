"""Host → site routing. A request whose host matches no site is answered 421 and never reaches
an origin: an edge must never be an open proxy."""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from proxy.config import Config
from proxy.rfc.hsts import sts_field


@dataclass(frozen=True, slots=True)
class SiteRuntime:
    index: int
    name: str
    origin: URL
    origin_host: str  # authority of the origin, sent as Host unless forward_host
    blocked_by_url: str
    forward_host: bool
    case_sensitive_paths: bool  # passed to Snapshot.check(..., case_sensitive=)
    hsts: bytes = b""  # the Strict-Transport-Security line for its answers over TLS, or b""
    notice_form_url: str = ""  # the takedown service's public form: 451s link to it


# The site of a request admit refused (unknown host, bad target): it reaches no origin.
UNROUTED = SiteRuntime(-1, "", URL(), "", "", False, False)


class SiteTable:
    def __init__(self, cfg: Config) -> None:
        self.sites: list[SiteRuntime] = []
        self._by_host: dict[str, SiteRuntime] = {}
        self._wildcard_suffixes: list[tuple[str, SiteRuntime]] = []
        self.default: SiteRuntime | None = None
        self._tls_fields: dict[bytes | None, bytes] = {}
        for i, s in enumerate(cfg.sites):
            origin = URL(s.origin)
            rt = SiteRuntime(
                index=i,
                name=s.name,
                origin=origin,
                origin_host=origin.raw_authority,
                blocked_by_url=s.blocked_by_url or cfg.blocklist.default_blocked_by_url,
                forward_host=s.forward_host,
                case_sensitive_paths=s.case_sensitive_paths,
                hsts=sts_field(s.hsts_max_age_s, include_subdomains=s.hsts_include_subdomains),
                notice_form_url=cfg.blocklist.notice_form_url,
            )
            self.sites.append(rt)
            for h in s.hosts:
                h = h.lower().rstrip(".")
                if h == "*":
                    self.default = rt
                elif h.startswith("*."):
                    self._wildcard_suffixes.append((h[1:], rt))
                else:
                    self._by_host[h] = rt

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    def route(self, host: str) -> SiteRuntime | None:
        """`host` is the canonical (lowercase, no trailing dot, no port) host."""
        site = self._by_host.get(host)
        if site is not None:
            return site
        for suffix, rt in self._wildcard_suffixes:
            if host.endswith(suffix):
                return rt
        return self.default

    def tls_fields(self, host: bytes | None) -> bytes:
        """The field lines the front adds to every answer over TLS for this Host value
        (FrontServer(tls_fields=…)): the site's HSTS. Memoised per raw value, as sent."""
        fields = self._tls_fields.get(host)
        if fields is None:
            site = self.route(_host_of(host)) if host is not None else self.default
            fields = site.hsts if site is not None else b""
            if len(self._tls_fields) >= _TLS_FIELDS_MEMO:
                self._tls_fields.clear()  # a client inventing Host values gets no growth
            self._tls_fields[host] = fields
        return fields


_TLS_FIELDS_MEMO = 4096


def _host_of(raw: bytes) -> str:
    """A Host value as `route` takes it: lowercase, no port, no trailing dot."""
    text = raw.decode("latin-1").strip().lower()
    if text.startswith("["):
        text = text[: text.find("]") + 1]
    else:
        text = text.partition(":")[0]
    return text.rstrip(".")
