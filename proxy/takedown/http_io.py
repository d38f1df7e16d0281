"""What every JSON route module of the takedown service shares (api.py, kyc_api.py): the app's
service key, the request's account key, bounded request bodies and JSON answers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.takedown.accounts import Account
from proxy.takedown.service import TakedownService

SERVICE = web.AppKey("takedown_service", TakedownService)
ACCOUNT = web.RequestKey("takedown_account", Account)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, indent=None))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _read_body(request: web.Request) -> bytes:
    limit = request.app[SERVICE].cfg.service.max_notice_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body
