"""Issue 9: every Cache-Status member and Via this edge writes carries the configured
`via_name`, whichever path answered (miss, hit, pass-through, 451, origin error, refusal)."""

from __future__ import annotations

import re

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from tests.integration.conftest import free_port, raw_request
from tests.integration.helpers_cache import Canned, get, scripted_edge


async def test_every_answer_names_the_configured_cache(origin_server, make_edge) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge, via_name="edge-tokyo-1")
    origin.on("/c", Canned(headers=[("Cache-Control", "max-age=60")]))
    origin.on("/p", Canned(headers=[("Cache-Control", "no-store")]))
    edge.block(BlockEntry(id="b-1", type=EntryType.PREFIX, value="http://127.0.0.1/blocked/"))
    answers = {
        "miss": await get(edge.url + "/c"),
        "hit": await get(edge.url + "/c"),
        "pass": await get(edge.url + "/p"),
        "post": await get(edge.url + "/p", method="POST", data=b"x"),
        "451": await get(edge.url + "/blocked/x"),
    }
    for what, r in answers.items():
        members = [m.strip() for m in r.cache_status.split(",")]
        assert members[-1].startswith("edge-tokyo-1;"), (what, r.cache_status)
        assert "edgeproxy" not in r.cache_status, what
    assert re.fullmatch(
        r"edge-tokyo-1; fwd=miss; fwd-status=200; stored; ttl=(59|60)", answers["miss"].cache_status
    )
    assert answers["pass"].cache_status.startswith("edge-tokyo-1; fwd=miss; fwd-status=200")
    assert answers["pass"].headers["Via"].endswith("1.1 edge-tokyo-1")
    assert origin.last("/p").headers["Via"].endswith("1.1 edge-tokyo-1")
    raw = await raw_request(edge.server.port, b"GET /c HTTP/1.1\r\n\r\n")  # no Host: refused
    assert raw.startswith(b"HTTP/1.1 400") and b"Cache-Status: edge-tokyo-1; detail=" in raw


async def test_origin_errors_name_the_configured_cache(origin_server, make_edge) -> None:
    edge = await make_edge(f"http://127.0.0.1:{free_port()}", via_name="edge-osaka")
    r = await get(edge.url + "/down")
    assert r.status == 502
    assert r.cache_status == "edge-osaka; fwd=miss; detail=origin-connect"
