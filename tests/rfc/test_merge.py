"""RFC 9111 §3.2 / §4.3.4 freshening stored responses with a 304 (cases follow cache-tests
update304)."""

import pytest

from proxy.rfc.merge import head_updates_stored, merge_304, select_for_304

STORED = [
    ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("Content-Type", "text/plain"),
    ("Content-Length", "5"),
    ("Content-Encoding", "gzip"),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "b=2"),
    ("ETag", '"e1"'),
    ("Cache-Control", "max-age=1"),
    ("X-Keep", "yes"),
]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Test-Header", "B"),
        ("Content-Type", "text/plain;charset=utf-8"),
        ("Content-MD5", "N7UdGUp1E+RbVvZSTy1R8g=="),
        ("Content-Location", "/bar"),
        ("Content-Security-Policy", "default-src 'self' cdn.example.com"),
        ("X-Frame-Options", "sameorigin"),
        ("Cache-Control", "max-age=3600"),
        ("Expires", "Mon, 01 Jan 2024 01:00:00 GMT"),
        ("Clear-Site-Data", "cookies"),
        ("Set-Cookie", "a=c"),
    ],
)
def test_304_updates_field_rfc9111_3_2(name: str, value: str) -> None:
    merged = merge_304(STORED, [(name, value)])
    got = [v for n, v in merged if n.lower() == name.lower()]
    assert got == [value]


def test_replaces_all_lines_at_first_position_rfc9111_3_2() -> None:
    merged = merge_304(STORED, [("set-cookie", "z=9")])
    names = [n.lower() for n, _ in merged]
    assert names.count("set-cookie") == 1
    assert names.index("set-cookie") == 4
    assert ("set-cookie", "z=9") in merged


def test_multiple_new_lines_kept_rfc9111_3_2() -> None:
    merged = merge_304(STORED, [("Set-Cookie", "x=1"), ("Set-Cookie", "y=2")])
    assert [v for n, v in merged if n == "Set-Cookie"] == ["x=1", "y=2"]


@pytest.mark.parametrize(
    "name",
    [
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Content-Range",
        "TE",
        "Upgrade",
        "Proxy-Authenticate",
    ],
)
def test_not_updated_rfc9111_3_2(name: str) -> None:
    merged = merge_304(STORED, [(name, "999")])
    assert (name, "999") not in merged


def test_content_length_kept_rfc9111_3_2() -> None:
    merged = merge_304(STORED, [("Content-Length", "0")])
    assert ("Content-Length", "5") in merged


def test_connection_listed_not_updated_rfc9111_3_1() -> None:
    merged = merge_304(STORED, [("Connection", "X-Keep"), ("X-Keep", "no")])
    assert ("X-Keep", "yes") in merged and ("X-Keep", "no") not in merged


def test_drop_argument_rfc9111_5_2_2_7() -> None:
    merged = merge_304(STORED, [("X-User", "u1"), ("X-Other", "o")], drop={"x-user"})
    assert ("X-Other", "o") in merged and all(n != "X-User" for n, _ in merged)


def test_new_fields_appended_in_order_rfc9111_3_2() -> None:
    merged = merge_304(STORED, [("B-New", "1"), ("A-New", "2")])
    assert merged[: len(STORED)] == STORED
    assert merged[len(STORED) :] == [("B-New", "1"), ("A-New", "2")]


def test_omitted_fields_kept_rfc9111_3_2() -> None:
    assert merge_304(STORED, []) == STORED
    assert ("X-Keep", "yes") in merge_304(STORED, [("Date", "x")])


LM = "Mon, 01 Jan 2024 00:00:00 GMT"
LM2 = "Tue, 02 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize(
    ("stored_etag", "stored_lm", "new_etag", "new_lm", "expected"),
    [
        ('"a"', LM, '"a"', None, True),  # strong validator match
        ('"a"', LM, '"b"', None, False),
        ('W/"a"', LM, '"a"', None, False),  # strong needs strong
        (None, LM, '"a"', None, False),
        ('W/"a"', None, 'W/"a"', None, True),  # weak validator
        ('"a"', None, 'W/"a"', None, True),
        ('W/"a"', None, 'W/"b"', None, False),
        (None, LM, None, LM, True),  # Last-Modified
        (None, LM, None, LM2, False),
        ('W/"a"', LM, 'W/"a"', LM2, False),
        (None, None, None, None, True),  # neither has validators
        ('"a"', None, None, None, False),
        (None, LM, None, None, False),
    ],
)
def test_select_for_304_rfc9111_4_3_4(
    stored_etag: str | None,
    stored_lm: str | None,
    new_etag: str | None,
    new_lm: str | None,
    expected: bool,
) -> None:
    assert select_for_304(stored_etag, stored_lm, new_etag, new_lm) is expected


@pytest.mark.parametrize(
    ("stored_etag", "stored_lm", "new_etag", "new_lm", "expected"),
    [
        ('"a"', LM, None, None, True),  # no validator: it answers our own conditional
        (None, LM, None, None, True),
        ('W/"a"', None, None, None, True),
        ('"a"', LM, '"b"', None, False),  # a different strong validator: still refused
        (None, LM, None, LM2, False),  # a different date: refused
        ('W/"a"', None, 'W/"b"', None, False),
    ],
)
def test_select_for_304_answering_our_conditional_request(
    stored_etag: str | None,
    stored_lm: str | None,
    new_etag: str | None,
    new_lm: str | None,
    expected: bool,
) -> None:
    """Issue 16: a 304 with no validators answering the edge's own conditional request
    freshens the entry it validated; a 304 whose validators differ never does."""
    got = select_for_304(stored_etag, stored_lm, new_etag, new_lm, answers_stored=True)
    assert got is expected


# -- RFC 9111 §4.3.5: the 200 answer to a HEAD, against the stored GET response ----------------

HEAD_STORED = [
    ("ETag", '"e1"'),
    ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("Content-Encoding", "gzip"),
    ("Vary", "Accept-Encoding, Accept"),
    ("Cache-Control", "max-age=1"),
]


SAME_CODING = [("Content-Encoding", "gzip"), ("Vary", "Accept, Accept-Encoding")]


@pytest.mark.parametrize(
    "head",
    [
        SAME_CODING,  # no validator received: nothing contradicts the stored response
        [("ETag", '"e1"'), ("Content-Encoding", "gzip"), ("Vary", "accept, accept-encoding")],
        [
            ("Last-Modified", "Monday, 01-Jan-24 00:00:00 GMT"),
            ("Content-Length", "5"),
            *SAME_CODING,
        ],
        [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding,Accept"), ("X-New", "1")],
    ],
)
def test_head_200_that_agrees_updates_rfc9111_4_3_5(head: list[tuple[str, str]]) -> None:
    assert head_updates_stored(HEAD_STORED, 5, head)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ETag", '"e2"'),  # another representation
        ("ETag", 'W/"e1"'),  # weak now: not the same validator
        ("ETag", "<broken"),  # unparseable: in doubt, invalidate
        ("Last-Modified", "Tue, 02 Jan 2024 00:00:00 GMT"),
        ("Last-Modified", "yesterday"),
        ("Content-Length", "6"),  # the stored body is 5 bytes: not this representation
        ("Content-Length", "x"),
        ("Content-Encoding", "br"),  # the stored bytes are gzip
        ("Vary", "Accept-Language"),  # would file the entry under other keys
    ],
)
def test_head_200_that_disagrees_invalidates_rfc9111_4_3_5(field: str, value: str) -> None:
    agreeing = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding, Accept"}
    agreeing[field] = value
    assert not head_updates_stored(HEAD_STORED, 5, list(agreeing.items()))


def test_head_200_without_the_stored_coding_invalidates_rfc9111_4_3_5() -> None:
    """A HEAD response carries the fields a GET's would (RFC 9110 §9.3.2): no Content-Encoding
    means identity, and the stored bytes are gzip."""
    assert not head_updates_stored(HEAD_STORED, 5, [("Vary", "Accept-Encoding, Accept")])
    assert head_updates_stored([("ETag", '"a"')], 3, [("Content-Encoding", "identity")])


def test_head_etag_against_a_stored_response_without_one_invalidates_rfc9111_4_3_5() -> None:
    assert not head_updates_stored([], 3, [("ETag", '"a"')])
    assert not head_updates_stored([], 3, [("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")])
