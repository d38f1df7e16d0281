"""Request ids: one per request, in every answer (also the front's own refusals), sent to the
origin, and in the access log, so one client complaint, one access-log line and one origin log
line can be matched up (`[log] request_id_header`, X-Request-Id by default; "" turns it off).

An id is this process's random prefix and a counter (`k3vq7a2m-1f`): unique across workers and
restarts without a clock read or an os.urandom call per request. The front makes it when a head
is complete, as the whole field line the answers carry, so a hit pays one small bytes format
(about 0.2 µs, measured with `python -m benchmarks.hitpath`) and no per-answer splicing.

A client's own id is kept only from the networks `[log] request_id_trusted_from` names (a load
balancer in front that already assigned one) and only when well formed (1-128 of
`A-Z a-z 0-9 . _ : + / = @ -`, which covers UUIDs, ULIDs and base64); from anyone else, or
malformed, it is replaced, so a client cannot plant text in the operator's logs or the
origin's.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Iterable

_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 field-name


class RequestIds:
    """The id field lines of one process. `next_field()` is the hot-path call."""

    __slots__ = ("name", "lname", "prefix", "_n", "_networks")

    def __init__(self, header: str, trusted_from: Iterable[str] = ()) -> None:
        if not _TOKEN.fullmatch(header):
            raise ValueError(f"request id header {header!r} is not a field name")
        self.name = header.encode("ascii")
        self.lname = self.name.lower()
        tag = base64.b32encode(os.urandom(5)).decode("ascii").lower()
        self.prefix = self.name + b": " + tag.encode("ascii") + b"-"
        self._n = 0
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_from)

    def next_field(self) -> bytes:
        """A new id as a whole field line: `X-Request-Id: k3vq7a2m-1f\\r\\n`."""
        self._n += 1
        return self.prefix + b"%x\r\n" % self._n

    def field_for(self, given: bytes | None) -> bytes:
        """The client's id when it is well formed (the caller checked the source), else new."""
        if given is not None and _WELL_FORMED.fullmatch(given):
            return self.name + b": " + given + b"\r\n"
        return self.next_field()

    def trusts(self, client_ip: str) -> bool:
        """Whether ids sent from `client_ip` are kept (asked once per connection)."""
        if not self._networks or not client_ip:
            return False
        try:
            addr = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
        return any(addr in net for net in self._networks)

    def value(self, field: bytes) -> str:
        """The id in a field line `next_field` or `field_for` made ("" for none)."""
        if not field:
            return ""
        return field[len(self.name) + 2 : -2].decode("ascii", "replace")


def check_networks(networks: Iterable[str]) -> None:
    """Raises ValueError naming a `request_id_trusted_from` entry that is not an IP network."""
    for n in networks:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError as e:
            raise ValueError(f"{n!r} is not an IP address or network: {e}") from None
