"""TLS toward clients (issue 16), on a whole node: real sockets, a local CA, two sites with
their own certificates chosen by SNI and a default one, and the origin seeing what the client
connected with."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.node.localca import Issued, LocalCA
from tests.admin.test_metrics import scrape
from tests.front.conftest import Response, read_response
from tests.integration.conftest import free_port
from tests.integration.node import Node

Started = Callable[[web.Application], Awaitable[str]]


def origin_body(path: str) -> bytes:
    """`origin:PATH`; under /large/, 200 KiB of it (a hit the front writes head and body apart)."""
    body = f"origin:{path}".encode()
    return body * (200 * 1024 // len(body) + 1) if path.startswith("/large/") else body


def recording_origin(seen: list[dict[str, str]]) -> web.Application:
    """Answers `path` cacheably and records the forwarding fields of each request it got."""

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.path,
                "proto": request.headers.get("X-Forwarded-Proto", ""),
                "forwarded": request.headers.get("Forwarded", ""),
            }
        )
        return web.Response(
            body=origin_body(request.path), headers={"Cache-Control": "max-age=600"}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


class TlsNode:
    """A node with a TLS listener: sites a.test (HSTS) and b.test, each with its own
    certificate, and a default certificate for any other name."""

    def __init__(
        self, tmp: Path, origin: str, *, watch_files: bool = False, workers: int = 1
    ) -> None:
        self.ca = LocalCA(tmp / "ca")
        self.a = self.ca.issue(["a.test"])
        self.b = self.ca.issue(["b.test"])
        self.default = self.ca.issue(["default.test", "127.0.0.1"])
        self.tls_port = free_port()
        self.config = tmp / "edge.toml"
        self.config.write_text(
            f"""
listen_tls = "127.0.0.1:{self.tls_port}"

[tls]
cert_file = "{self.default.cert_file}"
key_file = "{self.default.key_file}"
watch_files = {str(watch_files).lower()}
poll_interval_s = 0.5

[[sites]]
name = "a"
hosts = ["a.test"]
origin = "{origin}"
tls_cert_file = "{self.a.cert_file}"
tls_key_file = "{self.a.key_file}"
hsts_max_age_s = 31536000

[[sites]]
name = "b"
hosts = ["b.test", "*"]
origin = "{origin}"
tls_cert_file = "{self.b.cert_file}"
tls_key_file = "{self.b.key_file}"
"""
        )
        self.node = Node(["--config", str(self.config), "--workers", str(workers)])

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca.ca_file)


def der(issued: Issued) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(issued.cert_file).read_text())


def handshake(
    port: int,
    server_name: str | None,
    ctx: ssl.SSLContext,
    *,
    session: ssl.SSLSession | None = None,
) -> tuple[bytes, str, str | None, bool, ssl.SSLSession | None]:
    """A blocking handshake and one request (so TLS 1.3 tickets arrive): (the certificate
    served, version, ALPN, session_reused, the session for a later resumption)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as s:
            host = server_name or "b.test"
            s.sendall(f"GET /hs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            s.recv(65536)
            cert = s.getpeercert(binary_form=True)
            assert cert is not None
            return cert, s.version() or "", s.selected_alpn_protocol(), s.session_reused, s.session


async def tls_request(
    port: int, ctx: ssl.SSLContext, sni: str, target: str, host: str | None = None
) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host or sni}\r\n\r\n".encode())
        return await read_response(reader)
    finally:
        writer.close()


async def test_sni_picks_each_sites_certificate_versions_alpn_and_resumption(
    origin_server: Started, nodes: list[Node], tmp_path: Path
) -> None:
    edge = TlsNode(tmp_path, await origin_server(recording_origin([])), workers=2)
    nodes.append(edge.node)
    await edge.node.start()
    port, ctx = edge.tls_port, edge.client_context()

    # SNI picks the site's certificate; a name no site's certificate covers gets the default
    # one, and so does a handshake without SNI (verified against the IP in its SAN).
    assert (await asyncio.to_thread(handshake, port, "a.test", ctx))[0] == der(edge.a)
    assert (await asyncio.to_thread(handshake, port, "b.test", ctx))[0] == der(edge.b)
    lax = edge.client_context()
    lax.check_hostname = False
    assert (await asyncio.to_thread(handshake, port, "c.test", lax))[0] == der(edge.default)
    assert (await asyncio.to_thread(handshake, port, None, lax))[0] == der(edge.default)

    # TLS 1.1 is refused; the same client allowed TLS 1.2 gets in with it.
    old = edge.client_context()
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.1 is deprecated
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        await asyncio.to_thread(handshake, port, "a.test", old)
    except (ssl.SSLError, OSError):
        pass
    else:
        raise AssertionError("a TLS 1.1 handshake succeeded")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    _, version, _, _, _ = await asyncio.to_thread(handshake, port, "a.test", old)
    assert version == "TLSv1.2"

    # ALPN: http/1.1 only, whatever else the client offers.
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, version, alpn, reused, session = await asyncio.to_thread(handshake, port, "a.test", ctx)
    assert (version, alpn, reused) == ("TLSv1.3", "http/1.1", False)

    # Resumption: a TLS 1.3 ticket resumes the next handshake, whichever of the two workers
    # (one ticket key for the node) accepts it.
    for _ in range(6):
        _, _, _, reused, session = await asyncio.to_thread(
            handshake, port, "a.test", ctx, session=session
        )
        assert reused


async def test_hit_over_tls_matches_plain_and_origin_sees_the_real_proto(
    origin_server: Started, nodes: list[Node], tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    edge = TlsNode(tmp_path, await origin_server(recording_origin(seen)))
    nodes.append(edge.node)
    await edge.node.start()
    ctx = edge.client_context()

    # A miss over TLS: the origin is told https, in both fields.
    first = await tls_request(edge.tls_port, ctx, "a.test", "/page")
    assert first.status == 200 and first.body == b"origin:/page"
    assert seen[-1]["proto"] == "https" and "proto=https" in seen[-1]["forwarded"]
    # The same URL over plain HTTP is the same resource: a hit, the same bytes.
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.node.url + "/page", headers={"Host": "a.test"}) as r:
            plain = (r.status, r.headers.get("Cache-Status", ""), await r.read())
    assert plain[0] == 200 and "hit" in plain[1] and plain[2] == first.body
    assert len(seen) == 1
    # ... and back over TLS, with aiohttp this time (SNI given apart from the URL): a hit too.
    async with aiohttp.ClientSession() as s:
        url = f"https://127.0.0.1:{edge.tls_port}/page"
        async with s.get(url, ssl=ctx, server_hostname="a.test", headers={"Host": "a.test"}) as r:
            assert r.status == 200 and await r.read() == first.body
            assert "hit" in r.headers["Cache-Status"]
    assert len(seen) == 1

    # A miss over plain HTTP says http, even when the client's absolute-form target claims
    # https: the edge tells the origin what the client's hop really was.
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.node.url + "/plain", headers={"Host": "a.test"}) as r:
            assert r.status == 200
    assert seen[-1]["proto"] == "http" and "proto=http" in seen[-1]["forwarded"]
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.node.port)
    writer.write(b"GET https://a.test/claimed HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (await read_response(reader)).status == 200
    writer.close()
    assert seen[-1]["path"] == "/claimed" and seen[-1]["proto"] == "http"


@pytest.mark.parametrize("path", ["/h", "/large/h"])
async def test_hsts_on_tls_answers_only_for_the_site_that_asks(
    origin_server: Started, nodes: list[Node], tmp_path: Path, path: str
) -> None:
    edge = TlsNode(tmp_path, await origin_server(recording_origin([])))
    nodes.append(edge.node)
    await edge.node.start()
    ctx = edge.client_context()
    for _ in range(3):  # a miss, then hits (the front's fast answer among them)
        r = await tls_request(edge.tls_port, ctx, "a.test", path)
        assert r.status == 200 and r.body == origin_body(path)
        assert r.header("Strict-Transport-Security") == b"max-age=31536000"
    r = await tls_request(edge.tls_port, ctx, "b.test", path)
    assert r.status == 200 and r.header("Strict-Transport-Security") is None
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.node.url + path, headers={"Host": "a.test"}) as plain:
            assert plain.status == 200 and "Strict-Transport-Security" not in plain.headers
            assert await plain.read() == origin_body(path)
    # The edge's own answers over TLS carry it too (here: 421 for a host no site serves is
    # impossible with "*", so a 404-free refusal: a bad target).
    r = await tls_request(edge.tls_port, ctx, "a.test", "/%00")
    assert r.status == 400 and r.header("Strict-Transport-Security") == b"max-age=31536000"


async def test_listed_http_url_is_451_over_https(
    origin_server: Started, nodes: list[Node], tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []
    edge = TlsNode(tmp_path, await origin_server(recording_origin(seen)))
    nodes.append(edge.node)
    await edge.node.start()
    status, _ = await edge.node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "t-1", "type": "url", "value": "http://a.test/listed"}]},
    )
    assert status == 200
    ctx = edge.client_context()
    for _ in range(2):  # the block phase, then the memo of hot answers
        r = await tls_request(edge.tls_port, ctx, "a.test", "/listed")
        assert r.status == 451 and b"t-1" in r.body
    assert seen == []


async def wait_for_certificate(port: int, ctx: ssl.SSLContext, want: bytes) -> None:
    async with asyncio.timeout(15):
        while (await asyncio.to_thread(handshake, port, "a.test", ctx))[0] != want:
            await asyncio.sleep(0.1)


async def test_sighup_swaps_the_certificate_for_new_handshakes_only_and_refuses_a_broken_one(
    origin_server: Started, nodes: list[Node], tmp_path: Path
) -> None:
    edge = TlsNode(tmp_path, await origin_server(recording_origin([])))
    nodes.append(edge.node)
    await edge.node.start()
    assert edge.node.proc is not None
    ctx = edge.client_context()
    worker = await edge.node.worker_pids()

    # A keep-alive connection made with the first certificate.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", edge.tls_port, ssl=ctx, server_hostname="a.test"
    )
    writer.write(b"GET /k1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (await read_response(reader)).status == 200
    old_cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert old_cert == der(edge.a)

    renewed = edge.ca.issue(["a.test"], stem="a.test-renewed")
    Path(edge.a.cert_file).write_bytes(Path(renewed.cert_file).read_bytes())
    Path(edge.a.key_file).write_bytes(Path(renewed.key_file).read_bytes())
    edge.node.proc.send_signal(signal.SIGHUP)
    await wait_for_certificate(edge.tls_port, ctx, der(renewed))
    # The connection made before is still served, by the same worker (no restart).
    writer.write(b"GET /k2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    r = await read_response(reader)
    assert r.status == 200 and r.body == b"origin:/k2"
    assert await edge.node.worker_pids() == worker

    # A broken certificate is refused, naming it, and the one served stays.
    Path(edge.a.cert_file).write_text("not a certificate\n")
    edge.node.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(15):
        while not (refusals := [line for line in edge.node.output if "reload refused" in line]):
            await asyncio.sleep(0.1)
    assert "sites[0].tls_cert_file" in refusals[0] and edge.a.cert_file in refusals[0]
    assert (await scrape(edge.node)).value("edgeproxy_tls_reload_failures_total") == 1
    assert (await asyncio.to_thread(handshake, edge.tls_port, "a.test", ctx))[0] == der(renewed)
    writer.write(b"GET /k3 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_a_renewed_certificate_file_is_served_without_a_signal(
    origin_server: Started, nodes: list[Node], tmp_path: Path
) -> None:
    edge = TlsNode(tmp_path, await origin_server(recording_origin([])), watch_files=True)
    nodes.append(edge.node)
    await edge.node.start()
    ctx = edge.client_context()
    assert (await asyncio.to_thread(handshake, edge.tls_port, "a.test", ctx))[0] == der(edge.a)
    renewed = edge.ca.issue(["a.test"], stem="a.test-renewed")
    Path(edge.a.key_file).write_bytes(Path(renewed.key_file).read_bytes())
    Path(edge.a.cert_file).write_bytes(Path(renewed.cert_file).read_bytes())
    await wait_for_certificate(edge.tls_port, ctx, der(renewed))
    # A key that is not the certificate's is refused by the watcher too, naming the field.
    Path(edge.a.key_file).write_bytes(Path(edge.b.key_file).read_bytes())
    async with asyncio.timeout(15):
        while not (refused := [line for line in edge.node.output if "TLS reload refused" in line]):
            await asyncio.sleep(0.1)
    assert "sites[0].tls_cert_file" in refused[-1]
    assert (await asyncio.to_thread(handshake, edge.tls_port, "a.test", ctx))[0] == der(renewed)


async def test_serve_flags_alone_serve_tls_and_a_renewal_of_their_files(
    origin_server: Started, nodes: list[Node], tmp_path: Path
) -> None:
    ca = LocalCA(tmp_path / "ca")
    cert = ca.issue(["a.test"])
    port = free_port()
    node = Node(
        [
            "--origin", await origin_server(recording_origin([])),
            "--listen-tls", f"127.0.0.1:{port}",
            "--tls-cert", cert.cert_file,
            "--tls-key", cert.key_file,
            "--workers", "1",
        ]
    )  # fmt: skip
    nodes.append(node)
    await node.start()
    assert any(f"https://127.0.0.1:{port}" in line for line in node.output)
    ctx = ssl.create_default_context(cafile=ca.ca_file)
    r = await tls_request(port, ctx, "a.test", "/f")
    assert r.status == 200 and r.body == b"origin:/f"
    renewed = ca.issue(["a.test"], stem="renewed")
    Path(cert.cert_file).write_bytes(Path(renewed.cert_file).read_bytes())
    Path(cert.key_file).write_bytes(Path(renewed.key_file).read_bytes())
    assert node.proc is not None
    # No config file: SIGHUP re-reads the flags' files (as the file watcher may already have).
    node.proc.send_signal(signal.SIGHUP)
    await wait_for_certificate(port, ctx, der(renewed))
