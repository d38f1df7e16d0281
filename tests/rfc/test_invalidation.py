"""RFC 9111 §4.4 invalidation (cases follow cache-tests invalidation)."""

import pytest

from proxy.rfc.invalidation import invalidated_targets

A = "example.com"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "M-SEARCH", "PATCH", "get"])
def test_unsafe_success_invalidates_target_rfc9111_4_4(method: str) -> None:
    got = invalidated_targets(method, 200, A, None, None, request_path="/a?x=1")
    assert got == [(A, "/a?x=1")]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE"])
def test_safe_methods_do_not_rfc9111_4_4(method: str) -> None:
    assert invalidated_targets(method, 200, A, "/x", "/y", request_path="/a") == []


@pytest.mark.parametrize(
    ("status", "count"), [(200, 1), (204, 1), (302, 1), (399, 1), (400, 0), (500, 0), (100, 0)]
)
def test_only_non_error_status_rfc9111_4_4(status: int, count: int) -> None:
    assert len(invalidated_targets("POST", status, A, None, None, request_path="/a")) == count


def test_location_and_content_location_rfc9111_4_4() -> None:
    got = invalidated_targets("POST", 201, A, "/new", "http://example.com/cl", request_path="/a")
    assert got == [(A, "/a"), (A, "/new"), (A, "/cl")]


def test_relative_reference_resolved_rfc9111_4_4() -> None:
    got = invalidated_targets("POST", 200, A, "b/../c?q", None, request_path="/dir/page")
    assert got == [(A, "/dir/page"), (A, "/dir/c?q")]


def test_relative_path_needs_base_rfc9111_4_4() -> None:
    assert invalidated_targets("POST", 200, A, "c", "/d", request_path=None) == [(A, "/d")]


@pytest.mark.parametrize(
    "location",
    [
        "http://other.com/x",
        "https://example.com/x",
        "//other.com/x",
        "http://example.com:8080/x",
        "http://user@example.com/x",
    ],
)
def test_other_origin_ignored_rfc9111_4_4(location: str) -> None:
    assert invalidated_targets("POST", 200, A, location, None) == []


def test_same_origin_spellings_canonicalised_rfc9111_4_4() -> None:
    got = invalidated_targets("POST", 200, "Example.COM:80", "HTTP://EXAMPLE.com:80/%7ex", None)
    assert got == [(A, "/~x")]


def test_dedup_rfc9111_4_4() -> None:
    got = invalidated_targets("PUT", 200, A, "/a", "/a", request_path="/a")
    assert got == [(A, "/a")]


def test_fragment_dropped_rfc9111_4_4() -> None:
    assert invalidated_targets("POST", 200, A, "/x#frag", None) == [(A, "/x")]


def test_https_scheme_rfc9111_4_4() -> None:
    got = invalidated_targets("POST", 200, A, "https://example.com:443/x", None, scheme="https")
    assert got == [(A, "/x")]
