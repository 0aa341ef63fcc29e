"""Alerts leaving the process: a real SSE stream from uvicorn, webhooks with retries, slow readers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from copilot.context import Product
from copilot.event_store import EventStore, WebhookTarget
from copilot.events import body_hash, parse_event
from copilot.settings import AlertSettings, Settings
from copilot.store import Store
from serve.accounts import AccountsService
from serve.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, AlertHub, signature
from serve.events import EventPipeline
from tests.serve.live_server import (
    events_app,
    live_server,
    next_event,
    sse_events,
    webhook_receiver,
)
from tests.serve.test_events_api import ACCOUNT, DEAL, event, low_stock

SECRET = "test-secret-0123456789"


def with_alerts(settings: Settings, **changes) -> Settings:
    alerts = AlertSettings(**{**settings.alerts.model_dump(), **changes})
    return settings.model_copy(update={"alerts": alerts})


def make_pipeline(settings: Settings) -> EventPipeline:
    accounts = AccountsService(settings, Store(settings.db_path))
    accounts.apply_records(
        Product(time="2024-03-01", product_id=name, name=name, list_price=100)
        for name in ("GTX Pro", "Atlas")
    )
    return EventPipeline(settings, accounts)


def wait_processed(http: httpx.Client, event_id: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = http.get(f"/v1/events/{event_id}").json()
        if found["status"] != "pending":
            return found
        time.sleep(0.02)
    raise AssertionError(f"event {event_id} still pending after {timeout_s} s")


def post(http: httpx.Client, body: dict) -> str:
    reply = http.post("/v1/events", json=body)
    assert reply.status_code == 202, reply.text
    return reply.json()["event_id"]


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, EventPipeline]]:
    pipeline = make_pipeline(settings)
    with live_server(events_app(pipeline)) as base:
        yield base, pipeline


def globex(key: str, type_: str, data: dict, time: str = "2024-03-03T08:00:00Z") -> dict:
    return event(key, type_, data, time=time, account="globex")


GLOBEX = [
    globex("crm-globex", "account", {"name": "Globex", "owner": "li.wei"}, time="2024-03-01"),
    globex(
        "crm-op-7",
        "opportunity",
        {"opportunity_id": "op-7", "product_id": "Atlas", "stage": "engaging"},
    ),
    globex("wms-3", "stock", {"product_id": "Atlas", "on_hand": 1}),
]


def test_an_alert_reaches_the_stream_once_and_the_same_situation_is_not_realerted(
    server: tuple[str, EventPipeline],
) -> None:
    base, pipeline = server
    read_timeout = httpx.Timeout(10, read=20)
    pipeline.submit(ACCOUNT)  # a stream for one account needs the account to be known
    with (
        httpx.Client(base_url=base, timeout=10) as http,
        httpx.Client(timeout=read_timeout) as reader,
        reader.stream("GET", f"{base}/v1/alerts/stream") as stream,
        reader.stream("GET", f"{base}/v1/alerts/stream", params={"account_id": "acme"}) as acme,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        events, acme_events = sse_events(stream), sse_events(acme)
        ready = next(events)
        assert ready.event == "ready" and ready.data["account_id"] is None
        assert next(acme_events).data["account_id"] == "acme"

        post(http, DEAL)
        stock_id = post(http, low_stock("wms-1", 3))
        alert = next_event(events)
        assert alert.data["idempotency_key"] == "wms-1"
        assert alert.data["event_id"] == stock_id
        assert alert.id == alert.data["alert_id"]
        assert alert.data["rule_id"] == "low-stock-in-play"
        assert "only 3 x GTX Pro available" in alert.data["recommendation"]["action"]
        assert next_event(acme_events).id == alert.id

        # The same shortage again: processed, but no alert. The next alert on the stream
        # is the one for a new situation, so nothing came in between.
        repeat_id = post(http, low_stock("wms-2", 2, time="2024-03-02T12:00:00Z"))
        repeat = wait_processed(http, repeat_id)
        assert repeat["status"] == "applied" and repeat["alerts"] == []
        for body in GLOBEX:
            post(http, body)
        following = next_event(events)
        assert (following.data["idempotency_key"], following.data["account_id"]) == (
            "wms-3",
            "globex",
        )
        assert "Atlas" in following.data["recommendation"]["action"]

        # The acme stream skipped globex's alert: its next one is acme's own.
        acme_deal = event(
            "crm-op-3",
            "opportunity",
            {"opportunity_id": "op-3", "product_id": "Atlas", "stage": "engaging"},
        )
        post(http, acme_deal)
        assert next_event(acme_events).data["idempotency_key"] == "crm-op-3"

        chain = _chain_with_stream_delivery(http, alert.id)
    assert chain["event"]["event_id"] == stock_id
    assert [s["type"] for s in chain["signals"]] == ["low_stock"]
    assert chain["rule"]["rule_id"] == "low-stock-in-play"
    targets = sorted(d["target"] for d in chain["deliveries"] if d["status"] == "delivered")
    assert [d["channel"] for d in chain["deliveries"]] == ["sse", "sse"]
    assert ready.data["subscriber"] in targets and len(targets) == 2
    assert len(pipeline.store.alerts("globex")) == 1


def _chain_with_stream_delivery(http: httpx.Client, alert_id: str) -> dict:
    # Stream deliveries are written by the worker in batches, a moment after the send.
    deadline = time.monotonic() + 10
    while True:
        chain = http.get(f"/v1/alerts/{alert_id}").json()
        if len(chain["deliveries"]) >= 2 or time.monotonic() > deadline:
            return chain
        time.sleep(0.05)


def test_a_stream_resumes_after_last_event_id(server: tuple[str, EventPipeline]) -> None:
    base, pipeline = server
    with httpx.Client(base_url=base, timeout=10) as http:
        for body in (ACCOUNT, DEAL, low_stock("wms-1", 3), *GLOBEX):
            post(http, body)
        assert pipeline.wait_idle(20)
        first, second = sorted(pipeline.store.alerts(), key=lambda a: a.seq)

        headers = {"Last-Event-ID": first.alert_id}
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=20)) as reader,
            reader.stream("GET", f"{base}/v1/alerts/stream", headers=headers) as stream,
        ):
            events = sse_events(stream)
            assert next(events).event == "ready"
            replayed = next_event(events)
        assert replayed.id == second.alert_id
        assert replayed.data["idempotency_key"] == "wms-3"

        with (
            httpx.Client(timeout=httpx.Timeout(10, read=20)) as reader,
            reader.stream(
                "GET", f"{base}/v1/alerts/stream", headers={"Last-Event-ID": "alr_unknown"}
            ) as stream,
        ):
            events = sse_events(stream)
            assert next(events).event == "ready"
            gap = next(events)
        assert gap.event == "gap" and "'alr_unknown' is not a stored alert" in gap.data["reason"]


def test_a_webhook_failing_twice_is_delivered_on_the_third_attempt(settings: Settings) -> None:
    with webhook_receiver([500, 503, 200]) as receiver:
        tuned = with_alerts(
            settings, webhooks=[receiver.url], webhook_secret=SECRET, webhook_backoff_s=0.01
        )
        pipeline = make_pipeline(tuned)
        pipeline.start()
        try:
            for body in (ACCOUNT, DEAL, low_stock("wms-1", 3)):
                pipeline.submit(body)
            receiver.wait_for(3)
            [alert] = pipeline.alerts()
            delivery = _final_delivery(pipeline, alert.alert_id)
        finally:
            pipeline.close()

    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert delivery.last_error == "_Retryable: HTTP 503 Service Unavailable"
    assert delivery.target == receiver.url and delivery.delivered_at is not None
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[-1]
    payload = json.loads(body)
    assert payload["alert_id"] == alert.alert_id and payload["idempotency_key"] == "wms-1"
    assert headers[SIGNATURE_HEADER] == signature(SECRET, headers[TIMESTAMP_HEADER], body)
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 60


def test_a_webhook_answering_4xx_is_not_retried(settings: Settings) -> None:
    with webhook_receiver([410]) as receiver:
        pipeline = make_pipeline(
            with_alerts(settings, webhooks=[receiver.url], webhook_backoff_s=0.01)
        )
        pipeline.start()
        try:
            for body in (ACCOUNT, DEAL, low_stock("wms-1", 3)):
                pipeline.submit(body)
            receiver.wait_for(1)
            [alert] = pipeline.alerts()
            delivery = _final_delivery(pipeline, alert.alert_id)
        finally:
            pipeline.close()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "HTTP 410 Gone" in delivery.last_error and "not retried" in delivery.last_error
    assert SIGNATURE_HEADER not in receiver.requests[0][0]  # no secret, no signature


def _final_delivery(pipeline: EventPipeline, alert_id: str):
    deadline = time.monotonic() + 10
    while True:
        [delivery] = [d for d in pipeline.chain(alert_id).deliveries if d.channel == "webhook"]
        if delivery.status != "pending" or time.monotonic() > deadline:
            return delivery
        time.sleep(0.02)


def test_webhook_deliveries_left_pending_are_sent_on_start(settings: Settings) -> None:
    with webhook_receiver([200]) as receiver:
        store = EventStore(settings.db_path)
        parsed = parse_event(ACCOUNT, "USD")
        store.add_event(parsed, body_hash(parsed))
        rec = {"recommendation_id": "rec_1", "rule_id": "r", "priority": "low", "signals": []}
        [(alert, _)] = store.finish(
            1, "applied", {}, recommendations=[rec], webhooks=[WebhookTarget(url=receiver.url)]
        )
        pipeline = make_pipeline(settings)
        pipeline.start()
        try:
            receiver.wait_for(1)
            delivery = _final_delivery(pipeline, alert.alert_id)
        finally:
            pipeline.close()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


def test_a_slow_reader_loses_the_oldest_alerts_and_is_told_while_others_get_all(
    tmp_path: Path,
) -> None:
    store = EventStore(tmp_path / "events.sqlite3")
    alerts = []
    for i in range(5):
        parsed = parse_event({**ACCOUNT, "idempotency_key": f"k{i}"}, "USD")
        store.add_event(parsed, body_hash(parsed))
        rec = {"recommendation_id": f"rec_{i}", "rule_id": "r", "priority": "low", "signals": []}
        [(alert, _)] = store.finish(i + 1, "applied", {}, recommendations=[rec])
        alerts.append(alert)
    hub = AlertHub(AlertSettings(subscriber_queue=2), store)

    async def scenario() -> tuple[list[str], list[tuple[str, object]]]:
        fast, slow = hub.stream(), hub.stream()
        assert (await anext(fast)).event == "ready"
        assert (await anext(slow)).event == "ready"
        fast_ids = []
        for alert in alerts:
            # Published from another thread, as the worker does; the fast reader keeps up.
            await asyncio.to_thread(hub.publish, alert)
            fast_ids.append((await asyncio.wait_for(anext(fast), 5)).id)
        slow_seen = []
        for _ in range(3):
            item = await asyncio.wait_for(anext(slow), 5)
            slow_seen.append((item.event, item.data if item.event == "gap" else item.id))
        await fast.aclose()
        await slow.aclose()
        return fast_ids, slow_seen

    fast_ids, slow_seen = asyncio.run(scenario())
    ids = [a.alert_id for a in alerts]
    assert fast_ids == ids
    gap, fourth, fifth = slow_seen
    assert gap[0] == "gap" and gap[1]["dropped"] == ids[:3]
    assert [fourth, fifth] == [("alert", ids[3]), ("alert", ids[4])]
    assert hub.subscriber_count == 0
    assert hub.flush() == 5 + 3 + 2  # fast: 5 delivered; slow: 3 dropped, 2 delivered
    statuses = sorted(d.status for d in store.chain(ids[0]).deliveries)
    assert statuses == ["delivered", "dropped"]


def test_a_stream_for_an_unknown_account_is_refused_before_it_starts(
    server: tuple[str, EventPipeline],
) -> None:
    base, pipeline = server
    with (
        httpx.Client(base_url=base, timeout=10) as http,
        http.stream("GET", "/v1/alerts/stream", params={"account_id": "Nobody"}) as reply,
    ):
        # Only the head is read: a stream that did start would never end.
        assert (reply.status_code, reply.headers["content-type"]) == (404, "application/json")
        error = json.loads(reply.read())["error"]
    assert error["message"].startswith("account 'Nobody' is not known; check the id")
    assert pipeline.hub.subscriber_count == 0
