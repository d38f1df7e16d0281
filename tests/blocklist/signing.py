"""Signed versions built line by line, for tests that need what `render_version` refuses to
write (an entry that does not validate, a repeated id): the signature holds, the content is
what the test says."""

from __future__ import annotations

import hashlib
import time

import msgspec

from proxy.blocklist.format import FORMAT_TAG, AddLine, Header, signature_line


def signed_lines(private_pem: bytes, lines: list[AddLine], sequence: int = 1) -> bytes:
    """A full version of `lines`, validated by nobody, correctly signed."""
    body = b"".join(msgspec.json.encode(line) + b"\n" for line in lines)
    header = Header(
        format=FORMAT_TAG,
        sequence=sequence,
        base=None,
        created_at=time.time(),
        entries=len(lines),
        sha256=hashlib.sha256(body).hexdigest(),
    )
    data = msgspec.json.encode(header) + b"\n" + body
    return data + signature_line(data, private_pem)
