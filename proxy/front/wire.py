"""Bytes the front writes on its own: status lines and its short plain-text error answers."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from proxy.front.date import current_date_bytes

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def error_response(
    status: int,
    detail: str,
    *,
    server_name: bytes,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    fields: bytes = b"",
) -> bytes:
    """A complete `Connection: close` answer. `detail` is ASCII text the front chose (never
    client bytes echoed raw), so it cannot smuggle header or markup."""
    phrase = reason_phrase(status)
    body = b"%d %s: %s\n" % (status, phrase, detail.encode("ascii", "replace"))
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, phrase),
        b"Date: " + current_date_bytes() + b"\r\n",
        b"Server: " + server_name + b"\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: close\r\n",
    ]
    for name, value in extra_headers:
        parts.append(name + b": " + value + b"\r\n")
    parts.append(fields)
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def with_fields(response: bytes, fields: bytes) -> bytes:
    """A pre-serialised response with `fields` (whole CRLF-ended lines) after its status line."""
    if not fields:
        return response
    i = response.find(b"\r\n") + 2
    return response[:i] + fields + response[i:]
