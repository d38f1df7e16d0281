"""RFC 9211 Cache-Status."""

import pytest

from proxy.rfc.cache_status import Members, append_cache_status, cache_status, cache_status_bytes
from proxy.rfc.structured import parse_dictionary


def test_hit_rfc9211_2_1() -> None:
    assert cache_status("edgeproxy", hit=True, ttl=376) == "edgeproxy; hit; ttl=376"


def test_miss_stored_rfc9211_2_2() -> None:
    got = cache_status("edgeproxy", hit=False, fwd="uri-miss", fwd_status=200, stored=True)
    assert got == "edgeproxy; fwd=uri-miss; fwd-status=200; stored"


def test_not_stored_with_detail_rfc9211_2_7_2_8() -> None:
    got = cache_status("edgeproxy", hit=False, fwd="miss", stored=False, detail="no-store")
    assert got == "edgeproxy; fwd=miss; stored=?0; detail=no-store"


def test_detail_needing_quotes_rfc9211_2_8() -> None:
    got = cache_status("edgeproxy", hit=False, fwd="bypass", detail="blocked by 451")
    assert got.endswith('detail="blocked by 451"')


def test_identifier_string_when_not_token_rfc9211_2() -> None:
    assert cache_status("edge node 1", hit=True).startswith('"edge node 1"; hit')


def test_negative_ttl_collapsed_key_rfc9211_2_5() -> None:
    got = cache_status("c", hit=True, ttl=-30, collapsed=True, key='/a "b"')
    assert got == 'c; hit; ttl=-30; collapsed; key="/a \\"b\\""'


def test_unknown_fwd_rejected_rfc9211_2_2() -> None:
    with pytest.raises(ValueError):
        cache_status("c", hit=False, fwd="nonsense")


@pytest.mark.parametrize(
    "fwd", ["bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"]
)
def test_all_fwd_values_parse_as_sf_rfc9211_2_2(fwd: str) -> None:
    member = cache_status("edgeproxy", hit=False, fwd=fwd, fwd_status=304, ttl=5)
    # a list member with params is also a valid dictionary member with the same syntax
    assert parse_dictionary(member.replace("; ", ";")) is not None


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, "me; hit"),
        ("", "me; hit"),
        ("origin-cache; hit", "origin-cache; hit, me; hit"),
        ("a; hit, b; fwd=miss ", "a; hit, b; fwd=miss, me; hit"),
    ],
)
def test_append_last_rfc9211_2(existing: str | None, expected: str) -> None:
    assert append_cache_status(existing, "me; hit") == expected


@pytest.mark.parametrize("cache", ["edgeproxy", "edge node 1"])
@pytest.mark.parametrize("fwd", [None, "miss", "stale", "uri-miss"])
@pytest.mark.parametrize("stored", [None, True, False])
@pytest.mark.parametrize("ttl", [None, 3600, -5, 0])
@pytest.mark.parametrize("collapsed", [False, True])
@pytest.mark.parametrize("detail", [None, "no-store", "blocked by 451"])
def test_members_memo_writes_what_cache_status_writes_issue18(
    cache: str,
    fwd: str | None,
    stored: bool | None,
    ttl: int | None,
    collapsed: bool,
    detail: str | None,
) -> None:
    members = Members(cache, max_entries=4)  # small: the memo also starts again midway
    params = dict(fwd=fwd, fwd_status=200, stored=stored, ttl=ttl, collapsed=collapsed)
    want = cache_status_bytes(cache, hit=False, detail=detail, **params)  # type: ignore[arg-type]
    for _ in range(2):  # formatted, then from the memo
        assert members.member(detail=detail, **params) == want  # type: ignore[arg-type]
    for other in range(5):  # past max_entries: the memo starts again, answers stay right
        members.member(fwd_status=500 + other)
    assert members.member(detail=detail, **params) == want  # type: ignore[arg-type]
