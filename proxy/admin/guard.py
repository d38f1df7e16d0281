"""The admin API's guard and request helpers, shared by every admin route module (app.py's own
routes and the go-live gate's, proxy/admin/gate.py): the per-request checks the module
docstring of proxy/admin/app.py describes (Host, Origin, JSON, declared size), the bearer-token
check, bounded body reading and JSON answers.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from proxy.admin.view import NodeView
from proxy.config import AdminConfig, parse_hostport

NODE = web.AppKey("node", NodeView)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


class Refusal(Exception):
    """A request the admin refuses while handling it (a bad or late body): the guard turns it
    into a JSON error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _node(request: web.Request) -> NodeView:
    return request.app[NODE]


def default_host_names(listen: str) -> list[str]:
    host, _ = parse_hostport(listen, what="admin.listen")
    names = [host, "localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(n.lower() for n in names))


def split_authority(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a Host header or an origin's authority: lowercased, brackets and a
    trailing dot removed; None when it does not parse (then nothing matches it)."""
    value = value.strip().lower()
    port: str | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    else:
        host, sep, tail = value.rpartition(":")
        if not sep:
            host = tail
        elif ":" in host:
            return None  # an unbracketed IPv6 literal
        else:
            port = tail
    if port is not None and not (port.isdigit() and len(port) <= 5):
        return None
    host = host.rstrip(".")
    if not host:
        return None
    return host, int(port) if port is not None else None


class AdminGuard:
    """The per-request checks every admin endpoint shares (see the module docstring)."""

    def __init__(self, cfg: AdminConfig) -> None:
        names = cfg.host_names or default_host_names(cfg.listen)
        self.host_names = frozenset(n.lower().strip("[]").rstrip(".") for n in names)
        host, self.port = parse_hostport(cfg.listen, what="admin.listen")
        # Bound to every address (with a token: start_admin insists), the admin is reached by
        # whichever address the caller uses. An IP literal cannot be rebound (the page's origin
        # is that address itself), so by default any is accepted there; names still must be
        # listed.
        self.any_ip = not cfg.host_names and host in ("0.0.0.0", "::")
        self.max_body_bytes = cfg.max_body_bytes
        self.body_timeout_s = cfg.body_timeout_s

    def host_ok(self, host: str) -> bool:
        found = split_authority(host)
        return found is not None and self._name_ok(found[0])

    def _name_ok(self, name: str) -> bool:
        if name in self.host_names:
            return True
        if not self.any_ip:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def origin_ok(self, origin: str) -> bool:
        """An origin of this admin (RFC 6454): http, an accepted host name, the admin's port.
        `null` (sandboxed frames, file: pages) is no origin of ours."""
        scheme, sep, authority = origin.strip().lower().partition("://")
        if not sep or scheme != "http" or "/" in authority:
            return False
        found = split_authority(authority)
        if found is None:
            return False
        host, port = found
        return self._name_ok(host) and (80 if port is None else port) == self.port

    def check(self, request: web.Request) -> web.Response | None:
        hosts = request.headers.getall("Host", [])
        if len(hosts) != 1 or not self.host_ok(hosts[0]):
            return _error(421, "this admin API does not answer to that Host")
        origins = request.headers.getall("Origin", [])
        if origins and (len(origins) != 1 or not self.origin_ok(origins[0])):
            return _error(403, "cross-origin requests are refused")
        # Every mutation that carries a body (POST always does here) must say it is JSON.
        needs_json = request.method in MUTATIONS and (
            request.method != "DELETE" or _has_body(request)
        )
        if needs_json and request.content_type != "application/json":
            return _error(415, "send the body as application/json")
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            return _error(413, f"body of {declared} bytes exceeds {self.max_body_bytes}")
        return None


GUARD = web.AppKey("guard", AdminGuard)


def _has_body(request: web.Request) -> bool:
    return (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = request.app[GUARD].check(request)
    if refused is not None:
        return refused
    try:
        return await handler(request)
    except Refusal as e:
        # The rest of a refused body is not read: close rather than parse it as a request.
        return _error(e.status, e.message, {"Connection": "close"})


def authenticated(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        token = _node(request).admin_token
        if not token:
            return _error(
                403, "no admin token configured (--admin-token-file or EDGEPROXY_ADMIN_TOKEN)"
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            # RFC 6750 §3: the scheme to use, and invalid_token when one was given.
            challenge = 'Bearer realm="edgeproxy-admin"'
            if given:
                challenge += ', error="invalid_token"'
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": challenge})
        return await handler(request)

    return wrapped


async def _read_body(request: web.Request) -> bytes:
    """The whole body, bounded in size (413) and in total time (408), whatever the framing."""
    g = request.app[GUARD]
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(g.body_timeout_s):
            while chunk := await request.content.read(65536):
                size += len(chunk)
                if size > g.max_body_bytes:
                    raise Refusal(413, f"body exceeds {g.max_body_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal(408, f"body not received within {g.body_timeout_s} s") from None
    return b"".join(chunks)


async def _body(request: web.Request, shape: type[T]) -> T:
    raw = await _read_body(request)
    try:
        return msgspec.json.decode(raw, type=shape)
    except msgspec.ValidationError as e:
        raise Refusal(400, f"invalid request: {e}") from e
    except msgspec.DecodeError as e:
        raise Refusal(400, f"invalid JSON: {e}") from e
