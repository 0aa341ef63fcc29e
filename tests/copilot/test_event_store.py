"""The event log: idempotency keys, the outcome of each event, alert dedupe and the chain."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from copilot.errors import NotFoundError
from copilot.event_store import EventStore, KeyConflictError, WebhookTarget
from copilot.events import body_hash, parse_event


def stock_event(key: str, on_hand: int, account: str = "acme", time: str = "2024-03-02"):
    return parse_event(
        {
            "idempotency_key": key,
            "type": "stock",
            "account_id": account,
            "time": time,
            "data": {"product_id": "GTX Pro", "on_hand": on_hand},
        },
        "USD",
    )


def rec(rec_id: str = "rec_1", rule_id: str = "low-stock-in-play") -> dict:
    signal = {"type": "low_stock", "value": 3.0, "unit": "units", "direction": -1}
    return {
        "recommendation_id": rec_id,
        "rule_id": rule_id,
        "priority": "high",
        "action": "Secure an allocation",
        "why": "low_stock: 3 units",
        "signals": [{**signal, "summary": "GTX Pro: 3 units", "product_id": "GTX Pro"}],
    }


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "copilot.sqlite3")


def test_same_key_same_body_is_a_duplicate_and_another_body_a_conflict(store: EventStore) -> None:
    event = stock_event("wms-1", 3)
    first, dup = store.add_event(event, body_hash(event))
    again, dup_again = store.add_event(event, body_hash(event))
    assert (dup, dup_again) == (False, True)
    assert again.event_id == first.event_id and again.duplicate
    assert store.counts() == {"pending": 1, "alerts": 0}

    changed = stock_event("wms-1", 4)
    with pytest.raises(KeyConflictError, match=r"idempotency_key 'wms-1' was already used"):
        store.add_event(changed, body_hash(changed))
    assert store.counts() == {"pending": 1, "alerts": 0}


def test_pending_events_survive_reopening_the_file_in_order(tmp_path: Path) -> None:
    path = tmp_path / "copilot.sqlite3"
    first = EventStore(path)
    for i in range(3):
        event = stock_event(f"k{i}", i)
        first.add_event(event, body_hash(event))
    first.engine.dispose()

    reopened = EventStore(path)
    pending = reopened.pending()
    assert [p.event.idempotency_key for p in pending] == ["k0", "k1", "k2"]
    assert pending[2].event.data["on_hand"] == 2


def test_a_recommendation_is_alerted_once_within_its_cooldown(store: EventStore) -> None:
    hooks = [
        WebhookTarget(url="http://127.0.0.1:9/all"),
        WebhookTarget(url="http://127.0.0.1:9/other", webhook_id="whk_1", account_id="globex"),
    ]
    infos = []
    for key in ("a", "b"):
        event = stock_event(key, 3)
        info, _ = store.add_event(event, body_hash(event))
        infos.append(info)

    [(alert, deliveries)] = store.finish(
        1,
        "applied",
        {"stock": {"inserted": 1}},
        signals=[],
        recommendations=[rec()],
        webhooks=hooks,
    )
    # Only the hook without an account filter wants acme's alert.
    assert [d.target for d in deliveries] == ["http://127.0.0.1:9/all"]
    assert deliveries[0].status == "pending"

    again = store.finish(
        2, "applied", {"stock": {"updated": 1}}, signals=[], recommendations=[rec()]
    )
    assert again == []
    second = store.event(infos[1].event_id)
    assert second.status == "applied"
    assert [(r.alert_id, r.alerted) for r in second.recommendations] == [(alert.alert_id, False)]
    assert second.alerts == []
    assert store.event(infos[0].event_id).alerts == [alert.alert_id]


def test_the_rule_cooldown_overrides_the_default(store: EventStore) -> None:
    for key in ("a", "b"):
        event = stock_event(key, 3)
        store.add_event(event, body_hash(event))
    cooldowns = {"": timedelta(hours=24), "low-stock-in-play": timedelta(0)}
    assert len(store.finish(1, "applied", {}, recommendations=[rec()], cooldown=cooldowns)) == 1
    # A zero cooldown for this rule: the same recommendation alerts again.
    assert len(store.finish(2, "applied", {}, recommendations=[rec()], cooldown=cooldowns)) == 1


def test_chain_runs_from_event_to_rep_action(store: EventStore) -> None:
    event = stock_event("wms-9", 3)
    info, _ = store.add_event(event, body_hash(event))
    snapshot = [{"type": "low_stock", "value": 3.0}, {"type": "no_activity", "value": 40.0}]
    [(alert, [delivery])] = store.finish(
        1,
        "applied",
        {"stock": {"inserted": 1}},
        signals=snapshot,
        recommendations=[rec("rec_9")],
        webhooks=[WebhookTarget(url="http://127.0.0.1:9/hook")],
    )
    store.update_delivery(delivery.delivery_id, attempts=2, status="delivered")
    store.add_deliveries(
        [(alert.alert_id, "sse", "sse-1", "delivered", "2024-03-02T00:00:01+00:00")]
    )
    store.add_action(alert.alert_id, "accepted", "dana", "calling the buyer")

    chain = store.chain(alert.alert_id)
    assert chain.event.event_id == info.event_id and chain.event.data["on_hand"] == 3
    assert [s["type"] for s in chain.signals] == ["low_stock", "no_activity"]
    assert chain.rule["rule_id"] == "low-stock-in-play"
    assert chain.rule["signals"][0]["type"] == "low_stock"
    assert chain.recommendation["recommendation_id"] == "rec_9"
    assert [(d.channel, d.status, d.attempts) for d in chain.deliveries] == [
        ("webhook", "delivered", 2),
        ("sse", "delivered", 1),
    ]
    assert chain.deliveries[0].delivered_at is not None
    assert [(a.action, a.actor, a.note) for a in chain.actions] == [
        ("accepted", "dana", "calling the buyer")
    ]
    assert store.pending_deliveries() == []


def test_unknown_ids_name_what_to_use(store: EventStore) -> None:
    with pytest.raises(NotFoundError, match="event 'evt_x' is not stored"):
        store.event("evt_x")
    with pytest.raises(NotFoundError, match="alert 'alr_x' is not stored; list the alerts"):
        store.add_action("alr_x", "done", "dana", None)


def test_alerts_newest_first_or_after_one_oldest_first(store: EventStore) -> None:
    ids = []
    for i, account in enumerate(["acme", "globex", "acme"]):
        event = stock_event(f"k{i}", 3, account=account)
        store.add_event(event, body_hash(event))
        [(alert, _)] = store.finish(i + 1, "applied", {}, recommendations=[rec(f"rec_{i}")])
        ids.append(alert.alert_id)
    assert [a.alert_id for a in store.alerts()] == ids[::-1]
    assert [a.alert_id for a in store.alerts("acme")] == [ids[2], ids[0]]
    after = store.alert_seq(ids[0])
    assert [a.alert_id for a in store.alerts(after_seq=after)] == ids[1:]
