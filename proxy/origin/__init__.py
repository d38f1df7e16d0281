"""Origin clients behind one seam (`Origin`): llhttp for http origins, aiohttp for https."""

from proxy.origin.errors import IDEMPOTENT, OriginError, OriginFailure
from proxy.origin.h1 import render_fields
from proxy.origin.pool import OriginPool
from proxy.origin.protocol import Interim, Origin, UpstreamResponse

__all__ = [
    "IDEMPOTENT",
    "Interim",
    "Origin",
    "OriginError",
    "OriginFailure",
    "OriginPool",
    "UpstreamResponse",
    "render_fields",
]
