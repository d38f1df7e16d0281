"""Origin clients behind one seam (`Origin`): llhttp for http origins, aiohttp for https."""

from proxy.origin.errors import IDEMPOTENT, OriginError, OriginFailure
from proxy.origin.pool import OriginPool
from proxy.origin.protocol import Origin, UpstreamResponse

__all__ = ["IDEMPOTENT", "Origin", "OriginError", "OriginFailure", "OriginPool", "UpstreamResponse"]
