"""The TLS policy and certificate snapshot (proxy/front/tls.py) on real sockets in-process,
and the config and site rules around them: which certificate a name gets, what a broken one
says, shared ticket keys, HSTS field lines."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import msgspec
import pytest

from proxy.config import Config, ConfigError, Site, TlsConfig, validate
from proxy.front.tls import (
    TICKET_KEY_BYTES,
    CertificateError,
    Certificates,
    CertSpec,
    TlsTerminator,
    share_ticket_keys,
)
from proxy.node.localca import LocalCA
from proxy.rfc.hsts import sts_field
from proxy.sites import SiteTable


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[attr-defined]


async def serve(term: TlsTerminator) -> tuple[asyncio.Server, int]:
    server = await asyncio.get_running_loop().create_server(
        _Answer, "127.0.0.1", 0, ssl=term.context
    )
    return server, server.sockets[0].getsockname()[1]


def handshake(
    port: int, ctx: ssl.SSLContext, name: str | None, session: ssl.SSLSession | None = None
) -> tuple[bytes, bool, ssl.SSLSession | None]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name, session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)  # TLS 1.3 tickets come after the handshake
            cert = s.getpeercert(binary_form=True)
            assert cert is not None
            return cert, s.session_reused, s.session


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "ca")


def der(path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


async def test_exact_then_wildcard_then_default(ca: LocalCA) -> None:
    a, wild, dflt = ca.issue(["a.test"]), ca.issue(["*.w.test"]), ca.issue(["d.test"])
    certs = Certificates.compile(
        [
            CertSpec(("*",), dflt.cert_file, dflt.key_file),
            CertSpec(("a.test", "*.w.test"), a.cert_file, a.key_file),
            CertSpec(("x.w.test",), wild.cert_file, wild.key_file),
        ]
    )
    assert certs.pick("A.test.") is certs.exact["a.test"]
    assert certs.pick("x.w.test") is certs.exact["x.w.test"]
    assert certs.pick("y.w.test") is certs.exact["a.test"]  # the wildcard of the first spec
    assert certs.pick("other.test") is certs.default and certs.pick(None) is certs.default


async def test_unknown_name_without_a_default_certificate_is_refused(ca: LocalCA) -> None:
    a = ca.issue(["a.test"])
    term = TlsTerminator(Certificates.compile([CertSpec(("a.test",), a.cert_file, a.key_file)]))
    server, port = await serve(term)
    ctx = ssl.create_default_context(cafile=ca.ca_file)
    assert (await asyncio.to_thread(handshake, port, ctx, "a.test"))[0] == der(a.cert_file)
    ctx.check_hostname = False
    for name in ("b.test", None):
        with pytest.raises((ssl.SSLError, OSError)):
            await asyncio.to_thread(handshake, port, ctx, name)
    assert term.unrecognized_names == 2
    server.close()


def test_a_broken_certificate_or_a_key_of_another_says_which(ca: LocalCA, tmp_path: Path) -> None:
    a, b = ca.issue(["a.test"]), ca.issue(["b.test"])
    with pytest.raises(CertificateError) as mismatch:
        Certificates.compile([CertSpec(("a.test",), a.cert_file, b.key_file, "$.sites[3].x")])
    assert mismatch.value.field == "$.sites[3].x" and a.cert_file in str(mismatch.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    with pytest.raises(CertificateError):
        Certificates.compile([CertSpec(("a.test",), str(junk), a.key_file)])
    with pytest.raises(CertificateError, match="cannot read"):
        Certificates.compile([CertSpec(("a.test",), str(tmp_path / "none.pem"), a.key_file)])


async def test_workers_given_the_node_ticket_key_resume_each_others_sessions(
    ca: LocalCA,
) -> None:
    a = ca.issue(["a.test"])
    certs = Certificates.compile([CertSpec(("a.test",), a.cert_file, a.key_file)])
    key = os.urandom(TICKET_KEY_BYTES)
    one, two, alone = TlsTerminator(certs), TlsTerminator(certs), TlsTerminator(certs)
    assert share_ticket_keys(one.context, key) and share_ticket_keys(two.context, key)
    servers = [await serve(t) for t in (one, two, alone)]
    ctx = ssl.create_default_context(cafile=ca.ca_file)
    _, _, session = await asyncio.to_thread(handshake, servers[0][1], ctx, "a.test")
    assert (await asyncio.to_thread(handshake, servers[1][1], ctx, "a.test", session))[1]
    _, _, session = await asyncio.to_thread(handshake, servers[0][1], ctx, "a.test")
    assert not (await asyncio.to_thread(handshake, servers[2][1], ctx, "a.test", session))[1]
    for server, _ in servers:
        server.close()


def test_sts_field_rfc6797_6_1() -> None:
    assert sts_field(0) == b""
    assert sts_field(600) == b"Strict-Transport-Security: max-age=600\r\n"
    assert sts_field(1, include_subdomains=True).endswith(b"max-age=1; includeSubDomains\r\n")


def test_tls_fields_by_host_as_sent() -> None:
    cfg = Config(
        sites=[
            Site(name="a", hosts=["a.test"], origin="http://127.0.0.1:1", hsts_max_age_s=60),
            Site(name="b", hosts=["*"], origin="http://127.0.0.1:1"),
        ]
    )
    table = SiteTable(cfg)
    hsts = b"Strict-Transport-Security: max-age=60\r\n"
    assert table.tls_fields(b"A.Test.:8443") == hsts
    assert table.tls_fields(b"a.test") == hsts
    assert table.tls_fields(b"b.test") == b"" and table.tls_fields(None) == b""
    assert table.tls_fields(b"[::1]:443") == b""


def _with_tls(ca: LocalCA, **site: str) -> Config:
    return Config(
        listen_tls="127.0.0.1:8443",
        sites=[Site(name="a", hosts=["a.test"], origin="http://127.0.0.1:1", **site)],  # type: ignore[arg-type]
    )


def test_config_loads_every_certificate_and_names_the_field(ca: LocalCA) -> None:
    a, b = ca.issue(["a.test"]), ca.issue(["b.test"])
    with pytest.raises(ConfigError) as none:
        validate(_with_tls(ca))
    assert none.value.field == "$.listen_tls"
    with pytest.raises(ConfigError) as half:
        validate(_with_tls(ca, tls_cert_file=a.cert_file))
    assert half.value.field == "$.sites[0].tls_cert_file"
    with pytest.raises(ConfigError) as mismatch:
        validate(_with_tls(ca, tls_cert_file=a.cert_file, tls_key_file=b.key_file))
    assert mismatch.value.field == "$.sites[0].tls_cert_file"
    ok = validate(_with_tls(ca, tls_cert_file=a.cert_file, tls_key_file=a.key_file))
    default = msgspec.structs.replace(ok, tls=TlsConfig(cert_file=b.cert_file, key_file=a.key_file))
    with pytest.raises(ConfigError) as bad_default:
        validate(default)
    assert bad_default.value.field == "$.tls.cert_file"
