"""Experiments, feedback, outcomes and the decision log through the real ``create_app``:
who may do what, the statistics a manager reads, and the CSV export."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from copilot.context import Account
from serve.service import CopilotService
from tests.copilot.test_experiments import damage_weights
from tests.serve.conftest import bearer

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
TWO = {"name": "价格回复 price replies", "variants": [{"name": "control"}, {"name": "b"}]}
HOSTILE = '=HYPERLINK("http://evil.example","点我")'


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return body["error"]["message"]


@pytest.fixture
def service(service: CopilotService) -> CopilotService:
    service.accounts.store.upsert(
        [
            Account(time=T0, account_id="华信医疗", name="华信医疗", team="East"),
            Account(time=T0, account_id="Acme", name="Acme", team="West"),
        ]
    )
    return service


@pytest.fixture
def headers(service: CopilotService) -> dict[str, dict[str, str]]:
    return {
        "rep_east": bearer(service, "rep", team="East", name="rep-wang"),
        "rep_east_2": bearer(service, "rep", team="East", name="rep-li"),
        "rep_west": bearer(service, "rep", team="West", name="rep-smith"),
        "manager": bearer(service, "manager", name="maria"),
        "manager_west": bearer(service, "manager", team="West", name="wes"),
        "admin": bearer(service, "admin", name="root"),
    }


def suggest(service: CopilotService, rep: str, team: str, **kw) -> str:
    return service.decisions.record_suggestion(
        kw.pop("kind", "objection"),
        rep_id=rep,
        team=team,
        account_id=kw.pop("account_id", "华信医疗" if team == "East" else "Acme"),
        model=kw.pop("model", "base"),
        input_text=kw.pop("input_text", "太贵了"),
        proposed=kw.pop("proposed", "我们包含三年维保。"),
        citations=["call-1"],
        at=kw.pop("at", T0),
        **kw,
    )


# --- access control -----------------------------------------------------------------------

EXPERIMENT_ROUTES = [
    ("post", "/v1/experiments", TWO),
    ("get", "/v1/experiments", None),
    ("get", "/v1/experiments/{id}", None),
    ("post", "/v1/experiments/{id}/stop", None),
    ("get", "/v1/experiments/{id}/results", None),
]


@pytest.mark.parametrize(("method", "path", "body"), EXPERIMENT_ROUTES)
def test_reps_are_refused_every_experiment_route(
    client: TestClient, headers, method, path, body
) -> None:
    exp = client.post("/v1/experiments", json=TWO, headers=headers["manager"]).json()
    url = path.format(id=exp["id"])
    kwargs = {"json": body} if body is not None else {}

    refused = client.request(method, url, headers=headers["rep_east"], **kwargs)
    message = assert_error(refused, 403, "forbidden")
    assert "needs a manager key; a rep key cannot do it" in message

    no_key = TestClient(client.app, raise_server_exceptions=False)
    assert "no API key" in assert_error(no_key.request(method, url, **kwargs), 401, "unauthorized")
    # The experiment is untouched by the refused calls.
    assert client.get(f"/v1/experiments/{exp['id']}").json()["status"] == "running"


def test_feedback_outcomes_and_decisions_need_a_key(client: TestClient) -> None:
    anonymous = TestClient(client.app, raise_server_exceptions=False)
    for method, url, body in [
        ("post", "/v1/feedback", {"suggestion_id": "x", "action": "accepted"}),
        ("post", "/v1/outcomes", {"account_id": "Acme", "result": "won"}),
        ("get", "/v1/decisions", None),
    ]:
        kwargs = {"json": body} if body is not None else {}
        assert_error(anonymous.request(method, url, **kwargs), 401, "unauthorized")


# --- experiments ---------------------------------------------------------------------------


def test_manager_creates_lists_reads_stops_an_experiment(
    client: TestClient, service: CopilotService, headers
) -> None:
    manager = headers["manager"]
    service.prompts.save("default", "先说价值，再谈价格。")
    service.prompts.save("default", "先说价值，再谈价格；回答不超过三句。")
    created = client.post(
        "/v1/experiments",
        json={
            "name": "price replies",
            "variants": [
                {"name": "control", "adapter": "base", "weight": 1},
                {"name": "short", "prompt_version": "default@2", "weight": 3},
            ],
            "control": "control",
        },
        headers=manager,
    )
    assert created.status_code == 201, created.text
    exp = created.json()
    assert exp["status"] == "running" and exp["created_by"] == "maria"
    assert [
        (v["name"], v["adapter"], v["prompt_version"], v["weight"]) for v in exp["variants"]
    ] == [
        ("control", "base", None, 0.25),
        ("short", None, "default@2", 0.75),
    ]
    assert client.get(f"/v1/experiments/{exp['id']}", headers=manager).json() == exp
    assert [
        e["id"] for e in client.get("/v1/experiments", headers=manager).json()["experiments"]
    ] == [exp["id"]]

    message = assert_error(
        client.post("/v1/experiments", json=TWO, headers=manager), 409, "bad_state"
    )
    assert f"stop it first (POST /v1/experiments/{exp['id']}/stop)" in message

    stopped = client.post(f"/v1/experiments/{exp['id']}/stop", headers=manager)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert_error(
        client.post(f"/v1/experiments/{exp['id']}/stop", headers=manager), 409, "bad_state"
    )
    assert client.post("/v1/experiments", json=TWO, headers=manager).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"name": "x", "variants": [{"name": "a"}, {"name": "a"}]}, 400, "repeated: a"),
        (
            {"name": "x", "variants": [{"name": "a"}, {"name": "b", "adapter": "nope"}]},
            400,
            "adapter 'nope', which is not registered",
        ),
        ({"name": "x", "variants": [{"name": "a"}, {"name": "b"}], "control": "c"}, 400, "control"),
        (
            {"name": "x", "variants": [{"name": "a"}, {"name": "b", "prompt_version": "sales@9"}]},
            400,
            "variant 'b' prompt_version: no prompt version 'sales@9'",
        ),
        (
            {"name": "x", "variants": [{"name": "a"}, {"name": "b", "prompt_version": "sales"}]},
            400,
            "is not of the form name@N",
        ),
        ({"name": "x", "variants": [{"name": "a"}]}, 422, "variants"),
        ({"name": "x", "variants": [{"name": "a"}, {"name": "b", "weight": 0}]}, 422, "weight"),
        ({"name": "x", "variants": [{"name": "a"}, {"name": "b", "wieght": 2}]}, 422, "wieght"),
        (
            {
                "name": "x",
                "variants": [{"name": "a", "weight": 1e308}, {"name": "b", "weight": 1e308}],
            },
            400,
            "variants' weight: the weights (a 1e+308, b 1e+308) sum to inf",
        ),
        (
            {
                "name": "x",
                "variants": [{"name": "a", "weight": 5e-324}, {"name": "b", "weight": 1e300}],
            },
            400,
            "the weight of 'a' gets a share of 0 of the reps; give weights on a small common scale",
        ),
    ],
)
def test_bad_experiments_get_a_clear_error(client: TestClient, body, status, fragment) -> None:
    code = "bad_input" if status == 400 else "invalid_request"
    assert fragment in assert_error(client.post("/v1/experiments", json=body), status, code)
    assert client.get("/v1/experiments").json() == {"experiments": []}


def test_results_of_stored_zero_weights_are_200_with_a_warning(
    client: TestClient, service: CopilotService
) -> None:
    experiment_id = client.post("/v1/experiments", json=TWO).json()["id"]
    damage_weights(service.experiments, experiment_id, [0.0, 0.0])
    suggest(service, "rep-wang", "East", experiment_id=experiment_id, variant="control")

    response = client.get(f"/v1/experiments/{experiment_id}/results")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["srm"] is None
    assert any(
        w.startswith("the stored weights (control 0, b 0) are unusable") for w in body["warnings"]
    )


def test_unknown_experiment_is_404(client: TestClient) -> None:
    assert "no experiment 'nope'" in assert_error(
        client.get("/v1/experiments/nope"), 404, "not_found"
    )
    assert_error(client.get("/v1/experiments/nope/results"), 404, "not_found")


def test_assignment_is_stable_across_many_reps_and_a_restart(
    client: TestClient, service: CopilotService
) -> None:
    body = {"name": "split", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 4}]}
    exp_id = client.post("/v1/experiments", json=body).json()["id"]
    reps = [f"rep-{i}" for i in range(1000)]
    first = {rep: service.experiments.assign(exp_id, rep).name for rep in reps}
    counts = Counter(first.values())
    # 20 % of 1000: sd = sqrt(1000 * 0.2 * 0.8) = 12.6; 200 +- 51 is 4 sd.
    assert abs(counts["a"] - 200) < 51, counts

    restarted = CopilotService(service.settings)
    assert {rep: restarted.experiments.assign(exp_id, rep).name for rep in reps} == first


def test_results_show_the_statistics_warnings_and_daily_series(
    client: TestClient, service: CopilotService, headers
) -> None:
    exp = client.post("/v1/experiments", json=TWO, headers=headers["manager"]).json()
    sids = {}
    for variant, rep in [("control", "rep-wang"), ("b", "rep-li")]:
        for day in range(3):
            sids[(variant, day)] = suggest(
                service,
                rep,
                "East",
                experiment_id=exp["id"],
                variant=variant,
                at=T0 + timedelta(days=day),
            )
    rep_headers = {"rep-wang": headers["rep_east"], "rep-li": headers["rep_east_2"]}
    for (variant, day), sid in sids.items():
        rep = "rep-wang" if variant == "control" else "rep-li"
        action = {"control": "rejected", "b": "accepted"}[variant] if day < 2 else None
        if action:
            body = {
                "suggestion_id": sid,
                "action": action,
                "reason": "太长" if action == "rejected" else None,
            }
            assert (
                client.post("/v1/feedback", json=body, headers=rep_headers[rep]).status_code == 201
            )

    results = client.get(f"/v1/experiments/{exp['id']}/results", headers=headers["manager"])
    assert results.status_code == 200, results.text
    body = results.json()
    control, b = body["variants"]
    assert (control["name"], control["exposures"], control["conversions"]) == ("control", 3, 0)
    assert (b["name"], b["exposures"], b["conversions"], b["no_feedback"]) == ("b", 3, 2, 1)
    assert b["conversion_rate"] == pytest.approx(2 / 3)
    assert b["test"] == "fisher" and 0 < b["p_value"] <= 1
    assert 0.5 < b["prob_beats_control"] < 1
    assert b["conversion_ci"][0] < 2 / 3 < b["conversion_ci"][1]
    assert body["srm"] == {
        "unit": "reps",
        "observed": {"control": 1, "b": 1},
        "expected": {"control": 1.0, "b": 1.0},
        "statistic": 0.0,
        "p_value": 1.0,
        "mismatch": False,
    }
    assert any("too little data in variant 'b'" in w for w in body["warnings"])
    assert [(d["variant"], d["date"], d["cumulative_conversions"]) for d in body["daily"]] == [
        ("control", "2025-03-03", 0),
        ("control", "2025-03-04", 0),
        ("control", "2025-03-05", 0),
        ("b", "2025-03-03", 1),
        ("b", "2025-03-04", 2),
        ("b", "2025-03-05", 2),
    ]
    assert "Wilson" in body["methods"]["interval"]


# --- feedback ------------------------------------------------------------------------------


def test_a_rep_answers_only_their_own_suggestions(
    client: TestClient, service: CopilotService, headers
) -> None:
    sid = suggest(service, "rep-wang", "East")

    other = client.post(
        "/v1/feedback",
        json={"suggestion_id": sid, "action": "accepted"},
        headers=headers["rep_east_2"],
    )
    assert "was shown to another rep" in assert_error(other, 403, "forbidden")
    as_manager = client.post(
        "/v1/feedback",
        json={"suggestion_id": sid, "action": "accepted"},
        headers=headers["manager"],
    )
    assert_error(as_manager, 403, "forbidden")

    edited = client.post(
        "/v1/feedback", json={"suggestion_id": sid, "action": "edited"}, headers=headers["rep_east"]
    )
    assert "needs 'text'" in assert_error(edited, 400, "bad_input")
    missing = client.post(
        "/v1/feedback",
        json={"suggestion_id": "nope", "action": "accepted"},
        headers=headers["rep_east"],
    )
    assert_error(missing, 404, "not_found")
    typo = client.post(
        "/v1/feedback", json={"suggestion_id": sid, "action": "liked"}, headers=headers["rep_east"]
    )
    assert_error(typo, 422, "invalid_request")

    first = client.post(
        "/v1/feedback",
        json={"suggestion_id": sid, "action": "accepted"},
        headers=headers["rep_east"],
    )
    assert first.status_code == 201 and first.json()["replaced"] is None
    second = client.post(
        "/v1/feedback",
        json={"suggestion_id": sid, "action": "edited", "text": "改成：含三年维保和培训"},
        headers=headers["rep_east"],
    )
    assert second.status_code == 201
    assert (second.json()["by_rep"], second.json()["replaced"]) == ("rep-wang", "accepted")
    [row] = service.decisions.query()
    assert (row.action, row.edited_text) == ("edited", "改成：含三年维保和培训")


# --- outcomes ------------------------------------------------------------------------------


def test_outcomes_on_own_team_accounts_only(
    client: TestClient, service: CopilotService, headers
) -> None:
    suggest(service, "rep-wang", "East", at=datetime.now(UTC) - timedelta(days=1))

    ok = client.post(
        "/v1/outcomes",
        json={"account_id": "华信医疗", "result": "won", "deal_id": "D-9"},
        headers=headers["rep_east"],
    )
    assert ok.status_code == 201, ok.text
    assert (ok.json()["result"], ok.json()["deal_id"], ok.json()["attributed"]) == ("won", "D-9", 1)
    assert service.decisions.query()[0].deal_result == "won"

    other_team = client.post(
        "/v1/outcomes", json={"account_id": "Acme", "result": "lost"}, headers=headers["rep_east"]
    )
    assert "account 'Acme' is not among the accounts of team 'East'" in assert_error(
        other_team, 403, "forbidden"
    )
    manager_west = client.post(
        "/v1/outcomes",
        json={"account_id": "华信医疗", "result": "lost"},
        headers=headers["manager_west"],
    )
    assert_error(manager_west, 403, "forbidden")
    # A key kept to a team cannot tell an unknown account from another team's; an admin can.
    unknown = client.post(
        "/v1/outcomes",
        json={"account_id": "Nobody Inc", "result": "won"},
        headers=headers["rep_east"],
    )
    assert "account 'Nobody Inc' is not among" in assert_error(unknown, 403, "forbidden")
    unknown = client.post(
        "/v1/outcomes", json={"account_id": "Nobody Inc", "result": "won"}, headers=headers["admin"]
    )
    assert "no account 'Nobody Inc'" in assert_error(unknown, 404, "not_found")
    bad = client.post(
        "/v1/outcomes", json={"account_id": "Acme", "result": "draw"}, headers=headers["admin"]
    )
    assert_error(bad, 422, "invalid_request")
    for number in (1800, "1800"):
        # A bare number would be read as Unix seconds (1970); it is refused, not guessed.
        unix = client.post(
            "/v1/outcomes",
            json={"account_id": "Acme", "result": "won", "at": number},
            headers=headers["admin"],
        )
        assert unix.status_code == 422, unix.text
    admin = client.post(
        "/v1/outcomes",
        json={"account_id": "Acme", "result": "lost", "at": "2025-03-10T12:00:00Z"},
        headers=headers["admin"],
    )
    assert admin.status_code == 201 and admin.json()["at"] == "2025-03-10T12:00:00.000000Z"


def test_an_outcome_in_an_implausible_year_is_refused(client: TestClient) -> None:
    body = {"account_id": "Acme", "result": "won", "at": "1800-01-01T00:00:00Z"}
    message = assert_error(client.post("/v1/outcomes", json=body), 422, "invalid_request")
    assert message.startswith("body.at: year 1800 is outside 1900-2200; check the date")
    body["at"] = "1900-01-01T00:00:00Z"
    assert client.post("/v1/outcomes", json=body).status_code == 201


# --- the decision log ----------------------------------------------------------------------


def test_reps_read_only_their_teams_decisions(
    client: TestClient, service: CopilotService, headers
) -> None:
    east = suggest(service, "rep-wang", "East", at=T0)
    east_2 = suggest(service, "rep-li", "East", at=T0 + timedelta(hours=1), kind="chat")
    west = suggest(service, "rep-smith", "West", at=T0 + timedelta(hours=2))

    def ids(response) -> list[str]:
        assert response.status_code == 200, response.text
        return [d["suggestion_id"] for d in response.json()["decisions"]]

    assert ids(client.get("/v1/decisions", headers=headers["rep_east"])) == [east_2, east]
    assert ids(client.get("/v1/decisions", headers=headers["rep_west"])) == [west]
    assert ids(client.get("/v1/decisions", headers=headers["manager_west"])) == [west]
    assert ids(client.get("/v1/decisions", headers=headers["admin"])) == [west, east_2, east]
    assert ids(client.get("/v1/decisions?team=East", headers=headers["manager"])) == [east_2, east]

    refused = client.get("/v1/decisions?team=West", headers=headers["rep_east"])
    assert "team 'West' belongs to another team" in assert_error(refused, 403, "forbidden")

    filtered = client.get(
        "/v1/decisions?rep=rep-li&kind=chat&action=none&limit=5", headers=headers["rep_east"]
    )
    assert ids(filtered) == [east_2]
    assert filtered.json()["limit"] == 5 and filtered.json()["count"] == 1
    bad = client.get("/v1/decisions?action=maybe", headers=headers["rep_east"])
    assert "action 'maybe' is unknown" in assert_error(bad, 400, "bad_input")


def test_csv_export_neutralises_formula_cells(
    client: TestClient, service: CopilotService, headers
) -> None:
    sid = suggest(service, "rep-wang", "East", input_text=HOSTILE, proposed="@SUM(A1:A9) 优惠")
    client.post(
        "/v1/feedback",
        json={"suggestion_id": sid, "action": "edited", "text": "-1+2 折扣"},
        headers=headers["rep_east"],
    )
    suggest(service, "rep-smith", "West", input_text="=cmd|' /C calc'!A0")

    response = client.get("/v1/decisions", headers={**headers["rep_east"], "Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="decisions.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    assert len(rows) == 1  # the West row stays out of an East rep's export
    [row] = rows
    assert row["suggestion_id"] == sid
    assert row["input_text"] == "'" + HOSTILE
    assert row["proposed"] == "'@SUM(A1:A9) 优惠"
    assert row["edited_text"] == "'-1+2 折扣"
    assert (row["action"], row["team"], row["account_id"], row["citations"]) == (
        "edited",
        "East",
        "华信医疗",
        "call-1",
    )


def test_every_new_route_is_in_the_openapi_page(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/v1/experiments",
        "/v1/experiments/{experiment_id}",
        "/v1/experiments/{experiment_id}/stop",
        "/v1/experiments/{experiment_id}/results",
        "/v1/feedback",
        "/v1/outcomes",
        "/v1/decisions",
    ]:
        assert path in paths
