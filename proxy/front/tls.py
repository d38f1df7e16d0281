"""TLS toward clients: the policy every handshake gets, and certificates chosen by SNI.

One listening `ssl.SSLContext` per worker (`TlsTerminator.context`) carries no certificate of
its own: its `sni_callback` switches each handshake to the context of the certificate that
serves the name the client asked for, read from an immutable `Certificates` snapshot. A reload
compiles a new snapshot aside (which raises on a broken certificate or key: the old one stays)
and swaps it in one assignment, so handshakes from then on get the new certificate while open
connections keep the one they were made with. The listening context is never replaced, and it
is the one whose keys encrypt session tickets (OpenSSL's `session_ctx`), so a ticket issued
before a reload still resumes after it.

Which certificate a name gets: a site's own (`tls_cert_file`) for the site's exact host names,
then for its `*.suffix` names; otherwise the default certificate (`[tls] cert_file`, or that of
a site listed with host `*`). A name nothing matches, or a handshake without SNI, gets the
default certificate when there is one (as nginx's default server does), else the handshake
ends with the `unrecognized_name` alert.

Policy (Mozilla "intermediate", 5.7): TLS 1.2 and 1.3 only; for 1.2, ECDHE with AES-GCM or
ChaCha20-Poly1305 (the DHE suites are left out: they need DH parameters Python cannot generate
for us); for 1.3, OpenSSL's defaults (the same three suites); no compression, no
renegotiation; ALPN offers `http/1.1` only. Session resumption: TLS 1.3 tickets (two per full
handshake) and TLS 1.2 tickets and session IDs, Python's defaults. Every worker of a node
accepts on the same socket, so a ticket one worker issued must open on the others: the
supervisor hands all of them one ticket key (`share_ticket_keys`), set below Python's API,
since `ssl` has none for it. Session IDs stay per worker (a TLS 1.2 client without ticket
support resumes only when it lands on the same worker again).

OCSP stapling is not done: Python's `ssl` has no server-side API for it (no
`SSL_CTX_set_tlsext_status_cb`), so clients that want revocation status ask the CA themselves.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import platform
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Mozilla intermediate (https://ssl-config.mozilla.org/, guideline 5.7) without the DHE suites.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
ALPN = ["http/1.1"]
TICKET_KEY_BYTES = 80  # OpenSSL: 16 name, 32 HMAC secret, 32 AES key

log = logging.getLogger("edgeproxy.front.tls")


class CertificateError(Exception):
    """A certificate or key that cannot serve: unreadable, not PEM, or not a matching pair.
    `field` names where it was configured (a CertSpec's label)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class CertSpec:
    """One certificate and the host names it serves (`*` for the default, `*.x` wildcards)."""

    names: tuple[str, ...]
    cert_file: str
    key_file: str
    label: str = ""  # for errors: the config field it came from, e.g. $.sites[0].tls_cert_file


def _policy(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(ALPN)
    return ctx


def server_context(cert_file: str, key_file: str, *, label: str = "") -> ssl.SSLContext:
    """A context serving one certificate chain under the policy; raises CertificateError."""
    ctx = _policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as e:
        raise CertificateError(f"cannot read {e.filename or cert_file!r}", label) from e
    except OSError as e:  # ssl.SSLError is one: not PEM, or the key does not match
        reason = getattr(e, "reason", None) or e.strerror or str(e)
        raise CertificateError(
            f"certificate {cert_file!r} with key {key_file!r} refused: {reason}", label
        ) from e
    return ctx


def _fingerprint(specs: Iterable[CertSpec]) -> str:
    """What the files hold now: a reload that finds the same bytes changes nothing."""
    h = hashlib.sha256()
    for spec in specs:
        for path in (spec.cert_file, spec.key_file):
            h.update(path.encode() + b"\0")
            try:
                h.update(Path(path).read_bytes())
            except OSError:
                h.update(b"\1unreadable")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Certificates:
    """An immutable snapshot: host name → context. Built by `compile`, never mutated."""

    exact: dict[str, ssl.SSLContext]
    wildcards: tuple[tuple[str, ssl.SSLContext], ...]  # (".example.com", ctx), longest first
    default: ssl.SSLContext | None
    fingerprint: str = ""
    files: tuple[str, ...] = field(default=())

    @classmethod
    def compile(cls, specs: Iterable[CertSpec]) -> Certificates:
        """Load every certificate; raises CertificateError naming the first that fails."""
        specs = list(specs)
        exact: dict[str, ssl.SSLContext] = {}
        wildcards: list[tuple[str, ssl.SSLContext]] = []
        default: ssl.SSLContext | None = None
        loaded: dict[tuple[str, str], ssl.SSLContext] = {}
        for spec in specs:
            pair = (spec.cert_file, spec.key_file)
            ctx = loaded.get(pair)
            if ctx is None:
                ctx = loaded[pair] = server_context(*pair, label=spec.label)
            for name in spec.names:
                name = name.lower().rstrip(".")
                if name == "*":
                    default = default or ctx
                elif name.startswith("*."):
                    wildcards.append((name[1:], ctx))
                else:
                    exact.setdefault(name, ctx)
        wildcards.sort(key=lambda w: -len(w[0]))
        files = tuple(sorted({p for s in specs for p in (s.cert_file, s.key_file)}))
        return cls(exact, tuple(wildcards), default, _fingerprint(specs), files)

    def pick(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a ClientHello's SNI (None: the client sent none)."""
        if server_name:
            name = server_name.lower().rstrip(".")
            ctx = self.exact.get(name)
            if ctx is not None:
                return ctx
            for suffix, wild in self.wildcards:
                if name.endswith(suffix):
                    return wild
        return self.default


class TlsTerminator:
    """The listening context of one worker and the certificate snapshot it switches to."""

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self.unrecognized_names = 0  # handshakes refused: no certificate for the name
        ctx = _policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        ctx.sni_callback = self._on_server_name
        self.context = ctx

    def _on_server_name(
        self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        # OpenSSL calls this for every ClientHello, with None when there is no SNI.
        chosen = self.certificates.pick(server_name)
        if chosen is None:
            self.unrecognized_names += 1
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = chosen
        return None

    def swap(self, certificates: Certificates) -> None:
        """New handshakes get `certificates`; open connections keep what they have."""
        self.certificates = certificates


_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59  # openssl/ssl.h


def share_ticket_keys(ctx: ssl.SSLContext, key: bytes) -> bool:
    """Make `ctx` encrypt and open session tickets with `key` (TICKET_KEY_BYTES), as every
    other worker given the same key does. Python's `ssl` has no API for this, so it calls
    OpenSSL's `SSL_CTX_ctrl` on the `SSL_CTX *` that CPython keeps first in an SSLContext
    (true of every CPython from 3.7 to 3.13, with `_ssl` linked to a shared libssl). False when
    that is not available: each worker then keeps its own random key, and a client resumes
    only when it comes back to the worker that issued its ticket."""
    if len(key) != TICKET_KEY_BYTES:
        raise ValueError(f"a ticket key is {TICKET_KEY_BYTES} bytes")
    if platform.python_implementation() != "CPython":
        return False
    try:
        import _ssl

        ctrl = ctypes.CDLL(_ssl.__file__).SSL_CTX_ctrl
    except (ImportError, OSError, AttributeError) as e:
        log.warning("TLS session tickets stay per worker: %s", e)
        return False
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    buf = ctypes.create_string_buffer(key, TICKET_KEY_BYTES)
    return bool(ssl_ctx) and ctrl(ssl_ctx, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(key), buf) == 1


__all__ = [
    "ALPN",
    "INTERMEDIATE_CIPHERS",
    "CertSpec",
    "CertificateError",
    "Certificates",
    "TICKET_KEY_BYTES",
    "TlsTerminator",
    "server_context",
    "share_ticket_keys",
]
