"""Issue 16 (cache-tests `method-POST`): RFC 9110 §9.3.3, a POST response with explicit
freshness and a Content-Location naming the POST's own target is stored as that resource's
representation (after the POST's invalidation of it) and answers later GETs and HEADs; judged
against the blocklist like any stored body. Anything else about a POST is passed through."""

from __future__ import annotations

import hashlib

import pytest

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from tests.integration.helpers_cache import Canned, get, scripted_edge


def answer(cloc: str | None, cc: str = "max-age=600", body: bytes = b"made") -> Canned:
    headers = [("Cache-Control", cc)]
    if cloc is not None:
        headers.append(("Content-Location", cloc))
    return Canned(headers=headers, body=body)


@pytest.mark.parametrize("cloc", ["/p", "p", "http://{authority}/p", "/./p"])
async def test_post_answer_naming_its_target_answers_later_gets(
    origin_server, make_edge, cloc: str
) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    authority = edge.url.removeprefix("http://")
    origin.on(
        "/p",
        lambda r: (
            answer(cloc.format(authority=authority))
            if r.method == "POST"
            else answer(None, body=b"from GET")
        ),
    )
    r = await get(edge.url + "/p", method="POST", data=b"12345")
    assert r.status == 200 and r.body == b"made"
    assert origin.last("/p").body == b"12345"
    r = await get(edge.url + "/p")
    assert r.status == 200 and r.body == b"made" and "hit" in r.cache_status
    r = await get(edge.url + "/p", method="HEAD")
    assert r.status == 200 and "hit" in r.cache_status
    assert origin.count("/p") == 1


@pytest.mark.parametrize(
    ("cloc", "cc"),
    [(None, "max-age=600"), ("/elsewhere", "max-age=600"), ("/p", "no-store"), ("/p", "public")],
    ids=["no-content-location", "another-resource", "no-store", "no-explicit-freshness"],
)
async def test_other_post_answers_are_not_reused(origin_server, make_edge, cloc, cc) -> None:
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/p", lambda r: answer(cloc, cc) if r.method == "POST" else answer(None, body=b"G"))
    assert (await get(edge.url + "/p", method="POST", data=b"x")).body == b"made"
    r = await get(edge.url + "/p")
    assert r.body == b"G" and "hit" not in r.cache_status
    assert origin.count("/p") == 2


async def test_a_listed_post_answer_is_451_and_never_stored(origin_server, make_edge) -> None:
    body = b"a listed body, answered to a POST"
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on("/p", lambda r: answer("/p", body=body))
    edge.block(BlockEntry(id="d-p", type=EntryType.SHA256, value=hashlib.sha256(body).hexdigest()))
    r = await get(edge.url + "/p", method="POST", data=b"x")
    assert r.status == 451 and body not in r.body
    assert edge.pipeline.memory.stats().objects == 0
