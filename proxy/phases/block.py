"""block: the URL, prefix and host entries of the current snapshot, matched on the canonical
target's match keys with the site's case rule; and the one 451 (RFC 7725) every path sends,
whether the memo of hot answers, the block phase, or a digest found listed later."""

from __future__ import annotations

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.context import RequestCtx
from proxy.front.date import current_date_bytes
from proxy.phases.deliver import connection_field
from proxy.sites import SiteRuntime

_451_LINE = b"HTTP/1.1 451 Unavailable For Legal Reasons\r\nDate: "


def block(ctx: RequestCtx, snapshot: Snapshot) -> BlockEntry | None:
    """The entry that lists this request's target, or None."""
    t, site = ctx.target, ctx.site
    assert t is not None and site is not None
    return snapshot.check(t.host, t.path, t.query, case_sensitive=site.case_sensitive_paths)


def parts_451(
    site: SiteRuntime | None, hit: BlockEntry, default_blocked_by: str, cache_name: bytes
) -> tuple[bytes, bytes]:
    """RFC 7725: 451 with Link rel="blocked-by", never stored, naming the entry and its
    notice. Returns the fields after Date (up to the connection field) and the body."""
    link = (site.blocked_by_url if site else "") or default_blocked_by
    notice = f" (notice {hit.notice})" if hit.notice else ""
    body = f"451 Unavailable For Legal Reasons: blocked by entry {hit.id}{notice}.\n".encode(
        "utf-8", "replace"
    )
    head = (
        b"\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
        b'Link: <%s>; rel="blocked-by"\r\nCache-Status: %s; detail=blocked\r\n'
        b"Content-Length: %d\r\n"
    ) % (link.encode("latin-1", "replace"), cache_name, len(body))
    return head, body


def render_451(head: bytes, body: bytes, method: str, keep_alive: bool, version: str) -> bytes:
    """The whole 451 answer as one write (HEAD: without the body)."""
    conn = connection_field(keep_alive, version)
    data = _451_LINE + current_date_bytes() + head + conn + b"\r\n"
    return data if method == "HEAD" else data + body
