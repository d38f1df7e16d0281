"""Host → site routing. A request whose host matches no site is answered 421 and never reaches
an origin: an edge must never be an open proxy."""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from proxy.config import Config


@dataclass(frozen=True, slots=True)
class SiteRuntime:
    index: int
    name: str
    origin: URL
    origin_host: str  # authority of the origin, sent as Host unless forward_host
    blocked_by_url: str
    forward_host: bool
    case_sensitive_paths: bool  # passed to Snapshot.check(..., case_sensitive=)


# The site of a request admit refused (unknown host, bad target): it reaches no origin.
UNROUTED = SiteRuntime(-1, "", URL(), "", "", False, False)


class SiteTable:
    def __init__(self, cfg: Config) -> None:
        self.sites: list[SiteRuntime] = []
        self._by_host: dict[str, SiteRuntime] = {}
        self._wildcard_suffixes: list[tuple[str, SiteRuntime]] = []
        self.default: SiteRuntime | None = None
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
