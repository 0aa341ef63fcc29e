"""The account routes and one event's way to an alert, through the real ``create_app``.

Each test builds the app over a throw-away data dir holding the bundled sample
(data/sample/accounts, clock 2018-01-08T09:00Z) and a copy of configs/rules.yaml,
and enters the TestClient, so the lifespan runs the event worker. Scores and quotes
run on the sample alone (its 88 closed deals fit the win model) and again over the
real CRM with the sample on top (real_data).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copilot.rules import file_version
from copilot.settings import load_settings
from serve.api.app import create_app
from serve.service import CopilotService
from tests.conftest import REPO
from tests.serve.conftest import bearer
from tests.serve.test_accounts_cli import (
    CRM,
    SAMPLE_ACCOUNTS,
    assert_within_limits,
    require_crm,
    signal_values,
)

ACME = "/v1/accounts/Acme Corporation"
HUAXIN = "华信医疗"
NO_TALKING_POINTS = {"talking_points": False}  # no language model in these tests


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return body["error"]["message"]


def quote_body(product: str = "GTX Pro", quantity: int = 20, **extra: Any) -> dict:
    return {"items": [{"product_id": product, "quantity": quantity}], **NO_TALKING_POINTS, **extra}


def service_over(root: Path, rules: Path, *imports: Path) -> CopilotService:
    config = root / "config.yaml"
    config.write_text(f"rules:\n  path: {json.dumps(str(rules))}\n", encoding="utf-8")
    service = CopilotService(load_settings(config_file=config, data_dir=root / "data"))
    service.accounts.import_paths(list(imports))
    return service


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """A copy of the shipped rules that a test may edit."""
    return Path(shutil.copy(REPO / "configs" / "rules.yaml", tmp_path / "rules.yaml"))


@pytest.fixture
def api(tmp_path: Path, rules_file: Path) -> Iterator[TestClient]:
    service = service_over(tmp_path, rules_file, SAMPLE_ACCOUNTS)
    # Entering the client runs the lifespan, which starts the event worker.
    with TestClient(
        create_app(service, with_ui=False), raise_server_exceptions=False, headers=bearer(service)
    ) as client:
        yield client


def wait_processed(api: TestClient, event_id: str, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = api.get(f"/v1/events/{event_id}").json()
        if body["status"] != "pending":
            return body
        assert time.monotonic() < deadline, f"event {event_id} still pending after {timeout_s} s"
        time.sleep(0.02)


# --- reading an account (the sample, no model) -------------------------------------------


def test_the_app_serves_the_account_event_and_alert_routes(api: TestClient) -> None:
    paths = set(api.get("/openapi.json").json()["paths"])
    assert {
        "/v1/accounts/{account_id}/signals",
        "/v1/accounts/{account_id}/score",
        "/v1/accounts/{account_id}/recommendations",
        "/v1/accounts/{account_id}/quote-strategies",
        "/v1/events",
        "/v1/events/{event_id}",
        "/v1/alerts",
        "/v1/alerts/{alert_id}",
    } <= paths


def test_acme_signals_at_the_sample_clock(api: TestClient) -> None:
    response = api.get(f"{ACME}/signals")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["account_id"], body["as_of"]) == ("Acme Corporation", "2018-01-08T09:00:00+00:00")
    by_type = {s["type"]: s for s in body["signals"]}
    assert set(by_type) == {
        "tender_countdown",
        "budget_window_closing",
        "competitor_price_below",
        "procurement_lead_changed",
        "low_stock",
        "purchase_rhythm_overdue",
        "high_stock",
    }
    tender = by_type["tender_countdown"]
    assert (tender["value"], tender["unit"]) == (32.0, "hours")
    assert tender["evidence"][0]["ref"] == "T-ACME-2018-01"
    assert (by_type["low_stock"]["value"], by_type["low_stock"]["product_id"]) == (6.0, "GTX Pro")
    competitor = by_type["competitor_price_below"]
    assert (competitor["value"], competitor["product_id"]) == (0.12, "GTX Pro")
    assert "Vertex Systems" in competitor["summary"]
    assert "Ravi Menon" in by_type["procurement_lead_changed"]["summary"]


def test_signals_at_a_given_time(api: TestClient) -> None:
    later = api.get(f"{ACME}/signals", params={"as_of": "2018-01-09T09:00:00Z"})
    assert later.status_code == 200, later.text
    assert signal_values(later.json()["signals"])["tender_countdown"] == [8.0]

    message = assert_error(
        api.get(f"{ACME}/signals", params={"as_of": "next week"}), 422, "invalid_request"
    )
    assert message.startswith("query.as_of:")


def test_acme_recommendations_brief_the_new_lead(api: TestClient, rules_file: Path) -> None:
    response = api.get(f"{ACME}/recommendations")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rules_error"] is None
    assert body["rules_version"] == file_version(rules_file.read_bytes())
    first = body["recommendations"][0]
    assert (first["rule_id"], first["priority"], first["owner"], first["due"]) == (
        "tender-budget-new-lead",
        "critical",
        "Mara Quinlan",
        "2018-01-08T17:00:00Z",
    )
    assert "brief the new procurement lead, Ravi Menon" in first["action"]
    assert [r["rule_id"] for r in body["recommendations"]] == [
        "tender-budget-new-lead",
        "low-stock-in-play",
        "reorder-check-in",
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "signals"),
        ("GET", "score"),
        ("GET", "recommendations"),
        ("POST", "quote-strategies"),
    ],
)
def test_an_unknown_account_is_404_naming_it(api: TestClient, method: str, path: str) -> None:
    body = quote_body() if method == "POST" else None
    response = api.request(method, f"/v1/accounts/Nope Inc/{path}", json=body)

    message = assert_error(response, 404, "not_found")
    assert message.startswith("no account 'Nope Inc' is stored")
    assert "copilot accounts import" in message


def test_quote_for_an_unknown_product_is_404_naming_it(api: TestClient) -> None:
    response = api.post(f"{ACME}/quote-strategies", json=quote_body("GTX Ultra"))

    message = assert_error(response, 404, "not_found")
    assert message.startswith("unknown product 'GTX Ultra'; known products: GTK 500, GTX Basic")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (quote_body(quantity=0), "body.items.0.quantity"),
        (quote_body(discount=0.1), "body.discount"),
        ({"items": [], **NO_TALKING_POINTS}, "body.items"),
        ({"items": [{"product": "GTX Pro", "quantity": 2}]}, "body.items.0.product_id"),
    ],
)
def test_a_bad_quote_request_is_422_naming_the_field(
    api: TestClient, body: dict, field: str
) -> None:
    response = api.post(f"{ACME}/quote-strategies", json=body)

    assert field in assert_error(response, 422, "invalid_request")


def test_without_deal_history_score_and_quote_say_what_to_import(
    tmp_path: Path, rules_file: Path
) -> None:
    # Accounts and prices but no sales pipeline: nothing to fit the win model on.
    folder = tmp_path / "no-deals"
    folder.mkdir()
    for name in ("accounts.csv", "products.csv", "prices.csv", "stock.csv"):
        shutil.copy(SAMPLE_ACCOUNTS / name, folder / name)
    service = service_over(tmp_path, rules_file, folder)

    with TestClient(
        create_app(service, with_ui=False), raise_server_exceptions=False, headers=bearer(service)
    ) as api:
        score = api.get(f"{ACME}/score")
        quote = api.post(f"{ACME}/quote-strategies", json=quote_body())

    for response in (score, quote):
        message = assert_error(response, 409, "bad_state")
        assert "the win model needs at least 60 closed" in message
        assert "import the CRM history (sales_pipeline.csv)" in message


# --- one event through the real app ---------------------------------------------------


def test_a_stock_event_becomes_an_alert_with_its_chain(api: TestClient) -> None:
    before = api.get(f"/v1/accounts/{HUAXIN}/recommendations").json()["recommendations"]
    assert "low-stock-in-play" not in {r["rule_id"] for r in before}
    # MG Advanced is in 华信医疗's tender and open deals; the warehouse now holds 2.
    stock_event = {
        "idempotency_key": "wms-mg-advanced-1",
        "type": "stock",
        "account_id": HUAXIN,
        "time": "2018-01-08T10:00:00Z",
        "data": {"product_id": "MG Advanced", "on_hand": 2},
    }

    accepted = api.post("/v1/events", json=stock_event)

    assert accepted.status_code == 202, accepted.text
    event_id = accepted.json()["event_id"]
    assert accepted.json()["duplicate"] is False
    event = wait_processed(api, event_id)
    assert event["status"] == "applied", event["error"]
    assert event["applied"] == {"stock": {"inserted": 0, "updated": 1, "unchanged": 0, "stale": 0}}
    assert {"type": "low_stock", "value": 2.0, "product_id": "MG Advanced"}.items() <= next(
        s for s in event["signals"] if s["type"] == "low_stock"
    ).items()
    (low_stock,) = [r for r in event["recommendations"] if r["rule_id"] == "low-stock-in-play"]
    assert low_stock["alerted"] is True and low_stock["alert_id"]

    alerts = api.get("/v1/alerts", params={"account_id": HUAXIN}).json()
    assert low_stock["alert_id"] in {a["alert_id"] for a in alerts}
    chain = api.get(f"/v1/alerts/{low_stock['alert_id']}").json()
    assert chain["alert"]["event_id"] == chain["event"]["event_id"] == event_id
    assert chain["event"]["idempotency_key"] == "wms-mg-advanced-1"
    assert chain["rule"]["rule_id"] == "low-stock-in-play"
    assert [s["type"] for s in chain["rule"]["signals"]] == ["low_stock"]

    # Asia's rep reads the alert and its event; East's gets the 404 of a missing one.
    service = api.app.state.service
    asia, east = bearer(service, "rep", team="Asia"), bearer(service, "rep", team="East")
    alert_path, event_path = f"/v1/alerts/{low_stock['alert_id']}", f"/v1/events/{event_id}"
    assert api.get(alert_path, headers=asia).status_code == 200
    assert api.get(event_path, headers=asia).status_code == 200
    for path, missing in ((alert_path, "/v1/alerts/alr_missing"), (event_path, "/v1/events/ev_x")):
        hidden, absent = api.get(path, headers=east), api.get(missing, headers=east)
        assert hidden.status_code == absent.status_code == 404, hidden.text
        stored_id, missing_id = path.rsplit("/", 1)[1], missing.rsplit("/", 1)[1]
        assert hidden.json()["error"]["message"].replace(stored_id, "ID") == absent.json()["error"][
            "message"
        ].replace(missing_id, "ID")
    acted = api.post(f"{alert_path}/actions", json={"action": "done"}, headers=east)
    assert acted.status_code == 404
    assert chain["recommendation"]["priority"] == "high"
    assert chain["recommendation"]["owner"] == "李娜"
    assert chain["recommendation"]["action"].startswith(
        f"Stock is short for {HUAXIN}'s open business: only 2 x MG Advanced available."
    )

    # The event moved the account's state (and the data clock) for every reader.
    after = api.get(f"/v1/accounts/{HUAXIN}/recommendations").json()["recommendations"]
    assert "low-stock-in-play" in {r["rule_id"] for r in after}
    assert api.get(f"/v1/accounts/{HUAXIN}/signals").json()["as_of"] == "2018-01-08T10:00:00+00:00"

    again = api.post("/v1/events", json=stock_event)
    assert again.status_code == 200, again.text
    assert (again.json()["event_id"], again.json()["duplicate"]) == (event_id, True)
    reused = {**stock_event, "data": {"product_id": "MG Advanced", "on_hand": 3}}
    assert_error(api.post("/v1/events", json=reused), 409, "idempotency_conflict")


# --- the rule file --------------------------------------------------------------------


def test_a_broken_rule_edit_keeps_the_rules_in_force(api: TestClient, rules_file: Path) -> None:
    good = api.get(f"{ACME}/recommendations").json()
    shipped = rules_file.read_text(encoding="utf-8")

    rules_file.write_text(shipped + "\n  - id: [unclosed\n", encoding="utf-8")
    broken = api.get(f"{ACME}/recommendations")

    assert broken.status_code == 200, broken.text
    body = broken.json()
    assert body["rules_version"] == good["rules_version"]
    assert body["recommendations"] == good["recommendations"]
    assert body["rules_error"].startswith(f"rule file {rules_file} was refused:")
    assert "not valid YAML" in body["rules_error"] and "line " in body["rules_error"]

    # A valid edit takes effect on the next request and clears the error.
    rules_file.write_text(shipped.replace("priority: critical", "priority: high", 1), "utf-8")
    edited = api.get(f"{ACME}/recommendations").json()

    assert edited["rules_error"] is None
    assert edited["rules_version"] == file_version(rules_file.read_bytes()) != good["rules_version"]
    assert (edited["recommendations"][0]["rule_id"], edited["recommendations"][0]["priority"]) == (
        "tender-budget-new-lead",
        "high",
    )


# --- scores and quotes over the real CRM ------------------------------------------------


@pytest.fixture(scope="module")
def crm_api(tmp_path_factory) -> Iterator[TestClient]:
    require_crm()
    root = tmp_path_factory.mktemp("accounts-api-crm")
    service = service_over(root, REPO / "configs" / "rules.yaml", CRM, SAMPLE_ACCOUNTS)
    with TestClient(
        create_app(service, with_ui=False), raise_server_exceptions=False, headers=bearer(service)
    ) as client:
        yield client


@pytest.mark.parametrize("client", ["api", pytest.param("crm_api", marks=pytest.mark.real_data)])
def test_acme_score_explains_itself(client: str, request: pytest.FixtureRequest) -> None:
    response = request.getfixturevalue(client).get(f"{ACME}/score")

    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["win_likelihood"] <= 1.0
    assert body["score"]["win_likelihood"] == body["win_likelihood"]
    assert body["score"]["account_id"] == "Acme Corporation"
    contributions = {c["name"]: c for c in body["score"]["contributions"]}
    tender = next(c for n, c in contributions.items() if n.startswith("tender T-ACME-2018-01"))
    # A stated prior, not learned from the CRM: +0.2 log-odds for a tender within reach.
    assert (tender["signal_type"], tender["learned"], tender["log_odds"]) == (
        "tender_countdown",
        False,
        0.2,
    )
    assert signal_values(body["signals"])["tender_countdown"] == [32.0]


@pytest.mark.parametrize("client", ["api", pytest.param("crm_api", marks=pytest.mark.real_data)])
def test_acme_quote_strategies_stay_within_floor_stock_and_budget(
    client: str, request: pytest.FixtureRequest
) -> None:
    response = request.getfixturevalue(client).post(
        f"{ACME}/quote-strategies", json=quote_body("GTX Pro", 20)
    )

    assert response.status_code == 200, response.text
    quote = response.json()
    assert quote["as_of"] == "2018-01-08T09:00:00+00:00"
    assert_within_limits(quote, "GTX Pro", 20)
    assert all(s["within_budget"] is True for s in quote["strategies"])
    assert quote["discount_curve"]["fitted"] is False
