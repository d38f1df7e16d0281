"""origin/h1._request_head: the request head the llhttp client writes (issue 18 renders its
fields in one join): the fields in order, and never a head a field could split."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.origin import OriginError
from proxy.origin.h1 import _request_head, render_fields


def test_fields_in_order_after_the_request_line() -> None:
    fields = CIMultiDict([("Host", "o.test"), ("Via", "1.1 edge"), ("via", "x"), ("A", "")])
    head = _request_head("GET", b"/p?q=1", fields, False)
    assert head == b"GET /p?q=1 HTTP/1.1\r\nHost: o.test\r\nVia: 1.1 edge\r\nvia: x\r\nA: \r\n\r\n"


def test_no_fields_and_chunked() -> None:
    assert _request_head("GET", b"", CIMultiDict(), False) == b"GET / HTTP/1.1\r\n\r\n"
    head = _request_head("POST", b"/f", CIMultiDict([("Host", "o")]), True)
    assert head == b"POST /f HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "field",
    [("X", "a\r\nInjected: 1"), ("X", "a\nb"), ("X", "a\rb"), ("X\r\nY", "1"), ("X", "a\x00")],
)
def test_a_field_that_would_split_the_head_is_never_sent(field: tuple[str, str]) -> None:
    with pytest.raises(OriginError, match="CR, LF or NUL"):
        _request_head("GET", b"/", CIMultiDict([("Host", "o"), field]), False)


def test_a_field_outside_latin1_is_never_sent() -> None:
    with pytest.raises(OriginError, match="latin-1"):
        _request_head("GET", b"/", CIMultiDict([("X", "\u2603")]), False)


def test_fields_rendered_beforehand_make_the_same_head() -> None:
    """`fields` (the fetch phase renders a client's repeated fields once) is sent as given:
    the same bytes `_request_head` renders from the multidict."""
    fields = CIMultiDict([("Host", "o.test"), ("Via", "1.1 edge"), ("X-Request-Id", "k-1f")])
    rendered = render_fields(fields)
    assert rendered == b"Host: o.test\r\nVia: 1.1 edge\r\nX-Request-Id: k-1f\r\n"
    for chunked in (False, True):
        assert _request_head("GET", b"/p", fields, chunked, rendered) == _request_head(
            "GET", b"/p", fields, chunked
        )
    assert render_fields(CIMultiDict()) == b""


def test_render_fields_refuses_what_would_split_the_head() -> None:
    with pytest.raises(OriginError, match="CR, LF or NUL"):
        render_fields(CIMultiDict([("X", "a\r\nInjected: 1")]))
    with pytest.raises(OriginError, match="latin-1"):
        render_fields(CIMultiDict([("X", "\u2603")]))
