"""The service log (what the supervisor and workers say about themselves, not the access log):
one line per event, as text or as JSON for a log shipper.

Levels: ERROR for what an operator must act on (a worker died, a version was rejected), WARNING
for degraded but working (file events unavailable, a control frame refused), INFO for the node's
own events going right (started, reloaded, a version loaded, stopping), DEBUG for detail.
The default level is INFO; EDGEPROXY_LOG_LEVEL changes it.

A traceback stays on its event's line (newlines escaped in text, a field in JSON), so a line
is an event for grep, journald and a shipper alike.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]
DEFAULT_LEVEL = "INFO"


def _iso(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "process", "pid", "logger", "msg"[, "exc"]}`, one object a line."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "process": self.process,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class LineFormatter(logging.Formatter):
    """The text format, with any newline (a traceback's) escaped to keep one line an event."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def configure(fmt: LogFormat = "text", *, process: str) -> None:
    """(Re)configure the root logger to stderr; `process` names who speaks ("supervisor",
    "worker[0]"). Safe to call again, after a reload changed `log.format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else LineFormatter(process))
    logging.basicConfig(
        level=os.environ.get("EDGEPROXY_LOG_LEVEL", DEFAULT_LEVEL).upper(),
        handlers=[handler],
        force=True,
    )
