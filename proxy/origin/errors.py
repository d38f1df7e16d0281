"""What can go wrong talking to an origin, as the client sees it: 502 when the origin cannot be
reached or breaks the exchange, 504 when it is too slow."""

from __future__ import annotations

from enum import StrEnum

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class OriginFailure(StrEnum):
    CONNECT = "connect"
    TIMEOUT = "timeout"
    RESET = "reset"
    PROTOCOL = "protocol"


class OriginError(Exception):
    def __init__(self, kind: OriginFailure, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def status(self) -> int:
        return 504 if self.kind is OriginFailure.TIMEOUT else 502
