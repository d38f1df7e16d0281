"""The servers under test, each started on a free 127.0.0.1 port and stopped by PID.

`EdgeTarget` is the edge node; `NginxTarget`, `VarnishTarget` and `TrafficServerTarget` are the
caches users would otherwise run, configured from the templates beside this file as caching
reverse proxies of the same bundled origin. A target not installed is skipped, never faked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks import cpu

TEMPLATES = Path(__file__).parent
REPO = TEMPLATES.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(template: str, **values: object) -> str:
    text = (TEMPLATES / template).read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", str(value))
    return text


@dataclass(frozen=True)
class TlsFiles:
    """The certificate chain and key (PEM) every TLS target serves, and the CA that signed it."""

    cert_file: str
    key_file: str
    ca_file: str


def http_status(
    url: str,
    timeout_s: float = 2.0,
    headers: dict[str, str] | None = None,
    ca_file: str | None = None,
) -> int:
    """Status of one GET on a fresh connection; 0 when nothing answered. An https `url` is
    verified against `ca_file`."""
    request = urllib.request.Request(url, headers=headers or {})
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return 0


class Target:
    """A server process tree; `name` labels it in the report."""

    kind = "base"
    needs: tuple[str, ...] = ()
    in_workdir = False  # run the server with its workdir as the current directory
    # An access log line per request (`--access-logs`): the edge and nginx write one to a file
    # in their workdir; Varnish's is a process of its own (varnishncsa) and Traffic Server's
    # needs a logging.yaml, so theirs stay off (the report says so).
    access_logs = False
    start_timeout_s = 60.0  # an edge loading a big signed list at start-up needs longer

    def __init__(self, name: str, *, tls: TlsFiles | None = None, cache_bytes: int = 0) -> None:
        self.name = name
        self.cache_bytes = cache_bytes  # the shared cache's size; 0: the template's default
        self.port = 0
        self.tls = tls  # also listen for HTTPS on tls_port, with this certificate
        self.tls_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path()
        self.notes: list[str] = []

    @classmethod
    def available(cls) -> bool:
        return all(shutil.which(binary) for binary in cls.needs)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def start(self, workdir: Path, origin_port: int, workers: int, *, port: int = 0) -> None:
        """Start on `port` (a restart keeps its clients' address), else on a free one."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if self.tls is not None else 0
        argv, env = self.command(origin_port, workers)
        log = open(workdir / "server.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=workdir if self.in_workdir else None,
        )
        log.close()
        self.wait_ready(timeout_s=self.start_timeout_s)

    def command(self, origin_port: int, workers: int) -> tuple[list[str], dict[str, str]]:
        """argv and environment of the server; each subclass knows its own."""
        raise TypeError(f"{type(self).__name__} does not say how to start")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.workdir}/server.log")
            if self.is_ready() and self.tls_ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout_s:.0f} s; see {self.workdir}")

    def is_ready(self) -> bool:
        return http_status(self.base_url + "/bytes/1", timeout_s=0.5) == 200

    def tls_ready(self) -> bool:
        """The HTTPS listener answers with the certificate (verified against its CA)."""
        if self.tls is None:
            return True
        url = self.tls_url + "/bytes/1"
        return http_status(url, timeout_s=0.5, ca_file=self.tls.ca_file) == 200

    def stop(self) -> None:
        """SIGTERM the root, then SIGKILL whatever of its tree is left after a grace period."""
        if self.proc is None:
            return
        members = [s.pid for s in cpu.tree([self.proc.pid])]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                pass
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5.0)
        self.proc = None


class EdgeTarget(Target):
    kind = "edgeproxy"
    # --[no-]edge-node-tier-preallocate: `serve --[no-]node-tier-preallocate`; None: the default
    node_tier_preallocate: bool | None = None
    admin_token = "bench-admin-token"

    def __init__(
        self,
        name: str = "edgeproxy",
        *,
        blocklist_dir: Path | None = None,
        blocklist_key: Path | None = None,
        extra_args: list[str] | None = None,
        tls: TlsFiles | None = None,
        cache_bytes: int = 0,
    ) -> None:
        super().__init__(name, tls=tls, cache_bytes=cache_bytes)
        self.admin_port = 0
        self.blocklist_dir = blocklist_dir
        self.blocklist_key = blocklist_key
        self.extra_args = extra_args or []

    @staticmethod
    def executable() -> Path:
        return Path(sys.executable).parent / "edgeproxy"

    @classmethod
    def available(cls) -> bool:
        exe = cls.executable()
        if not exe.exists():
            return False
        probe = subprocess.run(
            [str(exe), "serve", "--help"], capture_output=True, timeout=30, check=False
        )
        return probe.returncode == 0

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self, origin_port: int, workers: int) -> tuple[list[str], dict[str, str]]:
        self.admin_port = free_port()
        token_file = self.workdir / "admin-token"
        token_file.write_text(self.admin_token + "\n")
        token_file.chmod(0o600)
        argv = [
            str(self.executable()),
            "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--origin", f"http://127.0.0.1:{origin_port}",
            "--admin", f"127.0.0.1:{self.admin_port}",
            "--workers", str(workers),
            "--state-dir", str(self.workdir / "state"),  # pushed entries stay with this run
            "--admin-token-file", str(token_file),
        ]  # fmt: skip
        if self.blocklist_dir is not None and self.blocklist_key is not None:
            argv += ["--blocklist-dir", str(self.blocklist_dir)]
            argv += ["--blocklist-key", str(self.blocklist_key)]
        if self.tls is not None:
            argv += ["--listen-tls", f"127.0.0.1:{self.tls_port}"]
            argv += ["--tls-cert", self.tls.cert_file, "--tls-key", self.tls.key_file]
        if self.cache_bytes:
            argv += ["--node-tier-bytes", str(self.cache_bytes)]
        if self.node_tier_preallocate is not None:
            argv += [
                "--node-tier-preallocate"
                if self.node_tier_preallocate
                else "--no-node-tier-preallocate"
            ]
        if Target.access_logs:
            argv += ["--access-log", str(self.workdir / "access.log")]
        argv += self.extra_args
        env = dict(os.environ, EDGEPROXY_ADMIN_TOKEN=self.admin_token)
        return argv, env

    def is_ready(self) -> bool:
        return http_status(self.admin_url + "/healthz", timeout_s=0.5) == 200


class NginxTarget(Target):
    kind = "nginx"
    needs = ("nginx",)

    def command(self, origin_port: int, workers: int) -> tuple[list[str], dict[str, str]]:
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            render(
                "nginx.conf.tmpl",
                dir=self.workdir,
                port=self.port,
                origin_port=origin_port,
                workers=workers,
                tls_listen=self._tls_listen(),
                max_size=self.cache_bytes or "2g",
                access_log=f"access_log {self.workdir}/access.log combined buffer=64k flush=1s;"
                if Target.access_logs
                else "access_log off;",
                # As root the workers would switch to `nobody`, who cannot write our temp dir.
                user_line="user root;" if os.geteuid() == 0 else "",
            )
        )
        binary = shutil.which("nginx") or "nginx"
        return [binary, "-c", str(conf), "-p", str(self.workdir), "-e", "stderr"], dict(os.environ)

    def _tls_listen(self) -> str:
        """The HTTPS listener, with the edge's policy (proxy/front/tls.py): TLS 1.2 and 1.3, the
        same TLS 1.2 suites, tickets (nginx's default, one key for all workers) and a session
        cache shared by the workers, as the edge shares its ticket key."""
        if self.tls is None:
            return ""
        from proxy.front.tls import INTERMEDIATE_CIPHERS

        return "\n        ".join(
            (
                f"listen 127.0.0.1:{self.tls_port} ssl reuseport;",
                f"ssl_certificate {self.tls.cert_file};",
                f"ssl_certificate_key {self.tls.key_file};",
                "ssl_protocols TLSv1.2 TLSv1.3;",
                f"ssl_ciphers {INTERMEDIATE_CIPHERS};",
                "ssl_prefer_server_ciphers off;",
                "ssl_session_cache shared:TLS:10m;",
            )
        )


class VarnishTarget(Target):
    kind = "varnish"
    needs = ("varnishd",)

    def command(self, origin_port: int, workers: int) -> tuple[list[str], dict[str, str]]:
        vcl = self.workdir / "default.vcl"
        vcl.write_text(render("varnish.vcl.tmpl", origin_port=origin_port))
        binary = shutil.which("varnishd") or "varnishd"
        argv = [
            binary, "-F",
            "-j", "none",  # no privilege separation: run as the invoking user
            "-n", str(self.workdir / "varnish"),
            "-a", f"127.0.0.1:{self.port}",
            "-T", "none",
            "-f", str(vcl),
            "-s", f"malloc,{self.cache_bytes or 512 << 20}",
            "-p", f"thread_pools={workers}",
        ]  # fmt: skip
        return argv, dict(os.environ)


class TrafficServerTarget(Target):
    """Apache Traffic Server from a private runroot; optional."""

    kind = "trafficserver"
    needs = ("traffic_server",)

    def command(self, origin_port: int, workers: int) -> tuple[list[str], dict[str, str]]:
        # A private runroot: Debian's layout points at /etc and /var, so write our own.
        root = self.workdir / "runroot"
        etc, var = root / "etc", root / "var"
        for sub in ("cache", "log", "run", "data"):
            (var / sub).mkdir(parents=True, exist_ok=True)
        if not etc.exists():
            shutil.copytree("/etc/trafficserver", etc)
        layout = {
            "prefix": "/usr", "exec_prefix": "/usr", "bindir": "/usr/bin",
            "sbindir": "/usr/sbin", "includedir": "/usr/include",
            "libdir": "/usr/lib/trafficserver",
            "libexecdir": "/usr/lib/trafficserver/modules",
            "sysconfdir": str(etc), "datadir": str(var / "data"),
            "localstatedir": str(var), "runtimedir": str(var / "run"),
            "logdir": str(var / "log"), "cachedir": str(var / "cache"),
        }  # fmt: skip
        (root / "runroot.yaml").write_text("".join(f"{k}: {v}\n" for k, v in layout.items()))
        values = {"port": self.port, "origin_port": origin_port, "workers": workers}
        (etc / "records.config").write_text(render("ats-records.config.tmpl", **values))
        (etc / "remap.config").write_text(render("ats-remap.config.tmpl", **values))
        megabytes = (self.cache_bytes >> 20) or 512
        (etc / "storage.config").write_text(f"{var / 'cache'} {megabytes}M\n")
        binary = shutil.which("traffic_server") or "traffic_server"
        return [binary, f"--run-root={root}"], dict(os.environ)


COMPETITORS: tuple[type[Target], ...] = (NginxTarget, VarnishTarget, TrafficServerTarget)
