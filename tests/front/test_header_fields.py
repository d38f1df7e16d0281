"""Request header fields refused one by one (issue 10): a field over the per-field limit is 431,
a name that a CGI/WSGI origin would alias to a framing or forwarding field is 400; both close
the connection and never reach the handler (so never the origin)."""

from __future__ import annotations

import pytest

from proxy.front.api import FrontRequest, Responder
from tests.front.conftest import StartFront, closed_by_server, ok_handler, read_response
from tests.front.test_limits import assert_refused


def _recording(seen: list[bytes]):  # type: ignore[no-untyped-def]
    def handler(request: FrontRequest, responder: Responder) -> None:
        seen.append(request.raw_target)
        ok_handler(request, responder)

    return handler


@pytest.mark.parametrize(
    "field",
    [
        b"X-Long: " + b"v" * 8200,  # one long value
        b"X-" + b"n" * 8200 + b": v",  # one long name
        b"Cookie: " + b"c" * 8190,  # name + value just over 8 KiB
    ],
)
async def test_field_over_per_field_limit_is_431(start_front: StartFront, field: bytes) -> None:
    seen: list[bytes] = []
    front = await start_front(_recording(seen))
    reader, writer = await front.connect()
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n" + field + b"\r\n\r\n")
    assert_refused(await read_response(reader), 431)
    assert await closed_by_server(reader)
    assert seen == []


async def test_field_at_per_field_limit_passes_and_limit_is_configurable(
    start_front: StartFront,
) -> None:
    front = await start_front()
    at = b"X-A: " + b"v" * (8192 - 3)
    assert (await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + at + b"\r\n\r\n")).status == 200
    small = await start_front(max_header_field_bytes=100)
    field = b"X-A: " + b"v" * 100
    resp = await small.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + field + b"\r\n\r\n")
    assert_refused(resp, 431)


@pytest.mark.parametrize(
    "name",
    [
        b"Transfer_Encoding",
        b"Content_Length",
        b"content_length",
        b"CONTENT_LENGTH",
        b"X_Forwarded_Host",
        b"x-forwarded_proto",
        b"Content_length",
        b"X_Forwarded_For",
        b"X-Forwarded_For",
        b"x_real_ip",
        b"Proxy_Connection",
        b"Keep_Alive",
        b"HTTP2_Settings",
        b"Forwarded",  # control: no underscore, must pass (the edge replaces it upstream)
    ],
)
async def test_names_aliasing_framing_fields_are_400(start_front: StartFront, name: bytes) -> None:
    seen: list[bytes] = []
    front = await start_front(_recording(seen))
    reader, writer = await front.connect()
    writer.write(b"GET /y HTTP/1.1\r\nHost: a\r\n" + name + b": 5\r\n\r\n")
    resp = await read_response(reader)
    if b"_" not in name:
        assert resp.status == 200 and seen == [b"/y"]
        return
    assert_refused(resp, 400)
    assert await closed_by_server(reader)
    assert seen == []


@pytest.mark.parametrize("name", [b"X_Custom", b"Host_", b"_Host", b"my_header"])
async def test_other_underscore_names_pass(start_front: StartFront, name: bytes) -> None:
    front = await start_front()
    resp = await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": 1\r\n\r\n")
    assert resp.status == 200


@pytest.mark.parametrize(
    "name", [b"X A", b"X\x01A", b"X(A)", b"X\"A", b"X@A", b"X\xffA", b"X/A", b"X\x7fA"]
)
async def test_non_token_names_are_400(start_front: StartFront, name: bytes) -> None:
    seen: list[bytes] = []
    front = await start_front(_recording(seen))
    resp = await front.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": 1\r\n\r\n")
    assert_refused(resp, 400)
    assert seen == []
