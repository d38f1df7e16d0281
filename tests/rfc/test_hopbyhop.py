"""RFC 9110 §7.6.1 connection-specific fields."""

import pytest

from proxy.rfc.hopbyhop import HOP_BY_HOP, strip_hop_by_hop


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_static_set_removed_rfc9110_7_6_1(name: str) -> None:
    headers = [(name.encode().upper(), b"x"), (b"Content-Type", b"text/plain")]
    assert strip_hop_by_hop(headers) == [(b"Content-Type", b"text/plain")]


def test_connection_listed_removed_rfc9110_7_6_1() -> None:
    headers = [
        (b"Connection", b"close, X-A"),
        (b"x-a", b"1"),
        (b"X-B", b"2"),
        (b"connection", b" x-c ,"),
        (b"X-C", b"3"),
    ]
    assert strip_hop_by_hop(headers) == [(b"X-B", b"2")]


def test_listed_before_connection_line_rfc9110_7_6_1() -> None:
    headers = [(b"X-A", b"1"), (b"Connection", b"x-a"), (b"X-B", b"2")]
    assert strip_hop_by_hop(headers) == [(b"X-B", b"2")]


def test_order_and_duplicates_kept_rfc9110_7_6_1() -> None:
    headers = [(b"Set-Cookie", b"a"), (b"Keep-Alive", b"t=5"), (b"Set-Cookie", b"b")]
    assert strip_hop_by_hop(headers) == [(b"Set-Cookie", b"a"), (b"Set-Cookie", b"b")]


def test_nothing_to_strip_rfc9110_7_6_1() -> None:
    headers = [(b"A", b"1"), (b"B", b"2")]
    assert strip_hop_by_hop(headers) == headers


@pytest.mark.parametrize(
    "name",
    [b"HTTP2-Settings", b"http2-settings", b"Proxy-Authorization", b"TE", b"Trailer", b"Upgrade"],
)
def test_h2c_and_proxy_fields_removed_issue_10(name: str) -> None:
    headers = [(name, b"AAMAAABkAARAAAAAAAIAAAAA"), (b"Accept", b"*/*")]
    assert strip_hop_by_hop(headers) == [(b"Accept", b"*/*")]


def test_upgrade_smuggle_variants_removed_issue_10() -> None:
    headers = [
        (b"Connection", b"Upgrade, HTTP2-Settings"),
        (b"Upgrade", b"h2c"),
        (b"HTTP2-Settings", b"AAMAAABk"),
        (b"Connection", b"X-Internal\t,\tkeep-alive"),
        (b"x-internal", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Host", b"a.example"),
    ]
    assert strip_hop_by_hop(headers) == [(b"Host", b"a.example")]
