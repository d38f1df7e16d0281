"""Issue 15: a 451 names its case and links to the takedown service's public notice form when
`[blocklist] notice_form_url` is set (the reference goes into the body and a Link
rel="related"); without it the answer is as before."""

from __future__ import annotations

import aiohttp
import msgspec
import pytest
from aiohttp import web

from proxy.blocklist.model import Entry, EntryType
from proxy.config import ConfigError, validate
from tests.integration.conftest import config

FORM = "https://takedown.example/notice"


def origin_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="content", headers={"Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def _get(url: str) -> tuple[int, dict[str, str], list[str], str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, dict(r.headers), r.headers.getall("Link", []), await r.text()


@pytest.mark.parametrize(
    ("notice", "ref"),
    [("case 12", "case%2012"), ('case 7 <x>&"y"', "case%207%20%3Cx%3E%26%22y%22")],
)
async def test_451_links_the_case_and_the_form(origin_server, make_edge, notice, ref) -> None:
    origin = await origin_server(origin_app())
    edge = await make_edge(origin, blocklist__notice_form_url=FORM)
    edge.block(Entry("case12-t1", EntryType.URL, f"{edge.url}/a", notice, "copyright"))
    status, headers, links, body = await _get(f"{edge.url}/a")
    assert status == 451 and headers["Cache-Control"] == "no-store"
    assert f"About this notice: {FORM}?ref={ref}\n" in body
    assert f"To report content or to contest a removal: {FORM}\n" in body
    assert any(f'<{FORM}?ref={ref}>; rel="related"' in v for v in links), links
    assert any('rel="blocked-by"' in v for v in links)
    assert "<x>" not in "".join(links)  # the reference is percent-encoded in the field


async def test_451_without_a_form_is_unchanged(origin_server, make_edge) -> None:
    origin = await origin_server(origin_app())
    edge = await make_edge(origin)
    edge.block(Entry("e1", EntryType.URL, f"{edge.url}/a", "case 3", "copyright"))
    status, _, links, body = await _get(f"{edge.url}/a")
    assert status == 451
    assert body == "451 Unavailable For Legal Reasons: blocked by entry e1 (notice case 3).\n"
    assert not any("related" in v for v in links)


@pytest.mark.parametrize(
    "bad",
    [
        "takedown.example/notice",
        "https://t.example/n?x=1",
        'https://t.example/"n"',
        "https://t.example/a b",
    ],
)
def test_a_bad_form_url_is_refused_at_load(bad: str) -> None:
    cfg = config("http://127.0.0.1:1")
    cfg = msgspec.structs.replace(
        cfg, blocklist=msgspec.structs.replace(cfg.blocklist, notice_form_url=bad)
    )
    with pytest.raises(ConfigError, match="notice_form_url"):
        validate(cfg)
