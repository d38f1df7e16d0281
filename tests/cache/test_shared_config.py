"""Issue 13: reaching Redis as its operators configure it. TLS (rediss:// with a CA file, against
a real redis-server listening with TLS only), a password from a file, and the `cache.shared_tier_*`
checks that report a bad option with its field and line."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.cache.shared import SharedTier, redis_options
from proxy.cache.shared_redis import RedisOptions
from proxy.config import CacheConfig, ConfigError, load
from proxy.metrics import WorkerStats
from tests.cache.test_shared import NOW, entry, no_vary
from tests.redis_server import REDIS_BIN, free_port


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """redis-server with TLS only (no plain port) on 127.0.0.1; yields (port, CA file)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test redis CA", ca_key, None, ca_key)
    cert = _cert("127.0.0.1", key, ca, ca_key)
    ca_file = _pem(tmp_path / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    cert_file = _pem(tmp_path / "redis.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_file = _pem(tmp_path / "redis.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_BIN, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", cert_file, "--tls-key-file", key_file, "--tls-ca-cert-file", ca_file,
         "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path),
         "--logfile", str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "redis TLS did not start"
            time.sleep(0.05)
        yield port, ca_file
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_rediss_with_a_ca_file_round_trips(tls_redis: tuple[int, str]) -> None:
    port, ca_file = tls_redis
    stats = WorkerStats([])
    t = SharedTier.from_url(
        f"rediss://127.0.0.1:{port}/0", stats, RedisOptions(tls_ca_file=ca_file),
        timeout_s=2.0, clock=lambda: NOW,
    )  # fmt: skip
    try:
        e = entry("/tls")
        assert t.put(e) and await t.flush()
        got = await t.get(e.primary, no_vary)
        assert got is not None and got.body == e.body
        assert (stats.shared_stores, stats.shared_hits, stats.shared_errors) == (1, 1, 0)
    finally:
        await t.close()


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0"])
async def test_an_unverified_or_plain_connection_is_a_counted_miss(
    tls_redis: tuple[int, str], url: str
) -> None:
    """Without the CA the server's certificate is refused; plain text gets no answer."""
    port, _ = tls_redis
    stats = WorkerStats([])
    t = SharedTier.from_url(url.format(port=port), stats, timeout_s=2.0, clock=lambda: NOW)
    try:
        assert await t.get(entry("/x").primary, no_vary) is None
        assert stats.shared_errors == 1 and stats.shared_misses == 0
    finally:
        await t.close(0.1)


def test_options_come_from_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    cache = CacheConfig(
        shared_tier_url="rediss://127.0.0.1:6380/3",
        shared_tier_username="edge",
        shared_tier_password_file=str(secret),
        shared_tier_tls_ca_file=str(secret),
        shared_tier_connect_timeout_s=0.25,
        shared_tier_max_connections=4,
    )
    opts = redis_options(cache)
    assert (opts.username, opts.password, opts.connect_timeout_s) == ("edge", "hunter2", 0.25)
    t = SharedTier.from_config(cache, WorkerStats([]))
    kw = t.store.kwargs  # type: ignore[attr-defined]
    assert (kw["db"], kw["username"], kw["password"], kw["ssl_ca_certs"]) == (
        3, "edge", "hunter2", str(secret))  # fmt: skip
    assert t.store.connection_class.__name__ == "SSLConnection"  # type: ignore[attr-defined]


CONFIG = """[cache]
shared_tier_url = "{url}"
{line}

[[sites]]
name = "s"
hosts = ["s.test"]
origin = "http://127.0.0.1:9"
"""


@pytest.mark.parametrize(
    ("url", "line", "field", "message"),
    [
        ("redis://r:6379/0", 'shared_tier_tls_ca_file = "{f}"', "shared_tier_tls_ca_file",
         "rediss://"),
        ("rediss://r:6379/0", 'shared_tier_tls_cert_file = "{f}"', "shared_tier_tls_cert_file",
         "needs its key"),
        ("rediss://r:6379/0", 'shared_tier_tls_ca_file = "{f}.missing"', "shared_tier_tls_ca_file",
         "cannot read"),
        ("redis://r:6379/0", 'shared_tier_password_file = "{f}.missing"',
         "shared_tier_password_file", "cannot read"),
        ("redis://r:6379/0", "shared_tier_connect_timeout_s = 0.0",
         "shared_tier_connect_timeout_s", "above 0"),
        ("redis://r:6379/0", "shared_tier_timeout_s = 0", "shared_tier_timeout_s", "above 0"),
        ("redis://r:6379/x", "", "shared_tier_url", "database number"),
    ],
)  # fmt: skip
def test_bad_options_name_their_field_and_line(
    tmp_path: Path, url: str, line: str, field: str, message: str
) -> None:
    existing = tmp_path / "exists.pem"
    existing.write_text("x")
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG.format(url=url, line=line.format(f=existing)))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert e.value.field == f"$.cache.{field}" and message in str(e.value)
    if line:
        assert e.value.line == 3, str(e.value)


def test_the_example_config_documents_every_shared_tier_option() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "config" / "edgeproxy.example.toml").read_text()
    names = [f for f in msgspec.structs.fields(CacheConfig) if f.name.startswith("shared_tier_")]
    assert names and all(f"\n{f.name} = " in text for f in names)
