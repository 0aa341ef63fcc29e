"""Alert fan-out: server-sent event streams in this process, and webhooks with retries.

Each stream subscriber has its own bounded queue. The worker thread publishes an
alert into every matching queue without waiting for any reader; a reader that
falls a queue behind loses its oldest alerts and is told so by a ``gap`` event
naming them (``GET /v1/alerts?after=...`` fetches them), so one slow client never
delays the others.

Webhooks are POSTed from a thread of their own with httpx; failures are retried
by tenacity with exponential backoff and full jitter, and every attempt is written
to the delivery's row. A 4xx answer other than 408 or 429 is final: the receiver
refused the alert and asking again will not change its mind. With a secret, each
request carries ``X-Copilot-Timestamp`` and ``X-Copilot-Signature: sha256=<hex>``,
the HMAC-SHA256 of ``"<timestamp>." + body`` (see ``signature``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from fastapi.sse import ServerSentEvent
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from copilot.event_store import (
    AlertInfo,
    Channel,
    DeliveryInfo,
    DeliveryStatus,
    EventStore,
    WebhookTarget,
    now_iso,
)
from copilot.settings import AlertSettings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Copilot-Signature"
TIMESTAMP_HEADER = "X-Copilot-Timestamp"
RETRY_MS = 2000  # how soon an EventSource reconnects after losing the stream


def alert_payload(alert: AlertInfo) -> dict[str, Any]:
    """The JSON every channel sends for an alert."""
    body = asdict(alert)
    body.pop("seq")
    body["links"] = {"chain": f"/v1/alerts/{alert.alert_id}"}
    return body


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``.

    A receiver recomputes it from the raw request body and the timestamp header, compares
    with ``hmac.compare_digest`` and refuses old timestamps, so a captured call cannot be replayed.
    """
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


@dataclass(frozen=True)
class AlertMessage:
    alert: AlertInfo
    json: str  # serialized once, sent to every subscriber as it is


@dataclass
class Subscription:
    """One stream reader: its queue lives on the event loop that serves its request."""

    name: str
    account_id: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[AlertMessage]
    dropped: list[str] = field(default_factory=list)

    def offer(self, message: AlertMessage) -> None:
        """Queue ``message``, dropping the oldest queued one when full (loop thread only)."""
        if self.queue.full():
            self.dropped.append(self.queue.get_nowait().alert.alert_id)
        self.queue.put_nowait(message)

    async def next(self) -> tuple[list[str], AlertMessage]:
        """The next alert, with the ids of the alerts dropped before it."""
        message = await self.queue.get()
        dropped, self.dropped = self.dropped, []
        return dropped, message


class _Retryable(Exception):
    """The receiver may accept a later attempt (5xx, 408, 429)."""


class _Refused(Exception):
    """The receiver answered 4xx: the alert is not retried."""


class WebhookSender:
    """POSTs alerts from its own thread and event loop, recording each attempt."""

    def __init__(self, settings: AlertSettings, store: EventStore):
        self.settings = settings
        self.store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._inflight: set[Future] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="webhook-sender", daemon=True
            )
            self._thread.start()
            ready.wait()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._client.aclose())
            loop.close()

    def send(self, message: AlertMessage, delivery: DeliveryInfo, secret: str | None) -> Future:
        """Deliver in the background; the future is done when the delivery is final."""
        self.start()
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(
            self._deliver(message, delivery, secret), self._loop
        )
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._inflight.discard(future)

    async def _deliver(self, message: AlertMessage, delivery: DeliveryInfo, secret: str | None):
        body = message.json.encode("utf-8")
        attempts = 0
        last_error: str | None = None  # kept after a success: it says why it took retries
        loop = asyncio.get_running_loop()

        async def record(status: DeliveryStatus, error: str | None) -> None:
            await loop.run_in_executor(
                None,
                lambda: self.store.update_delivery(
                    delivery.delivery_id, attempts=attempts, status=status, last_error=error
                ),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.webhook_attempts),
            wait=wait_random_exponential(
                multiplier=self.settings.webhook_backoff_s, max=self.settings.webhook_backoff_max_s
            ),
            retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    try:
                        await self._post(delivery.target, body, message.alert, secret)
                    except Exception as exc:
                        # Recorded before tenacity decides, so the row shows every attempt.
                        last_error = _describe(exc)
                        await record("pending", last_error)
                        raise
        except Exception as exc:
            await record("failed", _describe(exc))
            logger.warning(
                "webhook %s: alert %s not delivered after %d attempts: %s",
                delivery.target,
                message.alert.alert_id,
                attempts,
                _describe(exc),
            )
            return
        await record("delivered", last_error)

    async def _post(self, url: str, body: bytes, alert: AlertInfo, secret: str | None) -> None:
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            "X-Copilot-Event": "alert",
            "X-Copilot-Alert-Id": alert.alert_id,
        }
        if secret:
            stamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = signature(secret, stamp, body)
        response = await self._client.post(url, content=body, headers=headers)
        if response.is_success:
            return
        reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise _Retryable(reason)
        raise _Refused(f"{reason} (a 4xx answer is not retried)")

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for deliveries in flight; unfinished ones stay pending."""
        with self._lock:
            thread, inflight = self._thread, list(self._inflight)
            self._thread = None
        if thread is None:
            return
        deadline = time.monotonic() + timeout_s
        for future in inflight:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # a delivery cut short stays pending and is resumed on start
                future.cancel()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(timeout_s)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AlertHub:
    """Fans each new alert out to the stream subscribers and the webhooks."""

    def __init__(self, settings: AlertSettings, store: EventStore):
        self.settings = settings
        self.store = store
        self.webhooks = WebhookSender(settings, store)
        self._subscribers: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        # Stream deliveries, written in batches by the worker thread (take_log, flush),
        # so the event loop never waits on the database.
        self._delivered: deque[tuple[str, Channel, str, DeliveryStatus, str]] = deque()
        self._targets: list[WebhookTarget] | None = None

    # --- stream subscribers ---------------------------------------------------------

    def subscribe(self, account_id: str | None = None) -> Subscription:
        """A new subscriber on the running event loop (call it from a coroutine)."""
        sub = Subscription(
            name=f"sse-{next(self._names)}",
            account_id=account_id,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(self.settings.subscriber_queue),
        )
        with self._lock:
            self._subscribers[sub.name] = sub
        logger.info("stream %s subscribed (account %s)", sub.name, account_id or "all")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.pop(sub.name, None)
        logger.info("stream %s closed", sub.name)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    async def stream(
        self, account_id: str | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[ServerSentEvent]:
        """``ready``, then stored alerts after ``last_event_id`` (if given), then live ones."""
        sub = self.subscribe(account_id)
        try:
            sent_seq = 0
            yield ServerSentEvent(
                event="ready",
                data={"subscriber": sub.name, "account_id": account_id},
                retry=RETRY_MS,
            )
            if last_event_id:
                replay, note = await asyncio.to_thread(self._replay, account_id, last_event_id)
                if note:
                    yield ServerSentEvent(event="gap", data=note)
                for message in replay:
                    sent_seq = message.alert.seq
                    yield self._sent(sub, message)
            while True:
                dropped, message = await sub.next()
                if dropped:
                    for alert_id in dropped:
                        self._log(alert_id, sub.name, "dropped")
                    yield ServerSentEvent(event="gap", data=_gap_note(dropped))
                if message.alert.seq <= sent_seq:
                    continue  # already sent during the replay
                yield self._sent(sub, message)
        finally:
            self.unsubscribe(sub)

    def _replay(self, account_id: str | None, last_event_id: str) -> tuple[list[AlertMessage], Any]:
        after = self.store.alert_seq(last_event_id)
        if after is None:
            note = {
                "reason": f"Last-Event-ID '{last_event_id}' is not a stored alert; "
                "sending new alerts only (GET /v1/alerts lists the stored ones)"
            }
            return [], note
        limit = self.settings.replay_limit
        alerts = self.store.alerts(account_id, after_seq=after, limit=limit + 1)
        note = None
        if len(alerts) > limit:
            alerts = alerts[:limit]
            note = {
                "reason": f"more than {limit} alerts since '{last_event_id}'; "
                f"the oldest {limit} follow, GET /v1/alerts?after=<id> fetches the rest"
            }
        return [_message(a) for a in alerts], note

    def _sent(self, sub: Subscription, message: AlertMessage) -> ServerSentEvent:
        self._log(message.alert.alert_id, sub.name, "delivered")
        return ServerSentEvent(event="alert", id=message.alert.alert_id, raw_data=message.json)

    def _log(self, alert_id: str, target: str, status: DeliveryStatus) -> None:
        self._delivered.append((alert_id, "sse", target, status, now_iso()))

    def take_log(self) -> list[tuple[str, Channel, str, DeliveryStatus, str]]:
        """The stream deliveries logged since the last take, for the caller to store."""
        rows = []
        while self._delivered:
            rows.append(self._delivered.popleft())
        return rows

    def flush(self) -> int:
        """Write the stream deliveries logged since the last flush; returns how many."""
        return self.store.add_deliveries(self.take_log())

    # --- publishing ---------------------------------------------------------------

    def publish(self, alert: AlertInfo, deliveries: Sequence[DeliveryInfo] = ()) -> None:
        """Hand ``alert`` to every matching subscriber and start its webhook deliveries.

        Safe from any thread; it never waits for a subscriber.
        """
        message = _message(alert)
        with self._lock:
            subs = [
                s
                for s in self._subscribers.values()
                if s.account_id is None or s.account_id == alert.account_id
            ]
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, message)
            except RuntimeError:  # its loop has closed: the stream is gone
                self.unsubscribe(sub)
        secrets = {t.webhook_id: t.secret for t in self.webhook_targets()}
        for delivery in deliveries:
            self.webhooks.send(message, delivery, secrets.get(delivery.webhook_id))

    def resume_webhooks(self) -> int:
        """Restart the webhook deliveries a stopped process left pending."""
        pending = self.store.pending_deliveries()
        secrets = {t.webhook_id: t.secret for t in self.webhook_targets()}
        for alert, delivery in pending:
            self.webhooks.send(_message(alert), delivery, secrets.get(delivery.webhook_id))
        if pending:
            logger.info("resumed %d pending webhook deliveries", len(pending))
        return len(pending)

    def webhook_targets(self) -> list[WebhookTarget]:
        """The configured webhooks plus the API subscriptions (cached until they change)."""
        with self._lock:
            if self._targets is None:
                configured = [
                    WebhookTarget(url=url, secret=self.settings.webhook_secret)
                    for url in self.settings.webhooks
                ]
                self._targets = configured + self.store.webhooks()
            return list(self._targets)

    def webhooks_changed(self) -> None:
        with self._lock:
            self._targets = None

    def close(self, timeout_s: float = 5.0) -> None:
        self.webhooks.close(timeout_s)
        self.flush()


def _message(alert: AlertInfo) -> AlertMessage:
    return AlertMessage(alert, json.dumps(alert_payload(alert), ensure_ascii=False, default=str))


def _gap_note(dropped: list[str]) -> dict[str, Any]:
    return {
        "reason": f"{len(dropped)} alerts were dropped because this stream fell behind",
        "dropped": dropped[:100],
        "hint": "GET /v1/alerts/{alert_id} reads each one",
    }
