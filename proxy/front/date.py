"""The `Date` header value (RFC 9110 §6.6.1), formatted at most once per second.

The pipeline reuses it when it pre-serialises responses; the front uses it in its own errors.
"""

from __future__ import annotations

import time
from email.utils import formatdate

_second = -1
_value = b""


def current_date_bytes() -> bytes:
    """IMF-fixdate of the current second, e.g. b"Sun, 06 Nov 1994 08:49:37 GMT"."""
    global _second, _value
    now = time.time()
    second = int(now)
    if second != _second:
        _value = formatdate(second, usegmt=True).encode("ascii")
        _second = second
    return _value
