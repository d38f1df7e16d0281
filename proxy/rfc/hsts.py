"""HTTP Strict Transport Security (RFC 6797): the response field an edge adds for a site."""

from __future__ import annotations


def sts_field(max_age_s: int, *, include_subdomains: bool = False) -> bytes:
    """The whole `Strict-Transport-Security` field line (RFC 6797 §6.1), or b"" for
    max_age_s 0: a site that never asked for HSTS gets no field at all (sending `max-age=0`
    would actively clear a policy the origin may set itself, §6.1.1)."""
    if max_age_s <= 0:
        return b""
    value = b"max-age=%d" % max_age_s
    if include_subdomains:
        value += b"; includeSubDomains"
    return b"Strict-Transport-Security: " + value + b"\r\n"
