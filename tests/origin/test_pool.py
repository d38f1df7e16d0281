"""origin/pool.OriginPool: each request goes to the client for its scheme, as that client's own
coroutine (issue 18: no coroutine of the pool's in between for http); the aiohttp client for
https starts once, before the first https request, and a start that fails leaves nothing
unawaited behind."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest
from multidict import CIMultiDict
from yarl import URL

from proxy.config import OriginConfig
from proxy.origin import OriginError, OriginFailure, OriginPool


def _recording(pool: OriginPool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def client(name: str) -> Any:
        async def request(origin: URL, *_: Any) -> str:
            calls.append(f"{name} {origin.host}")
            return name

        return request

    async def start() -> None:
        calls.append("tls start")

    monkeypatch.setattr(pool.h1, "request", client("h1"))
    monkeypatch.setattr(pool.tls, "request", client("tls"))
    monkeypatch.setattr(pool.tls, "start", start)
    return calls


async def test_each_scheme_goes_to_its_client_and_tls_starts_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = OriginPool(OriginConfig())
    calls = _recording(pool, monkeypatch)
    fields: CIMultiDict[str] = CIMultiDict()
    assert await pool.request(URL("http://a.test"), "GET", b"/", fields, None) == "h1"
    assert await pool.request(URL("https://b.test"), "GET", b"/", fields, None) == "tls"
    assert await pool.request(URL("https://c.test"), "GET", b"/", fields, None) == "tls"
    assert calls == ["h1 a.test", "tls start", "tls b.test", "tls c.test"]


async def test_a_failed_tls_start_leaves_no_request_unawaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = OriginPool(OriginConfig())
    made: list[Coroutine[Any, Any, str]] = []

    async def never_sent() -> str:
        return "tls"

    def request(*_: Any) -> Coroutine[Any, Any, str]:
        made.append(never_sent())
        return made[-1]

    async def broken() -> None:
        raise OriginError(OriginFailure.CONNECT, "no TLS context")

    monkeypatch.setattr(pool.tls, "request", request)
    monkeypatch.setattr(pool.tls, "start", broken)
    with pytest.raises(OriginError):
        await pool.request(URL("https://b.test"), "GET", b"/", CIMultiDict(), None)
    assert len(made) == 1 and made[0].cr_frame is None  # closed: it would never be awaited
