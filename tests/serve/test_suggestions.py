"""Recommendations and quotes go into the decision log; the rep's feedback comes back to them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from copilot.settings import load_settings
from serve.api.app import create_app
from serve.service import CopilotService
from tests.conftest import REPO
from tests.serve.conftest import bearer

SAMPLE_ACCOUNTS = REPO / "data" / "sample" / "accounts"
ACME = "Acme Corporation"  # team East in the sample
QUOTE = {"items": [{"product_id": "GTX Pro", "quantity": 20}], "talking_points": False}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> CopilotService:
    service = CopilotService(load_settings(data_dir=tmp_path_factory.mktemp("sugg") / "data"))
    service.accounts.import_paths([SAMPLE_ACCOUNTS])
    return service


@pytest.fixture(scope="module")
def api(service: CopilotService) -> Iterator[TestClient]:
    with TestClient(create_app(service, with_ui=False), raise_server_exceptions=False) as client:
        yield client


def test_each_recommendation_is_logged_and_the_reps_answer_reaches_the_log(
    api: TestClient, service: CopilotService
) -> None:
    dana = bearer(service, "rep", team="East", name="dana")
    body = api.get(f"/v1/accounts/{ACME}/recommendations", headers=dana).json()
    recommendations = body["recommendations"]
    assert recommendations, "the sample gives Acme recommendations"
    ids = body["suggestion_ids"]
    assert set(ids) == {r["recommendation_id"] for r in recommendations}

    first = recommendations[0]
    sid = ids[first["recommendation_id"]]
    answer = api.post(
        "/v1/feedback",
        json={"suggestion_id": sid, "action": "rejected", "reason": "采购负责人下周才回来"},
        headers=dana,
    )
    assert answer.status_code == 201, answer.text

    log = api.get("/v1/decisions", params={"kind": "recommendation"}, headers=dana).json()
    row = next(d for d in log["decisions"] if d["suggestion_id"] == sid)
    assert row["proposed"] == first["action"]
    assert row["input_text"] == first["rule_id"]
    assert (row["action"], row["reason"], row["rep_id"], row["team"]) == (
        "rejected",
        "采购负责人下周才回来",
        "dana",
        "East",
    )


def test_three_quote_strategies_are_three_suggestions_and_another_team_never_sees_them(
    api: TestClient, service: CopilotService
) -> None:
    dana = bearer(service, "rep", team="East", name="dana-q")
    quote = api.post(f"/v1/accounts/{ACME}/quote-strategies", json=QUOTE, headers=dana).json()
    names = [s["name"] for s in quote["strategies"]]
    assert sorted(quote["suggestion_ids"]) == sorted(names) and len(names) == 3

    mine = api.get("/v1/decisions", params={"kind": "quote"}, headers=dana).json()["decisions"]
    logged = {d["suggestion_id"]: d for d in mine}
    for strategy in quote["strategies"]:
        row = logged[quote["suggestion_ids"][strategy["name"]]]
        assert row["input_text"] == "20 x GTX Pro"
        assert row["proposed"].startswith(strategy["title"])

    west = bearer(service, "rep", team="West", name="wen")
    theirs = api.get("/v1/decisions", headers=west).json()["decisions"]
    assert not set(quote["suggestion_ids"].values()) & {d["suggestion_id"] for d in theirs}
    # Nor may another rep answer a suggestion shown to dana.
    sid = quote["suggestion_ids"][names[0]]
    refused = api.post(
        "/v1/feedback", json={"suggestion_id": sid, "action": "accepted"}, headers=west
    )
    assert refused.status_code == 403, refused.text
