"""Bytes the front writes on its own (status lines, its short plain-text error answers), and the
shape of a pre-serialised answer (`Wire`) and how it is written."""

from __future__ import annotations

import asyncio
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


# A pre-serialised response: one bytes, or its head and a large body apart, written with one
# `writelines` (writev) so the body is never copied behind its head in user space. Concatenating
# costs about 7 µs per 100 KiB here, more than the extra iovec below about 32 KiB
# (WRITEV_MIN_BYTES; measured with uvloop on a socketpair).
Wire = bytes | tuple[bytes, bytes]
WRITEV_MIN_BYTES = 32 * 1024


def wire(head: bytes, body: bytes) -> Wire:
    """`head` and `body` as one write: joined when small, apart when the body is large."""
    return (head, body) if len(body) >= WRITEV_MIN_BYTES else head + body


def with_fields(response: Wire, fields: bytes) -> Wire:
    """A pre-serialised response with `fields` (whole CRLF-ended lines) after its status line."""
    if not fields:
        return response
    if isinstance(response, tuple):
        return _insert(response[0], fields), response[1]
    return _insert(response, fields)


def _insert(head: bytes, fields: bytes) -> bytes:
    i = head.find(b"\r\n") + 2
    return head[:i] + fields + head[i:]


def write_wire(transport: asyncio.WriteTransport, data: Wire) -> None:
    if isinstance(data, bytes):
        transport.write(data)
    else:
        transport.writelines(data)
