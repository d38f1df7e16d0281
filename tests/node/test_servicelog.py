"""Issue 17, the service log: INFO for things going right, one line per event, JSON on request
(`--log-format json` or `[log] format = "json"`), from the supervisor and the workers alike."""

from __future__ import annotations

import json
import logging

from proxy.node.servicelog import JsonFormatter, LineFormatter
from tests.integration.node import Node
from tests.node.conftest import get, origin_app


def record(msg: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("edgeproxy.t", logging.ERROR, __file__, 1, msg, (), exc_info)


def test_a_traceback_stays_on_its_events_line() -> None:
    text = LineFormatter("supervisor").format(record("failed\nbadly", exc=True))
    assert "\n" not in text and "supervisor ERROR edgeproxy.t: failed\\nbadly" in text
    assert "RuntimeError: boom\\nsecond line" in text
    obj = json.loads(JsonFormatter("worker[1]").format(record("failed", exc=True)))
    assert obj["process"] == "worker[1]" and obj["level"] == "ERROR" and obj["msg"] == "failed"
    assert "RuntimeError: boom" in obj["exc"] and obj["ts"].endswith("Z")


async def test_json_service_log_from_supervisor_and_workers(origin_server, nodes) -> None:
    node = Node(
        ["--origin", await origin_server(origin_app([])), "--workers", "2", "--log-format", "json"]
    )
    nodes.append(node)
    await node.start()
    assert (await get(node.url + "/x"))[0] == 200
    assert await node.stop() == 0
    events = [json.loads(line) for line in node.output if line.startswith("{")]
    started = [e for e in events if "enforcing blocklist version" in e["msg"]]
    assert len(started) == 2 and {e["level"] for e in started} == {"INFO"}
    assert {e["process"] for e in started} == {"supervisor"}
    assert any(e["msg"].startswith("stopping") for e in events)
    drained = [e for e in events if e["msg"].startswith("draining")]
    assert {e["process"] for e in drained} == {"worker[0]", "worker[1]"}
    # Nothing else on the stream but the start banner and JSON objects, one a line.
    others = [line for line in node.output if not line.startswith("{")]
    assert all(line.startswith(("edgeproxy listening", "state dir")) for line in others), others
