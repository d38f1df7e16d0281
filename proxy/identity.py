"""Who this process is: the package version, and the process title `ps` and `top` show.

The version comes from the installed package's metadata (pyproject's `version`), so
`edgeproxy --version`, `edgeproxy_build_info` and the wheel never disagree.
"""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

TITLE_PREFIX = "edgeproxy: "


@cache
def version() -> str:
    try:
        return metadata.version("edgeproxy")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def python_version() -> str:
    return platform.python_version()


def set_title(what: str) -> None:
    """`edgeproxy: <what>` in ps/top instead of `python3 -m proxy.node.worker 15 0`.

    One prctl/argv write (a few µs): callers change it on events (a new blocklist version),
    never per request. Without setproctitle (an unusual platform) titles are simply not set.
    """
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(TITLE_PREFIX + what)


def worker_title(index: int, blocklist_version: int) -> str:
    return f"worker {index} (blocklist v{blocklist_version})"
