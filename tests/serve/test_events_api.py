"""POST /v1/events and what follows: idempotency, stale events, errors, restarts, the chain.

The pipeline runs over the real accounts service (signals, rules) on a throw-away data dir;
the API is the event and alert routers with the project's error handlers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copilot.context import Product
from copilot.errors import InputError
from copilot.settings import Settings
from copilot.store import Store
from serve.accounts import AccountsService
from serve.events import EventPipeline
from tests.serve.live_server import events_app

T0 = "2024-03-01T09:00:00Z"


def event(key: str, type_: str, data: dict[str, Any], time: str = T0, account: str = "acme"):
    return {
        "idempotency_key": key,
        "type": type_,
        "account_id": account,
        "time": time,
        "data": data,
    }


ACCOUNT = event(
    "crm-acme", "account", {"name": "Acme Logistics", "sector": "retail", "owner": "dana"}
)
DEAL = event(
    "crm-op-1",
    "opportunity",
    {"opportunity_id": "op-1", "product_id": "GTX Pro", "stage": "engaging", "engage_date": T0},
)


def low_stock(key: str, on_hand: int, time: str = "2024-03-02T08:00:00Z") -> dict:
    return event(key, "stock", {"product_id": "GTX Pro", "on_hand": on_hand}, time=time)


@pytest.fixture
def accounts(settings: Settings) -> AccountsService:
    service = AccountsService(settings, Store(settings.db_path))
    # The price list: events naming a product outside it are refused, as imports are.
    service.apply_records([Product(time=T0, product_id="GTX Pro", name="GTX Pro", list_price=4821)])
    return service


@pytest.fixture
def pipeline(settings: Settings, accounts: AccountsService) -> EventPipeline:
    return EventPipeline(settings, accounts)


@pytest.fixture
def api(pipeline: EventPipeline) -> Iterator[TestClient]:
    # Entering the client runs the lifespan, which starts the pipeline's worker.
    with TestClient(events_app(pipeline), raise_server_exceptions=False) as client:
        yield client


def post_all(api: TestClient, pipeline: EventPipeline, *bodies: dict) -> list[dict]:
    replies = []
    for body in bodies:
        reply = api.post("/v1/events", json=body)
        assert reply.status_code == 202, reply.text
        replies.append(reply.json())
    assert pipeline.wait_idle(20)
    return [api.get(f"/v1/events/{r['event_id']}").json() for r in replies]


def test_an_event_is_acknowledged_at_once_then_applied(api: TestClient, pipeline) -> None:
    reply = api.post("/v1/events", json=ACCOUNT)
    assert reply.status_code == 202
    body = reply.json()
    assert body["event_id"].startswith("evt_")
    assert (body["duplicate"], body["type"], body["account_id"]) == (False, "account", "acme")
    assert body["time"] == "2024-03-01T09:00:00+00:00"

    assert pipeline.wait_idle(20)
    stored = api.get(f"/v1/events/{body['event_id']}").json()
    assert stored["status"] == "applied"
    assert stored["applied"] == {
        "account": {"inserted": 1, "updated": 0, "unchanged": 0, "stale": 0}
    }
    assert stored["signals"] == []  # an account with nothing else says nothing yet
    assert pipeline.accounts.has_account("acme")


def test_same_key_same_body_answers_the_first_result_without_reapplying(
    api: TestClient, pipeline: EventPipeline
) -> None:
    [first] = post_all(api, pipeline, ACCOUNT)
    again = api.post("/v1/events", json=ACCOUNT)
    assert again.status_code == 200
    body = again.json()
    assert body["duplicate"] is True
    assert body["event_id"] == first["event_id"]
    assert (body["status"], body["processed_at"]) == ("applied", first["processed_at"])
    assert pipeline.wait_idle(20)
    assert pipeline.store.counts() == {"applied": 1, "alerts": 0}


def test_same_key_with_another_body_is_a_409_naming_the_key(api: TestClient, pipeline) -> None:
    post_all(api, pipeline, ACCOUNT)
    changed = {**ACCOUNT, "data": {**ACCOUNT["data"], "name": "Acme Freight"}}
    reply = api.post("/v1/events", json=changed)
    assert reply.status_code == 409
    error = reply.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert "idempotency_key 'crm-acme' was already used" in error["message"]
    assert pipeline.store.counts()["applied"] == 1


def test_an_older_stock_level_is_stored_as_stale_and_the_newer_kept(
    api: TestClient, pipeline: EventPipeline
) -> None:
    newer = low_stock("wms-2", 50, time="2024-03-05T08:00:00Z")
    older = low_stock("wms-1", 3, time="2024-03-04T08:00:00Z")
    *_, new_event, old_event = post_all(api, pipeline, ACCOUNT, DEAL, newer, older)

    assert new_event["status"] == "applied"
    assert old_event["status"] == "stale"
    assert old_event["applied"] == {
        "stock": {"inserted": 0, "updated": 0, "unchanged": 0, "stale": 1}
    }
    assert old_event["signals"] is None and old_event["alerts"] == []
    assert old_event["data"]["on_hand"] == 3  # kept as sent, never lost
    stock = pipeline.accounts.context("acme").stock["GTX Pro"]
    assert (stock.on_hand, stock.time.isoformat()) == (50, "2024-03-05T08:00:00+00:00")


@pytest.mark.parametrize(
    ("body", "status", "starts"),
    [
        ({**ACCOUNT, "time": "2024-02-30T10:00:00"}, 400, "time: "),
        (event("o", "order", {"order_id": "o", "product_id": "P", "total": 9, "currency": "EUR"}),
         400, "data.currency: 'EUR' is not the accounts currency 'USD'"),
        (low_stock("neg", -2), 400, "data.on_hand: "),
        ({**ACCOUNT, "type": "acount"}, 400, "type: "),
        (event("c", "contact", {"contact_id": "c1", "name": "Li", "role": "buyer"}, account="initech"),
         404, "account 'initech' is not known; send an event of type 'account'"),
    ],
)  # fmt: skip
def test_bad_events_get_a_json_error_naming_the_field(
    api: TestClient, pipeline: EventPipeline, body: dict, status: int, starts: str
) -> None:
    post_all(api, pipeline, ACCOUNT)
    reply = api.post("/v1/events", json=body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["message"].startswith(starts), error
    assert "Traceback" not in reply.text
    assert pipeline.store.counts() == {"applied": 1, "alerts": 0}  # nothing stored


def test_a_body_that_is_not_json(api: TestClient) -> None:
    reply = api.post(
        "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("the body is not JSON")


def test_unknown_event_id_is_a_404(api: TestClient) -> None:
    reply = api.get("/v1/events/evt_missing")
    assert reply.status_code == 404
    assert "POST /v1/events returned" in reply.json()["error"]["message"]


def test_a_restart_processes_the_events_left_pending(
    settings: Settings, accounts: AccountsService
) -> None:
    stopped = EventPipeline(settings, accounts)
    # No `with`: the lifespan never runs, so no worker takes the events (a process that died).
    client = TestClient(events_app(stopped), raise_server_exceptions=False)
    contact = event(
        "crm-c1", "contact", {"contact_id": "c1", "name": "Li Wei", "role": "采购负责人"}
    )
    # The contact's account exists only as a pending event, which is enough to accept it.
    ids = [client.post("/v1/events", json=b).json()["event_id"] for b in (ACCOUNT, contact)]
    assert stopped.store.counts() == {"pending": 2, "alerts": 0}
    stopped.close()

    restarted = EventPipeline(settings, AccountsService(settings, Store(settings.db_path)))
    restarted.start()
    try:
        assert restarted.wait_idle(20)
    finally:
        restarted.close()
    assert [restarted.event(i).status for i in ids] == ["applied", "applied"]
    [stored] = restarted.accounts.context("acme").contacts
    assert (stored.name, stored.role) == ("Li Wei", "采购负责人")


def test_a_milestone_for_an_unknown_tender_is_refused_when_posted(api: TestClient) -> None:
    post = api.post("/v1/events", json=ACCOUNT)
    assert post.status_code == 202
    milestone = event("t-m1", "tender_milestone", {"tender_id": "t-9", "name": "Bid", "due": T0})
    reply = api.post("/v1/events", json=milestone)
    assert reply.status_code == 404
    assert "tender 't-9' is not known for account 'acme'" in reply.json()["error"]["message"]

    # A tender accepted but not yet applied is known: its milestones may follow at once.
    tender = event(
        "t-9", "tender", {"tender_id": "t-9", "title": "Refit", "deadline": "2024-04-01"}
    )
    assert api.post("/v1/events", json=tender).status_code == 202
    assert api.post("/v1/events", json=milestone).status_code == 202


def test_an_event_naming_a_product_outside_the_price_list_is_refused(api: TestClient) -> None:
    api.post("/v1/events", json=ACCOUNT)
    reply = api.post(
        "/v1/events", json=event("s-1", "stock", {"product_id": "Unobtainium", "on_hand": 1})
    )
    assert reply.status_code == 404
    assert "product(s) 'Unobtainium' not in the price list" in reply.json()["error"]["message"]


def test_a_failed_event_is_reported_and_the_worker_goes_on(
    api: TestClient, pipeline: EventPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply = pipeline.accounts.apply_records

    def refuse_deals(records):
        records = list(records)
        if any(r.kind == "opportunity" for r in records):
            raise InputError("the store refused the deal")
        return apply(records)

    monkeypatch.setattr(pipeline.accounts, "apply_records", refuse_deals)
    _, failed, after = post_all(api, pipeline, ACCOUNT, DEAL, low_stock("wms-1", 3))
    assert failed["status"] == "failed"
    assert failed["error"] == "failed while applying it: the store refused the deal"
    assert after["status"] == "applied"


def test_low_stock_for_an_open_deal_raises_one_alert_with_its_chain(
    api: TestClient, pipeline: EventPipeline
) -> None:
    *_, stock = post_all(api, pipeline, ACCOUNT, DEAL, low_stock("wms-1", 3))
    assert [s["type"] for s in stock["signals"]] == ["low_stock"]
    [rec] = stock["recommendations"]
    assert (rec["rule_id"], rec["alerted"]) == ("low-stock-in-play", True)
    assert stock["alerts"] == [rec["alert_id"]]

    [listed] = api.get("/v1/alerts", params={"account_id": "acme"}).json()
    assert listed["alert_id"] == rec["alert_id"]
    post_all(api, pipeline, event("crm-globex", "account", {"name": "Globex"}, account="globex"))
    assert api.get("/v1/alerts", params={"account_id": "globex"}).json() == []

    acted = api.post(
        f"/v1/alerts/{listed['alert_id']}/actions",
        json={"action": "accepted", "actor": "dana", "note": "allocating 40 units"},
    )
    assert acted.status_code == 201
    chain = api.get(f"/v1/alerts/{listed['alert_id']}").json()
    assert chain["event"]["idempotency_key"] == "wms-1"
    assert chain["event"]["data"] == {"product_id": "GTX Pro", "on_hand": 3}
    assert chain["signals"][0]["value"] == 3.0
    assert chain["rule"]["rule_id"] == "low-stock-in-play"
    assert chain["rule"]["signals"][0]["product_id"] == "GTX Pro"
    assert "only 3 x GTX Pro available" in chain["recommendation"]["action"]
    assert chain["recommendation"]["owner"] == "dana"
    assert [(a["action"], a["actor"]) for a in chain["actions"]] == [("accepted", "dana")]

    # The same shortage seen again (a new key, a later count) is the same situation.
    [again] = post_all(api, pipeline, low_stock("wms-2", 2, time="2024-03-02T12:00:00Z"))
    assert again["alerts"] == []
    assert [(r["alert_id"], r["alerted"]) for r in again["recommendations"]] == [
        (rec["alert_id"], False)
    ]
    assert len(api.get("/v1/alerts").json()) == 1


def test_rep_action_must_be_one_of_the_four(api: TestClient, pipeline) -> None:
    post_all(api, pipeline, ACCOUNT, DEAL, low_stock("wms-1", 3))
    [alert] = api.get("/v1/alerts").json()
    reply = api.post(f"/v1/alerts/{alert['alert_id']}/actions", json={"action": "ok", "actor": "d"})
    assert reply.status_code == 422
    assert reply.json()["error"]["message"].startswith("body.action: ")
    missing = api.post("/v1/alerts/alr_nope/actions", json={"action": "done", "actor": "d"})
    assert missing.status_code == 404


def test_webhook_subscriptions_are_listed_and_removed(api: TestClient, pipeline) -> None:
    post_all(api, pipeline, ACCOUNT)
    made = api.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "account_id": "acme", "secret": "s" * 20},
    )
    assert made.status_code == 201
    hook = made.json()
    assert (hook["url"], hook["account_id"], hook["signed"]) == (
        "http://127.0.0.1:9/hook",
        "acme",
        True,
    )
    assert "secret" not in hook
    assert [h["webhook_id"] for h in api.get("/v1/webhooks").json()] == [hook["webhook_id"]]
    assert api.delete(f"/v1/webhooks/{hook['webhook_id']}").status_code == 204
    assert api.get("/v1/webhooks").json() == []
    assert api.delete(f"/v1/webhooks/{hook['webhook_id']}").status_code == 404
    bad = api.post("/v1/webhooks", json={"url": "ftp://example"})
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("body.url")


# --- account filters and subscriptions are checked -------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "account_id": "Nobody"}),
        ("GET", "/v1/alerts?account_id=Nobody", None),
        # The stream: tests/serve/test_alerts.py, on a live server (it never ends otherwise).
    ],
)
def test_an_unknown_account_filter_is_a_404_naming_it(
    api: TestClient, pipeline: EventPipeline, method: str, path: str, payload: dict | None
) -> None:
    post_all(api, pipeline, ACCOUNT)
    reply = api.request(method, path, json=payload)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "not_found"
    assert error["message"].startswith("account 'Nobody' is not known; check the id")
    assert pipeline.webhooks() == []


def test_a_known_account_from_a_pending_event_is_accepted(api: TestClient, pipeline) -> None:
    # Accepted but not yet applied: the account exists as an event, as POST /v1/events allows.
    assert api.post("/v1/events", json=ACCOUNT).status_code == 202
    made = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "account_id": "acme"})
    assert made.status_code == 201
    assert api.get("/v1/alerts", params={"account_id": "acme"}).status_code == 200


def test_the_same_subscription_twice_answers_the_first(api: TestClient, pipeline) -> None:
    post_all(api, pipeline, ACCOUNT)
    body = {"url": "http://127.0.0.1:9/hook", "account_id": "acme", "secret": "s" * 20}
    first = api.post("/v1/webhooks", json=body)
    again = api.post("/v1/webhooks", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert [h.webhook_id for h in pipeline.webhooks()] == [first.json()["webhook_id"]]

    # The same URL for all accounts is another subscription.
    everyone = api.post("/v1/webhooks", json={**body, "account_id": None})
    assert everyone.status_code == 201
    assert everyone.json()["webhook_id"] != first.json()["webhook_id"]

    # Another secret for the same subscription would break the receiver's check: refused.
    other = api.post("/v1/webhooks", json={**body, "secret": "t" * 20})
    assert other.status_code == 409
    message = other.json()["error"]["message"]
    assert message.startswith(
        "http://127.0.0.1:9/hook is already subscribed to the alerts of account 'acme' with "
        "another secret"
    )
    assert f"DELETE /v1/webhooks/{first.json()['webhook_id']} first" in message
    assert len(pipeline.webhooks()) == 2


def test_a_webhook_url_is_at_most_2048_characters(api: TestClient, pipeline) -> None:
    base = "http://127.0.0.1:9/"
    longest = base + "a" * (2048 - len(base))
    assert api.post("/v1/webhooks", json={"url": longest}).status_code == 201
    reply = api.post("/v1/webhooks", json={"url": base + "a" * 100_000})
    assert reply.status_code == 422
    assert reply.json()["error"]["message"] == "body.url: URL should have at most 2048 characters"
    assert [len(h.url) for h in pipeline.webhooks()] == [2048]
