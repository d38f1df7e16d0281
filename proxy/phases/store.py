"""store: what upstream_response decided to keep becomes an entry (pre-serialised head, match
keys, digest) and goes into every tier through the cache facade; a 304 updates the stored
fields (RFC 9111 §4.3.4); unsafe methods invalidate (§4.4)."""

from __future__ import annotations

from collections.abc import Callable

from proxy.blocklist.keys import match_keys
from proxy.cache.entry import PER_DELIVERY, Entry, kept_head, render_head
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, RequestCtx
from proxy.metrics import WorkerStats
from proxy.rfc.dates import format_http_date
from proxy.rfc.freshness import initial_age
from proxy.rfc.invalidation import invalidated_targets
from proxy.rfc.merge import merge_304, text_fields
from proxy.rfc.response import ParsedResponse, parse_response, response_cache_control
from proxy.rfc.target import BadTarget, canonical_target

_UNKEPT_NO_COOKIE = PER_DELIVERY | {b"set-cookie"}


class StorePhase:
    """store, as methods of the Fetcher that composes the phases."""

    # Provided by Fetcher (proxy/phases/fetch.py), which composes the phases.
    cfg: Config
    cache: TieredCache
    stats: WorkerStats
    via: bytes
    lifetime: Callable[[int, ParsedResponse, float], float | None]  # upstream_response's

    def _merge_304(
        self,
        ctx: RequestCtx,
        entry: Entry,
        fresh: list[tuple[bytes, bytes]],
        request_time: float,
        response_time: float,
        fwd_status: int = 304,
    ) -> FetchOutcome:
        """RFC 9111 §4.3.4: update the stored header fields from the 304 and reuse the body;
        the same for the 200 answer to a HEAD that matches the stored response (§4.3.5,
        `fwd_status` 200)."""
        stored, new304 = text_fields(entry.headers), text_fields(fresh)
        merged = [
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in merge_304(stored, new304, drop=("age", "cache-status"))
        ]
        answer = parse_response(fresh)
        if answer.date is None:
            # RFC 9110 §6.6.1: an undated 304 is dated when it arrived; the stored Date (the
            # origin's, or ours from the first store) would keep the entry's age growing.
            merged = [(n, v) for n, v in merged if n.lower() != b"date"]
            merged.append((b"Date", format_http_date(response_time).encode()))
        parsed = parse_response(merged)
        parsed.age = answer.age
        lifetime = self.lifetime(entry.status, parsed, response_time) or 0.0
        new = self._entry(
            ctx,
            entry.primary,
            entry.variant,
            entry.status,
            entry.reason,
            merged,
            parsed,
            entry.body,
            entry.sha256,
            request_time,
            response_time,
            lifetime,
            entry.vary_fields,
        )
        stored_ok = False
        if not parsed.cc.no_store and not parsed.cc.private:
            stored_ok = self.cache.put(new)
        else:  # §3 (no-store, §5.2.2.7 private): this client gets it, nobody else
            self.cache.remove(entry)
        return FetchOutcome(entry=new, stored=stored_ok, revalidated=True, fwd_status=fwd_status)

    def _entry(
        self,
        ctx: RequestCtx,
        primary: tuple[str, bytes],
        variant: tuple[str, ...],
        status: int,
        reason: bytes,
        hdrs: list[tuple[bytes, bytes]],
        parsed: ParsedResponse,
        body: bytes,
        digest: bytes,
        request_time: float,
        response_time: float,
        lifetime: float,
        fields: tuple[str, ...],
    ) -> Entry:
        cc = parsed.cc
        # Never stored: the per-delivery fields, those private="…" and no-cache="…" name, and
        # Set-Cookie under set_cookie_policy "strip" (never handed on at reuse).
        unkept = PER_DELIVERY if self.cfg.cache.store_set_cookie else _UNKEPT_NO_COOKIE
        if cc.private_fields or cc.no_cache_fields:
            unkept = unkept | {f.encode() for f in (*cc.private_fields, *cc.no_cache_fields)}
        added: tuple[tuple[bytes, bytes], ...] = ()
        if parsed.date is None:
            # RFC 9110 §6.6.1: a recipient with a clock adds Date when it caches a response.
            added = ((b"Date", format_http_date(response_time).encode()),)
        if not reason:
            reason = b"OK"
        kept, head = kept_head(status, reason, hdrs, unkept, added, len(body), self.via)
        target = ctx.target
        # Positional, in Entry's field order (tests/cache/test_entry_head.py holds it):
        # keywords cost every stored response 0.9 µs more (issue 18).
        entry = Entry(
            primary,
            variant,
            target,
            status,
            reason,
            kept,  # headers
            body,
            digest,  # sha256
            request_time,
            response_time,
            initial_age(parsed.age, parsed.date, request_time, response_time),  # corrected_…
            lifetime,
            float(cc.stale_while_revalidate or 0),  # stale_while_revalidate_s
            float(cc.stale_if_error or 0),  # stale_if_error_s
            cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None,  # must_re…
            cc.no_cache and not cc.no_cache_fields,  # no_cache
            parsed.etag,
            parsed.last_modified,
            parsed.date,
            fields,  # vary_fields
            parsed.cache_status,  # upstream_cache_status
            b"",  # head: set_head below
            0,  # size: set_head below
            response_time,  # stored_at
            0,  # hits
            False,  # revalidating
            True,  # alive
            ctx.site_index,
            cc,
            match_keys(target.host, target.path, target.query),  # keys: memoised by block
        )
        entry.set_head(head, self.cfg.cache.entry_overhead_bytes)
        return entry

    def relay_head(
        self, entry: Entry, hdrs: list[tuple[bytes, bytes]], parsed: ParsedResponse
    ) -> bytes:
        """The head of the response relayed fresh from the origin, when it differs from the
        stored one: fields named by `no-cache="…"` are stored but sent only after a successful
        revalidation (RFC 9111 §5.2.2.4), so this response, fresh from the origin, carries
        them. Fields named by `private="…"` are not stored, but this client may have them; so
        may Set-Cookie, stored without (`cache.set_cookie_policy` "strip")."""
        cookie_kept = not parsed.set_cookie or self.cfg.cache.store_set_cookie
        if not parsed.cc.no_cache_fields and not parsed.cc.private_fields and cookie_kept:
            return b""
        relayed = [(n, v) for n, v in hdrs if n.lower() not in PER_DELIVERY]
        if parsed.date is None:
            relayed.append((b"Date", format_http_date(entry.response_time).encode()))
        return render_head(entry.status, entry.reason, relayed, len(entry.body), self.via)

    def adopt_shared(self, ctx: RequestCtx, entry: Entry) -> Entry:
        """Finish an entry loaded from the shared tier as this node would have stored it:
        its site, the Cache-Control parsed from its stored fields, and our `Via`."""
        entry.site_index = ctx.site_index
        entry.cc = response_cache_control(entry.headers)
        t = entry.target
        entry.keys = match_keys(t.host, t.path, t.query)
        entry.render_head(self.cfg.cache.entry_overhead_bytes, self.via)
        return entry

    def invalidate(self, ctx: RequestCtx, outcome: FetchOutcome) -> None:
        """RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target
        URI and same-origin Location / Content-Location."""
        target = ctx.target
        loc = cloc = None
        for name, value in outcome.headers:
            n = name.lower()
            if n == b"location":
                loc = value.decode("latin-1")
            elif n == b"content-location":
                cloc = value.decode("latin-1")
        base = target.raw_path_query.decode("ascii")
        for authority, path_query in invalidated_targets(
            ctx.method,
            outcome.fwd_status,
            target.authority,
            loc,
            cloc,
            request_path=base,
            scheme=target.scheme,
        ):
            try:
                t = canonical_target(path_query.encode("latin-1"), authority.encode("latin-1"))
            except (BadTarget, UnicodeEncodeError):
                continue
            self.cache.purge_primary((t.authority, t.raw_path_query))
