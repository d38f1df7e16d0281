"""benchmarks/tls.py: the certificate every TLS target serves, and handshakes counted by
`openssl s_time` against a real TLS server on 127.0.0.1 (Python's ssl, TLS 1.3 tickets on), so
the marks it parses are the ones s_time really prints."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import tls
from benchmarks.targets import NginxTarget, TlsFiles


@pytest.fixture(autouse=True)
def _openssl() -> None:
    """Required, not optional: .ci/run installs openssl (and nginx) when they are missing."""
    assert tls.s_time_available(), "these tests need openssl (apt-get install openssl)"


ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    return tls.certificate(tmp_path)


@pytest.fixture
def tls_port(files: TlsFiles) -> Iterator[int]:
    """A TLS server in a thread of its own: reads the request head, answers, closes."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert_file, files.key_file)
    loop = asyncio.new_event_loop()
    ready: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        ready.append(server.sockets[0].getsockname()[1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_the_certificate_verifies_for_127_0_0_1_against_its_ca(
    files: TlsFiles, tls_port: int
) -> None:
    client = ssl.create_default_context(cafile=files.ca_file)
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.0 200")
            assert conn.version() == "TLSv1.3"


def test_full_handshakes_are_counted_and_none_resumed(files: TlsFiles, tls_port: int) -> None:
    done = tls.handshakes(tls_port, resume=False, duration_s=1, clients=1, ca_file=files.ca_file)
    assert done.measured.requests > 0 and done.measured.errors == 0
    assert done.resumed == 0 and done.measured.rps > 0


def test_resumed_handshakes_are_all_resumed_over_tls_1_3(files: TlsFiles, tls_port: int) -> None:
    """`-www` makes s_time read the response, and with it the TLS 1.3 session ticket: without
    it every "resumed" handshake would silently be a full one."""
    done = tls.handshakes(tls_port, resume=True, duration_s=1, clients=2, ca_file=files.ca_file)
    assert done.measured.requests > 0 and done.measured.errors == 0
    assert done.resumed == done.measured.requests and done.measured.unexpected == 0


def test_nginx_listens_for_tls_with_the_edges_policy(files: TlsFiles) -> None:
    target = NginxTarget("nginx", tls=files)
    target.tls_port = 8443
    listen = target._tls_listen()
    assert "listen 127.0.0.1:8443 ssl reuseport;" in listen
    assert f"ssl_certificate {files.cert_file};" in listen
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in listen and "ssl_session_cache shared" in listen
    assert NginxTarget("nginx")._tls_listen() == ""
