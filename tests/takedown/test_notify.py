"""Issue 14: notifications are really sent. A real SMTP server on loopback (aiosmtpd) and real
aiohttp receivers that check the HMAC signature: the receipt reaches the complainant, the
takedown notice the customer (512(g)(2)(A)), the counter-notice the complainant
(512(g)(2)(B)); a failing receiver is retried with backoff, each attempt is on the case's
timeline, logged and counted; one that never answers is abandoned, visibly."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from proxy.takedown import notify
from proxy.takedown.config import Notify
from proxy.takedown.sender import DeliveryError
from proxy.takedown.service import TakedownService
from tests.integration.conftest import free_port
from tests.takedown.conftest import Env, MakeEnv, fast_config, notice
from tests.takedown.test_file_drop import COUNTER


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.arrived.set()
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    yield box, port
    ctl.stop()


@dataclass
class Receiver:
    """A webhook endpoint that checks X-Edgeproxy-Signature; fails the first `fail` calls."""

    secret: str = ""
    fail: int = 0
    calls: int = 0
    got: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        want = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Edgeproxy-Signature", ""), want):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.calls <= self.fail:
            return web.Response(status=503)
        self.got.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[tuple[Receiver, TestServer]] = []

    async def start(r: Receiver) -> None:
        app = web.Application()
        app.router.add_post("/hook", r.handle)
        srv = TestServer(app, host="127.0.0.1")
        await srv.start_server()
        r.url = str(srv.make_url("/hook"))
        made.append((r, srv))

    out = [Receiver(), Receiver(fail=2), Receiver(fail=10**6)]
    for r in out:
        await start(r)
    yield out
    for _, srv in made:
        await srv.close()


def notify_config(port: int, **over: Any) -> Notify:
    settings: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "from_address": "takedown@edge.example",
        "retry_initial_s": 0.05,
        "retry_max_s": 0.2,
        "max_attempts": 5,
        "request_timeout_s": 5.0,
    }
    return Notify(**{**settings, **over})


def contact(env: Env, party: str, name: str, **kw: str) -> str:
    table = "customers" if party == "customer" else "accounts"

    def run(conn: sqlite3.Connection) -> str | None:
        pid = conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()[0]
        return notify.set_contact(conn, party, pid, env.clock(), **kw)  # type: ignore[arg-type]

    return env.svc.store.run_sync(run) or ""


async def until(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def events(view: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e["data"] for e in view["timeline"] if e["event"] == name]


async def test_receipt_takedown_and_counter_notice_are_delivered(
    make_env: MakeEnv,
    smtp: tuple[Mailbox, int],
    receivers: list[Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    box, port = smtp
    good, flaky, _ = receivers
    env = await make_env(n_edges=1, cfg=fast_config(notify=notify_config(port)))
    good.secret = contact(env, "customer", "Acme", email="abuse@acme.example", webhook_url=good.url)
    flaky.secret = contact(env, "account", "submitter", webhook_url=flaky.url)
    caplog.set_level(logging.WARNING, "edgeproxy.takedown.notify")

    status, body = await env.post("/notices", "submitter", notice())
    assert status == 201
    case = body["case"]
    # The receipt: email to the address in the notice, webhook to the submitting account.
    await until(lambda: box.to("legal@rights.example") and flaky.got)
    [mail] = box.to("legal@rights.example")
    assert mail["Subject"] == f"Receipt of your notice (case {case})"
    assert mail["From"] == "takedown@edge.example"
    assert body["receipt"]["sha256"] in mail.get_content()
    assert flaky.got[0]["event"] == "receipt" and flaky.got[0]["case"] == case
    assert flaky.calls == 3 and flaky.bad_signatures == 0  # two 503s, then delivered

    # The takedown notice to the customer (512(g)(2)(A)).
    await env.post(f"/cases/{case}/decision", "operator", {"decision": "action", "reason": "ok"})
    await env.wait_state(case, "enforced")
    await until(lambda: box.to("abuse@acme.example") and good.got)
    assert "disabled" in box.to("abuse@acme.example")[0]["Subject"]
    assert good.got[0]["event"] == "takedown"
    assert good.got[0]["targets"] == ["https://cdn.example/a.mp3"]

    # The counter-notice forwarded to the complainant (512(g)(2)(B)).
    status, out = await env.post(f"/cases/{case}/counter-notice", "customer", COUNTER)
    assert status == 201
    await until(lambda: len(box.to("legal@rights.example")) == 2 and len(flaky.got) == 2)
    forwarded = flaky.got[1]
    assert forwarded["event"] == "counter_notice"
    assert forwarded["counter_notice"] == COUNTER
    assert forwarded["restore"]["not_before"] == out["restore"]["not_before"]
    assert "will be restored" in box.to("legal@rights.example")[1]["Subject"]

    # Every attempt is on the case, and the failures were logged and counted. A message
    # arrives before its sender records the delivery: wait for the records, not the mail.
    def recorded() -> int:
        return int(
            env.svc.store.run_sync(
                lambda c: c.execute(
                    "SELECT COUNT(*) FROM audit_log WHERE event = 'notification_sent'"
                ).fetchone()[0]
            )
        )

    await until(lambda: len(good.got) == 1 and len(flaky.got) == 2 and recorded() == 6)
    _, view = await env.get(f"/cases/{case}")
    failed = events(view, "notification_failed")
    assert [(f["channel"], f["kind"], f["attempt"]) for f in failed] == [
        ("webhook", "receipt", 1),
        ("webhook", "receipt", 2),
    ]
    assert all(f["error"].startswith("HTTP 503") and f["retry_in_s"] > 0 for f in failed)
    sent = {(s["kind"], s["channel"], s["to"]) for s in events(view, "notification_sent")}
    assert sent == {
        ("receipt", "email", "legal@rights.example"),
        ("receipt", "webhook", flaky.url),
        ("takedown", "email", "abuse@acme.example"),
        ("takedown", "webhook", good.url),
        ("counter_notice", "email", "legal@rights.example"),
        ("counter_notice", "webhook", flaky.url),
    }
    assert sum("failed (attempt" in r.getMessage() for r in caplog.records) == 2
    text = (await (await env.client.get("/metrics")).read()).decode()
    assert (
        'edgeproxy_takedown_notification_failures_total{channel="webhook",kind="receipt"} 2.0'
        in text
    )
    assert (
        'edgeproxy_takedown_notifications_sent_total{channel="email",kind="takedown"} 1.0' in text
    )


async def test_a_receiver_that_never_answers_is_abandoned_visibly(
    make_env: MakeEnv, smtp: tuple[Mailbox, int], receivers: list[Receiver]
) -> None:
    _, port = smtp
    dead = receivers[2]
    env = await make_env(n_edges=1, cfg=fast_config(notify=notify_config(port, max_attempts=3)))
    dead.secret = contact(env, "account", "submitter", webhook_url=dead.url)
    _, body = await env.post("/notices", "submitter", notice())
    await until(lambda: dead.calls == 3)

    async def abandoned() -> list[dict[str, Any]]:
        _, view = await env.get(f"/cases/{body['case']}")
        return events(view, "notification_abandoned")

    for _ in range(100):
        if await abandoned():
            break
        await asyncio.sleep(0.02)
    [gone] = await abandoned()
    assert gone["attempt"] == 3 and gone["to"] == dead.url
    await asyncio.sleep(0.3)
    assert dead.calls == 3  # no more tries after giving up
    text = (await (await env.client.get("/metrics")).read()).decode()
    assert 'notifications_abandoned_total{channel="webhook",kind="receipt"} 1.0' in text


async def test_no_contact_is_recorded_not_silent(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    _, body = await env.post("/notices", "submitter", notice())
    await env.post(
        f"/cases/{body['case']}/decision", "operator", {"decision": "action", "reason": "ok"}
    )
    _, view = await env.get(f"/cases/{body['case']}")
    assert {"kind": "takedown", "reason": "no contact on record"} in events(
        view, "notification_undeliverable"
    )


async def test_outbox_survives_a_restart(
    make_env: MakeEnv, smtp: tuple[Mailbox, int], tmp_path: Any
) -> None:
    """Queued while no SMTP server was configured; sent by the next run of the service."""
    box, port = smtp
    env = await make_env(n_edges=1)  # no smtp_host: the message fails and waits
    _, body = await env.post("/notices", "submitter", notice())
    await env.client.close()  # stops the service
    later = TakedownService(
        env.db,
        msgspec.structs.replace(fast_config(), notify=notify_config(port)),
        edge_urls=[],
        clock=env.clock,
    )
    await later.start()
    try:
        await until(lambda: box.to("legal@rights.example"))
        assert f"(case {body['case']})" in box.to("legal@rights.example")[0]["Subject"]
    finally:
        await later.stop()


async def test_a_cancel_that_meets_a_failing_send_stops_the_delivery(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() cancels each delivery; one whose send fails at that very moment must end too,
    not record the failure and sleep until its next try (asyncio.wait_for on 3.11 returned the
    send's error and dropped the cancellation, so the service's shutdown hung for minutes)."""
    env = await make_env(n_edges=1)
    sender = env.svc.sender
    assert sender is not None
    tasks: list[asyncio.Task[None]] = []

    async def failing_send(msg: notify.Message) -> None:
        task = sender._in_flight[msg.id]
        tasks.append(task)
        task.cancel()  # the stop arrives as the send fails
        raise DeliveryError("refused")

    monkeypatch.setattr(sender, "_send", failing_send)
    await env.post("/notices", "submitter", notice())
    await until(lambda: bool(tasks))
    await until(lambda: tasks[0].done(), timeout_s=2.0)  # the retry would wait 5 s
    assert tasks[0].cancelled()
