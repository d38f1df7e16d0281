"""Vary (RFC 9111 §4.1), validation and 304 merge (§4.3), the client's own conditionals
(§4.3.2), HEAD (§4.3.5 / RFC 9110 §9.3.2) and Range (RFC 9110 §14) answered from cache."""

from __future__ import annotations

import hashlib

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from tests.integration.helpers_cache import Canned, get, http_date, scripted_edge, use_clock


async def test_vary_variants_kept_apart_and_normalised_rfc9111_s4_1(
    origin_server, make_edge
) -> None:
    """RFC 9111 §4.1: one stored response per Accept-Encoding variant; equivalent values
    ("gzip, br" vs "br,gzip") select the same variant; an absent field is its own variant."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    vary = [("Cache-Control", "max-age=600"), ("Vary", "Accept-Encoding")]

    def answer(request):  # type: ignore[no-untyped-def]
        return Canned(headers=vary, body=request.headers.get("Accept-Encoding", "none").encode())

    origin.on("/v", answer)
    r = await get(edge.url + "/v", headers={"Accept-Encoding": "gzip, br"})
    assert r.body == b"gzip, br"
    r = await get(edge.url + "/v", headers={"Accept-Encoding": "identity"})
    assert r.body == b"identity"
    r = await get(edge.url + "/v", headers={"Accept-Encoding": "BR,gzip"})
    assert r.body == b"gzip, br" and "hit" in r.cache_status
    r = await get(edge.url + "/v", headers={"Accept-Encoding": "identity"})
    assert r.body == b"identity" and "hit" in r.cache_status
    r = await get(edge.url + "/v")
    assert r.body == b"none"
    r = await get(edge.url + "/v")
    assert r.body == b"none" and "hit" in r.cache_status
    assert r.headers["Vary"] == "Accept-Encoding"
    assert origin.count("/v") == 3


async def test_vary_star_not_stored_rfc9111_s4_1(origin_server, make_edge) -> None:
    """RFC 9111 §4.1: Vary: * never matches; not stored (reason vary-star)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/s", Canned(headers=[("Cache-Control", "max-age=600"), ("Vary", "*")]))
    for _ in range(2):
        r = await get(edge.url + "/s")
        assert r.status == 200 and "detail=vary-star" in r.cache_status
    assert origin.count("/s") == 2


async def test_stale_etag_revalidated_and_304_merged_rfc9111_s4_3_4(
    origin_server, make_edge
) -> None:
    """RFC 9111 §4.3.1/§4.3.4: a stale entry is validated with its ETag and Last-Modified; the
    304's fields (a new X-Version and a new max-age) replace the stored ones."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    lm = http_date(-3600, clock.now)
    origin.on(
        "/e",
        Canned(
            headers=[
                ("Cache-Control", "max-age=1"),
                ("ETag", '"e1"'),
                ("Last-Modified", lm),
                ("X-Version", "1"),
                ("Content-Type", "text/x-one"),
            ],
            body=b"body-1",
        ),
        Canned(
            status=304,
            headers=[("Cache-Control", "max-age=600"), ("ETag", '"e1"'), ("X-Version", "2")],
        ),
    )
    await get(edge.url + "/e")
    clock.advance(5)
    r = await get(edge.url + "/e")
    seen = origin.last("/e")
    assert seen.headers["If-None-Match"] == '"e1"' and seen.headers["If-Modified-Since"] == lm
    assert r.status == 200 and r.body == b"body-1"
    assert r.headers["X-Version"] == "2" and r.headers["Cache-Control"] == "max-age=600"
    assert r.headers["Content-Type"] == "text/x-one"
    assert "fwd=stale; fwd-status=304" in r.cache_status
    clock.advance(100)
    r = await get(edge.url + "/e")
    assert "hit" in r.cache_status and r.headers["X-Version"] == "2"
    assert origin.count("/e") == 2


async def test_last_modified_only_validation_rfc9111_s4_3_1(origin_server, make_edge) -> None:
    """RFC 9111 §4.3.1: with only Last-Modified stored, If-Modified-Since is sent."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    lm = http_date(-3600, clock.now)
    origin.on(
        "/l",
        Canned(headers=[("Cache-Control", "max-age=1"), ("Last-Modified", lm)], body=b"l"),
        Canned(status=304, headers=[("Cache-Control", "max-age=1"), ("Last-Modified", lm)]),
    )
    await get(edge.url + "/l")
    clock.advance(5)
    r = await get(edge.url + "/l")
    assert r.body == b"l" and "fwd-status=304" in r.cache_status
    assert origin.last("/l").headers["If-Modified-Since"] == lm
    assert "If-None-Match" not in origin.last("/l").headers


async def test_200_on_revalidation_replaces_entry_rfc9111_s4_3_3(origin_server, make_edge) -> None:
    """RFC 9111 §4.3.3: a full response to a conditional request replaces the stored one."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(
        "/n",
        Canned(headers=[("Cache-Control", "max-age=1"), ("ETag", '"a"')], body=b"old"),
        Canned(headers=[("Cache-Control", "max-age=600"), ("ETag", '"b"')], body=b"new"),
    )
    await get(edge.url + "/n")
    clock.advance(5)
    r = await get(edge.url + "/n")
    assert r.body == b"new" and r.headers["ETag"] == '"b"' and "fwd-status=200" in r.cache_status
    r = await get(edge.url + "/n")
    assert r.body == b"new" and "hit" in r.cache_status and origin.count("/n") == 2


async def test_client_if_none_match_answered_304_from_cache_rfc9111_s4_3_2(
    origin_server, make_edge
) -> None:
    """RFC 9111 §4.3.2: the cache answers the client's If-None-Match itself (weak compare)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/c", Canned(headers=[("Cache-Control", "max-age=600"), ("ETag", '"x"')]))
    await get(edge.url + "/c")
    r = await get(edge.url + "/c", headers={"If-None-Match": 'W/"x"'})
    assert r.status == 304 and r.body == b"" and r.headers["ETag"] == '"x"'
    assert "Cache-Status" in r.headers and "Age" in r.headers
    r = await get(edge.url + "/c", headers={"If-None-Match": '"other"'})
    assert r.status == 200 and r.body == b"body"
    assert origin.count("/c") == 1


async def test_client_if_modified_since_with_and_without_last_modified_rfc9111_s4_3_2(
    origin_server, make_edge
) -> None:
    """RFC 9111 §4.3.2: If-Modified-Since compares with Last-Modified, or with the stored
    Date when there is none."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    date = http_date(-60)
    origin.on("/lm", Canned(headers=[("Cache-Control", "max-age=600"), ("Last-Modified", date)]))
    origin.on("/nolm", Canned(headers=[("Cache-Control", "max-age=600"), ("Date", date)]))
    for path in ("/lm", "/nolm"):
        await get(edge.url + path)
        r = await get(edge.url + path, headers={"If-Modified-Since": http_date(-10)})
        assert r.status == 304 and r.body == b"", path
        r = await get(edge.url + path, headers={"If-Modified-Since": http_date(-3600)})
        assert r.status == 200 and r.body == b"body", path
        assert origin.count(path) == 1


async def test_conditional_miss_not_forwarded_as_is_rfc9111_s4_3_2(
    origin_server, make_edge
) -> None:
    """RFC 9111 §4.3.2: on a miss the cache fetches the full response (to store it) and then
    answers the client's condition itself."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/m", Canned(headers=[("Cache-Control", "max-age=600"), ("ETag", '"m"')]))
    r = await get(edge.url + "/m", headers={"If-None-Match": '"m"'})
    assert r.status == 304
    assert "If-None-Match" not in origin.last("/m").headers
    r = await get(edge.url + "/m")
    assert r.status == 200 and r.body == b"body" and "hit" in r.cache_status


async def test_head_from_cached_get_rfc9110_s9_3_2(origin_server, make_edge) -> None:
    """RFC 9110 §9.3.2: HEAD is answered from a stored GET: same fields, no body, the GET's
    Content-Length."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/h", Canned(headers=[("Cache-Control", "max-age=600")], body=b"x" * 1234))
    await get(edge.url + "/h")
    r = await get(edge.url + "/h", method="HEAD")
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == "1234"
    assert "hit" in r.cache_status and origin.count("/h") == 1


async def test_head_miss_fills_cache_rfc9111_s4(origin_server, make_edge) -> None:
    """A HEAD miss fetches with GET so that the stored response can serve both."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/hm", Canned(headers=[("Cache-Control", "max-age=600")], body=b"full"))
    r = await get(edge.url + "/hm", method="HEAD")
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == "4"
    assert origin.last("/hm").method == "GET"
    r = await get(edge.url + "/hm")
    assert r.body == b"full" and "hit" in r.cache_status and origin.count("/hm") == 1


async def test_range_from_cached_full_response_rfc9110_s14(origin_server, make_edge) -> None:
    """RFC 9110 §14.1.2/§15.3.7/§15.5.17: 206 with Content-Range for satisfiable ranges (also
    suffix and open-ended), 416 with `bytes */N` otherwise."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/r", Canned(headers=[("Cache-Control", "max-age=600")], body=b"0123456789"))
    await get(edge.url + "/r")
    cases = [
        ("bytes=0-1", b"01", "bytes 0-1/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=5-100", b"56789", "bytes 5-9/10"),
    ]
    for rng, body, content_range in cases:
        r = await get(edge.url + "/r", headers={"Range": rng})
        assert r.status == 206 and r.body == body, rng
        assert r.headers["Content-Range"] == content_range
        assert r.headers["Content-Length"] == str(len(body))
    r = await get(edge.url + "/r", headers={"Range": "bytes=10-20"})
    assert r.status == 416 and r.headers["Content-Range"] == "bytes */10"
    r = await get(edge.url + "/r", headers={"Range": "items=0-1"})
    assert r.status == 200 and r.body == b"0123456789"
    assert origin.count("/r") == 1


def multipart_parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a `multipart/byteranges` body: (their fields, their content)."""
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    chunks = body.split(b"\r\n--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        head, content = chunk[2:].split(b"\r\n\r\n", 1)
        fields = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n"))
        parts.append((fields, content))
    return parts


async def test_multiple_ranges_answered_as_multipart_byteranges_rfc9110_s14_6(
    origin_server, make_edge
) -> None:
    """RFC 9110 §14.6: disjoint ranges of a stored response are one 206 of
    `multipart/byteranges`, a part per range with the representation's Content-Type and its
    own Content-Range; overlapping or touching ones are coalesced (each byte sent once)."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/mr",
        Canned(
            headers=[("Cache-Control", "max-age=600"), ("Content-Type", "text/plain")],
            body=b"0123456789",
        ),
    )
    await get(edge.url + "/mr")
    r = await get(edge.url + "/mr", headers={"Range": "bytes=5-6,0-1,-1"})
    assert r.status == 206 and "Content-Range" not in r.headers
    assert r.headers["Content-Length"] == str(len(r.body))
    parts = multipart_parts(r.headers["Content-Type"], r.body)
    assert [(f["Content-Range"], f["Content-Type"], c) for f, c in parts] == [
        ("bytes 0-1/10", "text/plain", b"01"),
        ("bytes 5-6/10", "text/plain", b"56"),
        ("bytes 9-9/10", "text/plain", b"9"),
    ]
    r = await get(edge.url + "/mr", headers={"Range": "bytes=0-3,2-5,6-6"})
    assert (r.status, r.body, r.headers["Content-Range"]) == (206, b"0123456", "bytes 0-6/10")
    r = await get(edge.url + "/mr", headers={"Range": "bytes=0-1,5-6"}, method="HEAD")
    assert r.status == 206 and r.body == b"" and int(r.headers["Content-Length"]) > 4
    r = await get(edge.url + "/mr", headers={"Range": "bytes=0-0,2-2", "If-Range": '"other"'})
    assert r.status == 200 and r.body == b"0123456789"
    assert origin.count("/mr") == 1


async def test_ranges_of_a_stored_body_once_listed_are_451_issue_16(
    origin_server, make_edge
) -> None:
    """A part is cut only from a stored whole body checked at this reuse: once its digest is
    listed, single and multipart range requests get 451 and no byte of it."""
    body = b"a protected whole body, cut into parts " * 4
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/lr", Canned(headers=[("Cache-Control", "max-age=600")], body=body))
    assert (await get(edge.url + "/lr", headers={"Range": "bytes=0-5"})).status == 206
    edge.block(BlockEntry(id="d-r", type=EntryType.SHA256, value=hashlib.sha256(body).hexdigest()))
    for rng in ("bytes=0-5", "bytes=0-1,10-12", "bytes=-4"):
        r = await get(edge.url + "/lr", headers={"Range": rng})
        assert r.status == 451 and body[:6] not in r.body and body[10:13] not in r.body


async def test_a_stored_200_with_content_range_is_cut_with_one_content_range(
    origin_server, make_edge
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/cr",
        Canned(
            headers=[("Cache-Control", "max-age=600"), ("Content-Range", "bytes 0-9/10")],
            body=b"0123456789",
        ),
    )
    await get(edge.url + "/cr")
    r = await get(edge.url + "/cr", headers={"Range": "bytes=2-3"})
    assert r.status == 206 and r.body == b"23"
    assert r.headers.getall("Content-Range") == ["bytes 2-3/10"]


async def test_if_range_rfc9110_s13_1_5(origin_server, make_edge) -> None:
    """RFC 9110 §13.1.5: a matching strong ETag in If-Range allows the 206; otherwise 200."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/ir",
        Canned(headers=[("Cache-Control", "max-age=600"), ("ETag", '"s"')], body=b"abcdef"),
    )
    await get(edge.url + "/ir")
    r = await get(edge.url + "/ir", headers={"Range": "bytes=0-2", "If-Range": '"s"'})
    assert r.status == 206 and r.body == b"abc"
    r = await get(edge.url + "/ir", headers={"Range": "bytes=0-2", "If-Range": '"old"'})
    assert r.status == 200 and r.body == b"abcdef"
    r = await get(edge.url + "/ir", headers={"Range": "bytes=0-2", "If-Range": 'W/"s"'})
    assert r.status == 200


async def test_range_miss_fills_cache_then_206_rfc9110_s14(origin_server, make_edge) -> None:
    """A Range miss fetches the whole representation (stored) and answers 206 from it."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/rm", Canned(headers=[("Cache-Control", "max-age=600")], body=b"0123456789"))
    r = await get(edge.url + "/rm", headers={"Range": "bytes=2-3"})
    assert r.status == 206 and r.body == b"23"
    assert "Range" not in origin.last("/rm").headers
    r = await get(edge.url + "/rm")
    assert r.body == b"0123456789" and "hit" in r.cache_status


async def test_304_without_validators_freshens_the_entry_it_answers_issue_16(
    origin_server, make_edge
) -> None:
    """A 304 carrying no validator, answering the edge's own conditional request (made from
    the entry's ETag or Last-Modified), freshens that entry: one origin request, not two."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    lm = http_date(-3600, clock.now)
    for path, validator in (("/e", ("ETag", '"e1"')), ("/m", ("Last-Modified", lm))):
        origin.on(
            path,
            Canned(headers=[("Cache-Control", "max-age=1"), validator], body=b"stored"),
            Canned(status=304, headers=[("Cache-Control", "max-age=600")]),
        )
        await get(edge.url + path)
        clock.advance(5)
        r = await get(edge.url + path)
        assert r.status == 200 and r.body == b"stored"
        assert "fwd=stale" in r.cache_status and "fwd-status=304" in r.cache_status
        assert origin.count(path) == 2  # the first fetch and one conditional, no retry
        r = await get(edge.url + path)
        assert "hit" in r.cache_status and origin.count(path) == 2  # freshened for 600 s


async def test_304_with_a_different_validator_is_not_merged_issue_16(
    origin_server, make_edge
) -> None:
    """A 304 whose strong validator differs from the stored one never freshens it: the
    response is fetched whole, without validators."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    clock = use_clock(edge, origin)
    origin.on(
        "/d",
        Canned(headers=[("Cache-Control", "max-age=1"), ("ETag", '"a"')], body=b"old"),
        Canned(status=304, headers=[("Cache-Control", "max-age=600"), ("ETag", '"b"')]),
        Canned(headers=[("Cache-Control", "max-age=600"), ("ETag", '"b"')], body=b"new"),
    )
    await get(edge.url + "/d")
    clock.advance(5)
    r = await get(edge.url + "/d")
    assert r.body == b"new" and origin.count("/d") == 3
    assert "If-None-Match" not in origin.last("/d").headers


async def test_200_with_content_range_is_stored_issue_16(origin_server, make_edge) -> None:
    """Content-Range means something only in 206 and 416 (RFC 9110 §14.4): a 200 carrying
    it is a whole response, stored and served like any other."""
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/cr",
        Canned(
            headers=[("Cache-Control", "max-age=600"), ("Content-Range", "bytes 0-4/5")],
            body=b"whole",
        ),
    )
    r = await get(edge.url + "/cr")
    assert r.status == 200 and "stored" in r.cache_status
    r = await get(edge.url + "/cr")
    assert r.body == b"whole" and "hit" in r.cache_status and origin.count("/cr") == 1
