"""block: the URL, prefix and host entries of the current snapshot, matched on the canonical
target's match keys with the site's case rule; and the one 451 (RFC 7725) every path sends,
whether the memo of hot answers, the block phase, or a digest found listed later."""

from __future__ import annotations

from urllib.parse import quote

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.context import RequestCtx
from proxy.front.date import current_date_bytes
from proxy.metrics import Result
from proxy.phases.deliver import connection_field
from proxy.sites import SiteRuntime

_451_LINE = b"HTTP/1.1 451 Unavailable For Legal Reasons\r\nDate: "


def block(ctx: RequestCtx, snapshot: Snapshot) -> BlockEntry | None:
    """The entry that lists this request's target, or None."""
    t = ctx.target
    return snapshot.check(t.host, t.path, t.query, case_sensitive=ctx.site.case_sensitive_paths)


def parts_451(
    site: SiteRuntime, hit: BlockEntry, default_blocked_by: str, cache_name: bytes
) -> tuple[bytes, bytes]:
    """RFC 7725: 451 with Link rel="blocked-by", never stored, naming the entry and its
    notice. Returns the fields after Date (up to the connection field) and the body."""
    link = site.blocked_by_url or default_blocked_by
    notice = f" (notice {hit.notice})" if hit.notice else ""
    text = f"451 Unavailable For Legal Reasons: blocked by entry {hit.id}{notice}.\n"
    related = b""
    if site.notice_form_url:  # the takedown service's public form, and this case on it
        form = site.notice_form_url
        if hit.notice:
            case_url = f"{form}?ref={quote(hit.notice, safe='')}"
            text += f"About this notice: {case_url}\n"
            related = b'Link: <%s>; rel="related"\r\n' % case_url.encode("latin-1", "replace")
        text += f"To report content or to contest a removal: {form}\n"
    body = text.encode("utf-8", "replace")
    head = (
        b"\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
        b'Link: <%s>; rel="blocked-by"\r\n%sCache-Status: %s; detail=blocked\r\n'
        b"Content-Length: %d\r\n"
    ) % (link.encode("latin-1", "replace"), related, cache_name, len(body))
    return head, body


def render_451(
    head: bytes, body: bytes, method: str, keep_alive: bool, version: str, fields: bytes = b""
) -> bytes:
    """The whole 451 answer as one write (HEAD: without the body); `fields`: the request id."""
    conn = fields + connection_field(keep_alive, version)
    data = _451_LINE + current_date_bytes() + head + conn + b"\r\n"
    return data if method == "HEAD" else data + body


def answer_451(
    ctx: RequestCtx, listed: BlockEntry, default_blocked_by: str, cache_name: bytes
) -> tuple[bytes, bytes]:
    """Send this request the 451 for `listed` (counted by the log phase, by entry type).
    Returns the parts `render_451` takes, for the memo of hot answers."""
    ctx.result = Result.BLOCKED
    ctx.blocked_id = listed.id
    ctx.blocked_type = str(listed.type)
    head, body = parts_451(ctx.site, listed, default_blocked_by, cache_name)
    req = ctx.request
    if ctx.method != "HEAD":
        ctx.bytes_sent = len(body)
    ctx.status = 451
    ctx.content_type = b"text/plain; charset=utf-8"  # as parts_451 writes it
    ctx.cache_status = cache_name + b"; detail=blocked"
    data = render_451(head, body, ctx.method, req.keep_alive, req.http_version, req.id_field)
    ctx.responder.send_bytes(data, close=not req.keep_alive)
    return head, body
