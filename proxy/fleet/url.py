"""A fleet's Redis URL, checked on its own: `proxy.config` validates `fleet.redis_url` with it at
start, and the feed connects with it (proxy/fleet/feed.py), so this module imports neither."""

from __future__ import annotations

from yarl import URL

SCHEMES = ("redis", "rediss")


def parse_redis_url(url: str) -> URL:
    """Check a `fleet.redis_url`; raises ValueError naming what is wrong."""
    u = URL(url)
    if u.scheme not in SCHEMES:
        raise ValueError(f"redis_url must be redis:// or rediss://, got {url!r}")
    if not u.host:
        raise ValueError(f"redis_url needs a host: {url!r}")
    if u.path not in ("", "/") and not u.path[1:].isdigit():
        raise ValueError(f"redis_url path must be a database number: {url!r}")
    return u
