"""cache/entry.kept_head: the fields a miss stores and the head rendered from them, in one pass
(issue 18): the same head `render_head` makes of the kept fields."""

from __future__ import annotations

from proxy.cache.entry import PER_DELIVERY, Entry, kept_head, render_head

VIA = b"1.1 edge"


def test_kept_fields_and_their_head_in_one_pass() -> None:
    fields = [
        (b"Content-Type", b"text/plain"),
        (b"Age", b"5"),
        (b"Via", b"1.0 upstream"),
        (b"content-length", b"3"),
        (b"X-Private", b"p"),
        (b"ETag", b'"e"'),
    ]
    unkept = PER_DELIVERY | {b"x-private"}
    kept, head = kept_head(200, b"OK", fields, unkept, (), 3, VIA)
    assert kept == ((b"Content-Type", b"text/plain"), (b"Via", b"1.0 upstream"), (b"ETag", b'"e"'))
    assert head == render_head(200, b"OK", kept, 3, VIA)
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nVia: 1.0 upstream, 1.1 edge\r\n"
        b'ETag: "e"\r\nContent-Length: 3\r\n'
    )


def test_added_fields_are_kept_whatever_the_directives_name() -> None:
    """A Date the edge adds (RFC 9110 §6.6.1) is stored even when private="date" names it:
    the directive is about the origin's field, which was not there."""
    date = (b"Date", b"Mon, 07 Dec 2026 03:00:00 GMT")
    kept, head = kept_head(204, b"No Content", [], frozenset({b"date"}), (date,), 0, VIA)
    assert kept == (date,)
    assert (
        head
        == b"HTTP/1.1 204 No Content\r\nDate: Mon, 07 Dec 2026 03:00:00 GMT\r\nVia: 1.1 edge\r\n"
    )


def test_entry_fields_in_the_order_store_passes_them() -> None:
    """store._entry builds entries positionally (keywords cost 0.9 µs a store, issue 18):
    Entry's fields must stay in this order, or that call must change with them."""
    from dataclasses import fields

    assert [f.name for f in fields(Entry) if f.init] == [
        "primary", "variant", "target", "status", "reason", "headers", "body", "sha256",
        "request_time", "response_time", "corrected_initial_age", "lifetime",
        "stale_while_revalidate_s", "stale_if_error_s", "must_revalidate", "no_cache", "etag",
        "last_modified", "date", "vary_fields", "upstream_cache_status", "head", "size",
        "stored_at", "hits", "revalidating", "alive", "site_index", "cc", "keys", "tier_detail",
    ]  # fmt: skip
