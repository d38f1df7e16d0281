"""Connection-specific fields, RFC 9110 §7.6.1 (and RFC 9112 for the legacy ones)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HOP_BY_HOP", "HOP_BY_HOP_BYTES", "strip_hop_by_hop"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "trailer",
        "http2-settings",
    }
)
"""Fields that describe one connection and are never forwarded nor stored.

`HTTP2-Settings` belongs to an h2c upgrade of one connection (RFC 9113 §3.1; RFC 7540 §3.2.1
required it be named in Connection, and an origin may honour it even when it is not).
`Proxy-Authorization` is credentials for the proxy the client talks to (RFC 9110 §11.7.2): the
edge is the last proxy before the origin, so it is consumed here and never leaked upstream;
`Proxy-Authenticate` is its response counterpart, meaningless past this hop.
"""

HOP_BY_HOP_BYTES = frozenset(n.encode("ascii") for n in HOP_BY_HOP)


def strip_hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop HOP_BY_HOP fields and every field a Connection line names (§7.6.1).

    One pass over the headers; a second, over the survivors, only when a Connection header
    named something beyond the static set (rare). Names compare case-insensitively.
    """
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    static = HOP_BY_HOP_BYTES
    for item in headers:
        name = item[0].lower()
        if name in static:
            if name == b"connection":
                for token in item[1].split(b","):
                    t = token.strip(b" \t").lower()
                    if t and t not in static:
                        if listed is None:
                            listed = set()
                        listed.add(t)
            continue
        out.append(item)
    if listed is None:
        return out
    return [item for item in out if item[0].lower() not in listed]
