"""A fresh hit's answer from the memo (`deliver.hit_bytes`), made by one format (issue 18): the
stored head, Age, Cache-Status (a nearer cache's members first, the tier's detail last), the
request id line, Connection, then the body, joined when small and apart when large."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from proxy.front.wire import WRITEV_MIN_BYTES
from proxy.phases.deliver import connection_field, hit_bytes

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"


def test_every_shape_of_a_hit_answer() -> None:
    for method, keep_alive, version, upstream, detail, fields, size in itertools.product(
        ["GET", "HEAD"],
        [True, False],
        ["1.1", "1.0"],
        [b"", b"origin-cache; hit"],
        [b"", b"; detail=node"],
        [b"", b"X-Request-Id: k3vq7a2m-1f\r\n"],
        [0, 1024, WRITEV_MIN_BYTES],
    ):
        body = b"%" * size  # a `%` in the body is data, not a format
        entry = SimpleNamespace(
            head=HEAD % size, body=body, corrected_initial_age=2.0, response_time=100.0,
            lifetime=60.0, tier_detail=detail, upstream_cache_status=upstream,
        )  # fmt: skip
        got = hit_bytes(method, keep_alive, version, entry, 110.5, b"edge; hit", fields)  # type: ignore[arg-type]
        status = (upstream + b", " if upstream else b"") + b"edge; hit; ttl=47" + detail
        head = (
            entry.head + b"Age: 12\r\nCache-Status: " + status + b"\r\n" + fields
            + connection_field(keep_alive, version) + b"\r\n"
        )  # fmt: skip
        if method == "HEAD":
            assert got == head
        elif size >= WRITEV_MIN_BYTES:
            assert got == (head, body)
        else:
            assert got == head + body
