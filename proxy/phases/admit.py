"""admit: Host → site (an unknown host gets 421: an edge is never an open proxy) and the one
canonical target every later phase reads (the canonical-target rule, DESIGN.md). The front has
already enforced size limits and framing; what it cannot judge is judged here."""

from __future__ import annotations

from dataclasses import dataclass, replace

from proxy.context import RequestCtx
from proxy.rfc.target import BadTarget, canonical_target
from proxy.sites import SiteTable


@dataclass(frozen=True, slots=True)
class Refused:
    """admit said no: the status, and the reason the client is told."""

    status: int
    reason: str


def admit(ctx: RequestCtx, sites: SiteTable) -> Refused | None:
    """Set the canonical target and the site, or say why the request is refused."""
    fields = ctx.fields
    if fields.host_count > 1:
        return Refused(400, "more than one Host field")
    if fields.host is None and ctx.request.http_version == "1.1":
        return Refused(400, "missing Host")
    scheme = "https" if ctx.request.tls else "http"  # the connection's, whatever the target says
    try:
        target = canonical_target(ctx.request.raw_target, fields.host, default_scheme=scheme)
    except BadTarget as e:
        return Refused(e.status, e.reason)
    if target.scheme != scheme:  # an absolute-form target may not claim what the hop was not
        target = replace(target, scheme=scheme)
    site = sites.route(target.host)
    if site is None:
        return Refused(421, "this edge does not serve that host")
    ctx.target = target
    ctx.primary = (target.authority, target.raw_path_query)
    ctx.site = site
    ctx.site_index = site.index
    return None


def answers_here(ctx: RequestCtx) -> bool:
    """RFC 9110 §7.6.2: TRACE or OPTIONS with Max-Forwards 0 ends at this hop."""
    return (ctx.method == "TRACE" or ctx.method == "OPTIONS") and ctx.fields.max_forwards() == 0
