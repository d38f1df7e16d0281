"""The TLS scenarios of `make bench`: one certificate for every server, handshakes counted by
`openssl s_time`.

    tls-hit     wrk over https (keep-alive): the cost of a hit once the connection is up
    tls-new     full handshakes: a new connection, no session, one 1-byte hit (s_time -new)
    tls-resume  resumed handshakes: each connection offers the first one's session (s_time -reuse)

Every TLS target serves the same ECDSA P-256 leaf for 127.0.0.1, issued by a throwaway CA
(`proxy/node/localca.py`, what `edgeproxy demo --tls` uses), so the servers sign with the same
key type and send the same chain.

Handshakes are driven by `openssl s_time` rather than a Python client: it is C on the same
OpenSSL, so the client's share of the two cores is small and steady; per connection it
handshakes, asks for one cached 1-byte URL (`WWW_PATH`: without reading a response a TLS 1.3
client never sees its session ticket, and `-reuse` would silently do full handshakes) and
closes; and it prints one mark per connection, `r` for a resumed session and `*` for a full
one, so a run proves it measured what it says (`resumed` below). A figure is thus per
connection: one handshake plus one tiny hit (a hit costs ~20-30 µs, a handshake several
hundred). Several s_time processes run side by side (`clients`) so that both server
workers have work; handshakes/s is still bounded by the client, which does about as much
cryptography per full handshake as the server, so the figure to compare is the server's CPU per
handshake.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import Measured
from benchmarks.targets import TlsFiles

# s_time sends "GET <this> HTTP/1.0\r\n\r\n": the path smuggles in a Host field (and a
# dummy field to absorb the trailing version) so both servers answer a cached 1-byte hit rather
# than the edge a 400 for the missing Host.
WWW_PATH = "/bytes/1 HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Bench:"
_MARKS = re.compile(r"^[r* ]+$", re.MULTILINE)  # s_time's per-connection marks
_COUNT = re.compile(r"^(\d+) connections in [\d.]+ real seconds", re.MULTILINE)


def s_time_available() -> bool:
    return shutil.which("openssl") is not None


def certificate(directory: Path) -> TlsFiles:
    """A CA and one leaf for 127.0.0.1 and localhost, written under `directory`."""
    from proxy.node.localca import LocalCA

    ca = LocalCA(directory, name="edgeproxy benchmark CA")
    leaf = ca.issue(["127.0.0.1", "localhost"], stem="bench")
    return TlsFiles(leaf.cert_file, leaf.key_file, ca.ca_file)


@dataclass(frozen=True)
class Handshakes:
    measured: Measured
    resumed: int  # connections whose session was resumed (s_time's `r` marks)


def handshakes(
    port: int, *, resume: bool, duration_s: float, clients: int, ca_file: str
) -> Handshakes:
    """`clients` concurrent `openssl s_time` runs against 127.0.0.1:`port` for `duration_s`."""
    argv = [
        "openssl", "s_time",
        "-connect", f"127.0.0.1:{port}",
        "-reuse" if resume else "-new",
        "-time", str(max(1, round(duration_s))),
        "-CAfile", ca_file,
        # One small request per connection: a TLS 1.3 session can only be resumed once the
        # client has read the server's NewSessionTicket, which comes after the handshake.
        "-www", WWW_PATH,
    ]  # fmt: skip
    started = time.perf_counter()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(clients)
    ]
    connections, resumed, failed = 0, 0, 0
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=duration_s + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        found = _COUNT.search(out)
        if proc.returncode != 0 or found is None:
            failed += 1
            continue
        connections += int(found.group(1))
        resumed += sum(line.count("r") for line in _MARKS.findall(out))
    # Wall time measured here: s_time prints its real time in whole seconds.
    seconds = time.perf_counter() - started
    rate = connections / seconds if seconds else 0.0
    measured = Measured(
        requests=connections,
        duration_s=seconds,
        rps=rate,
        p50_us=0.0,  # s_time reports no latencies
        p90_us=0.0,
        p99_us=0.0,
        max_us=0.0,
        errors=failed,
        unexpected=(connections - resumed) if resume else 0,  # resumption refused
        tool=f"openssl s_time ×{clients}",
    )
    return Handshakes(measured, resumed)
