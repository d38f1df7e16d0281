"""Delivering the outbox: SMTP and HMAC-signed webhooks, with retries and backoff.

One task per undelivered message (at most `notify.max_in_flight` sending at once). Each
attempt is recorded on the message's case (`notification_sent`, `notification_failed` with
the error and the wait before the next try, `notification_abandoned` after
`notify.max_attempts`), logged when it fails and counted. The outbox is read again on start,
so messages queued before a crash are sent after it. Backoff runs on the event loop's own
time, as the publisher's does; the service clock only stamps the records.

A webhook is a POST of the JSON payload; `X-Edgeproxy-Signature: sha256=<hex>` is
HMAC-SHA256 of the exact body bytes under the recipient's own secret (`takedown
set-contact` prints it once), so a receiver checks it before trusting anything in it. Any
2xx answer is delivery; anything else is retried.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import aiohttp

from proxy.takedown import notify
from proxy.takedown.config import Notify
from proxy.takedown.metrics import ServiceMetrics
from proxy.takedown.notify import Channel, Kind, Message
from proxy.takedown.store import Store

log = logging.getLogger("edgeproxy.takedown.notify")

SIGNATURE_HEADER = "X-Edgeproxy-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryError(Exception):
    """The server or receiver did not take the message; the text is recorded."""


class Sender:
    def __init__(
        self,
        store: Store,
        policy: Notify,
        session: aiohttp.ClientSession,
        metrics: ServiceMetrics,
        clock: Callable[[], float],
        operator: str,
    ) -> None:
        self.store = store
        self.policy = policy
        self.session = session
        self.metrics = metrics
        self.clock = clock
        self.operator = operator
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max(1, policy.max_in_flight))
        self._password = (
            Path(policy.smtp_password_file).read_text().strip()
            if policy.smtp_password_file
            else None
        )

    def start(self) -> None:
        self._loop = asyncio.create_task(self._dispatch(), name="takedown-sender")
        self.kick()

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._in_flight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()

    def kick(self) -> None:
        self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                due = await self.store.run(notify.pending, set(self._in_flight))
            except Exception:
                log.exception("reading the outbox failed")
                continue
            for msg in due:
                task = asyncio.create_task(self._deliver(msg), name=f"notify {msg.id}")
                self._in_flight[msg.id] = task
                task.add_done_callback(functools.partial(self._done, msg.id))

    def _done(self, outbox_id: int, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(outbox_id, None)

    async def _deliver(self, msg: Message) -> None:
        attempt = msg.attempts
        delay = self.policy.retry_initial_s * self.policy.retry_factor ** max(0, attempt - 1)
        delay = min(delay, self.policy.retry_max_s)
        key = (msg.channel, Kind(msg.kind))
        while True:
            attempt += 1
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
                # arrives as the send fails, and the task would go on retrying after stop().
                async with self._slots, asyncio.timeout(self.policy.request_timeout_s):
                    await self._send(msg)
            except (DeliveryError, TimeoutError, OSError, aiohttp.ClientError) as exc:
                error = str(exc) or type(exc).__name__
                last = attempt >= self.policy.max_attempts
                self.metrics.notify_failed[key].inc()
                log.warning(
                    "notification %d (%s, case %d) to %s failed (attempt %d): %s%s",
                    msg.id,
                    msg.kind,
                    msg.case_id,
                    msg.recipient,
                    attempt,
                    error,
                    "; giving up" if last else f"; retrying in {delay:g} s",
                )
                retry = None if last else delay
                await self.store.run(notify.record_attempt, msg, self.clock(), error, retry)
                if last:
                    self.metrics.notify_abandoned[key].inc()
                    return
                await asyncio.sleep(delay)
                delay = min(delay * self.policy.retry_factor, self.policy.retry_max_s)
                continue
            self.metrics.notify_sent[key].inc()
            await self.store.run(notify.record_attempt, msg, self.clock(), None, None)
            return

    async def _send(self, msg: Message) -> None:
        if msg.channel is Channel.WEBHOOK:
            await self._post(msg)
        else:
            await self._mail(msg)

    async def _post(self, msg: Message) -> None:
        body = msg.webhook_body()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(msg.secret, body),
            "X-Edgeproxy-Event": msg.kind,
            "X-Edgeproxy-Delivery": str(msg.id),
        }
        async with self.session.post(msg.recipient, data=body, headers=headers) as resp:
            if not 200 <= resp.status < 300:
                raise DeliveryError(f"HTTP {resp.status} from {msg.recipient}")

    async def _mail(self, msg: Message) -> None:
        import aiosmtplib

        p = self.policy
        if not p.smtp_host:
            raise DeliveryError("no SMTP server configured ([notify] smtp_host)")
        email = EmailMessage()
        email["From"] = p.from_address
        email["To"] = msg.recipient
        email["Subject"] = msg.subject
        email["Date"] = formatdate(self.clock(), usegmt=True)
        email["Message-ID"] = make_msgid(f"outbox{msg.id}")
        email["X-Edgeproxy-Case"] = str(msg.case_id)
        email.set_content(msg.email_text(self.operator))
        try:
            await aiosmtplib.send(
                email,
                hostname=p.smtp_host,
                port=p.smtp_port,
                start_tls=p.smtp_starttls,
                username=p.smtp_username or None,
                password=self._password,
                timeout=p.request_timeout_s,
            )
        except aiosmtplib.SMTPException as exc:
            raise DeliveryError(f"SMTP: {exc}") from exc
