"""systemd's notify protocol (sd_notify(3)), without libsystemd: one AF_UNIX datagram of
`KEY=value` lines to $NOTIFY_SOCKET.

With `Type=notify` systemd counts the node started only at READY=1, which the supervisor sends
once every worker listens and enforces the blocklist; RELOADING=1 … READY=1 brackets a SIGHUP
reload; STOPPING=1 starts a drain. With `WatchdogSec=` systemd sets $WATCHDOG_USEC and expects
WATCHDOG=1 at least that often, or kills and restarts the node: the supervisor's event loop
pings at half the interval, so a wedged supervisor is restarted. Without $NOTIFY_SOCKET
(not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def _address(env: Mapping[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):  # an abstract socket
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    return None  # unset, or a vsock address (not for a node on the host)


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `fields` ("READY=1", "STATUS=…") in one datagram; False when there is no socket or
    systemd is gone (a notification is never worth failing the node for)."""
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True


def reloading() -> tuple[str, str]:
    """RELOADING=1 with the monotonic timestamp systemd ≥ 253 asks for alongside it."""
    return "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float:
    """How often to send WATCHDOG=1 (half of $WATCHDOG_USEC), or 0 when no watchdog is asked
    of this process ($WATCHDOG_PID names another one, or it is unset)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return 0.0
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return 0.0
    return int(usec) / 2e6
