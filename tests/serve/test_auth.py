"""Access control: hashed keys, roles and teams, and one test for each refusal.

The sample accounts belong to teams through their owners (data/sample/accounts):
Acme Corporation is East's, Isdom is West's and 华信医疗 is Asia's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from copilot.errors import StateError
from copilot.keys import KeyStore
from copilot.settings import load_settings
from serve.api.app import create_app
from serve.cli import app as cli_app
from serve.service import CopilotService
from tests.conftest import REPO
from tests.serve.conftest import bearer
from training.jobs import list_training_runs

SAMPLE_ACCOUNTS = REPO / "data" / "sample" / "accounts"
EAST, WEST, ASIA = "Acme Corporation", "Isdom", "华信医疗"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> CopilotService:
    root = tmp_path_factory.mktemp("auth")
    service = CopilotService(load_settings(data_dir=root / "data"))
    service.accounts.import_paths([SAMPLE_ACCOUNTS])
    return service


@pytest.fixture(scope="module")
def api(service: CopilotService) -> Iterator[TestClient]:
    # No default key: every request here says who it is.
    with TestClient(create_app(service, with_ui=False), raise_server_exceptions=False) as client:
        yield client


def assert_refused(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == {401: "unauthorized", 403: "forbidden", 400: "bad_request"}[status]
    for word in words:
        assert word in error["message"], error["message"]
    return error["message"]


# --- keys ----------------------------------------------------------------------------


def test_the_cli_prints_the_key_once_as_its_last_word_and_stores_only_its_hash(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        cli_app,
        ["--data-dir", str(data_dir), "keys", "create", "--role", "rep", "--team", "East"],
    )
    assert result.exit_code == 0, result.output
    key = result.output.split()[-1]
    assert key.startswith("cpk_") and len(key) > 40

    settings = load_settings(data_dir=data_dir)
    principal = KeyStore(settings.db_path).authenticate(key)
    assert (principal.role, principal.team) == ("rep", "East")

    # Neither the key nor its random part is anywhere in the database file.
    raw = settings.db_path.read_bytes()
    assert key.encode() not in raw and key[4:].encode() not in raw
    with sqlite3.connect(settings.db_path) as db:
        (stored,) = db.execute("SELECT key_hash FROM api_keys").fetchone()
    assert len(stored) == 64 and stored != key

    listed = CliRunner().invoke(cli_app, ["--data-dir", str(data_dir), "keys", "list"])
    assert "rep" in listed.output and "East" in listed.output and key not in listed.output


def test_a_rep_key_without_a_team_and_an_unknown_role_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    no_team = runner.invoke(
        cli_app, ["--data-dir", str(tmp_path), "keys", "create", "--role", "rep"]
    )
    assert no_team.exit_code == 1 and "--team" in no_team.output
    bad_role = runner.invoke(
        cli_app, ["--data-dir", str(tmp_path), "keys", "create", "--role", "boss"]
    )
    assert bad_role.exit_code == 1 and "rep, manager, admin" in bad_role.output


def test_requests_without_a_valid_key_are_refused(api: TestClient, service: CopilotService) -> None:
    path = f"/v1/accounts/{EAST}/signals"
    assert_refused(api.get(path), 401, "no API key", "copilot keys create")
    assert_refused(api.get(path, headers={"Authorization": "Bearer cpk_made-up"}), 401, "unknown")
    key = service.keys.create("admin")
    assert_refused(api.get(path, headers={"Authorization": f"Basic {key}"}), 401, "no API key")
    # The health check and the API docs stay open.
    assert api.get("/healthz").status_code == 200
    assert api.get("/openapi.json").status_code == 200


def test_a_revoked_key_stops_working_at_once(api: TestClient, service: CopilotService) -> None:
    headers = bearer(service, "rep", team="East", name="dana")
    path = f"/v1/accounts/{EAST}/signals"
    assert api.get(path, headers=headers).status_code == 200
    key_id = next(k.key_id for k in service.keys.list() if k.name == "dana")
    # Revoked by another store on the same file, as `copilot keys revoke` does from the CLI.
    KeyStore(service.settings.db_path).revoke(key_id)
    assert_refused(api.get(path, headers=headers), 401, "revoked")


# --- teams ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["signals", "score", "recommendations"])
def test_a_rep_reads_their_own_teams_account_and_no_other(
    api: TestClient, service: CopilotService, route: str
) -> None:
    east = bearer(service, "rep", team="East")
    assert api.get(f"/v1/accounts/{EAST}/{route}", headers=east).status_code == 200
    assert_refused(api.get(f"/v1/accounts/{WEST}/{route}", headers=east), 403, WEST, "'East'")
    assert_refused(api.get(f"/v1/accounts/{ASIA}/{route}", headers=east), 403, ASIA)
    asia = bearer(service, "rep", team="Asia")
    assert api.get(f"/v1/accounts/{ASIA}/{route}", headers=asia).status_code == 200


def test_a_scoped_key_cannot_tell_an_unknown_account_from_another_teams(
    api: TestClient, service: CopilotService
) -> None:
    east = bearer(service, "rep", team="East")
    other = api.get(f"/v1/accounts/{WEST}/score", headers=east)
    missing = api.get("/v1/accounts/No Such Co/score", headers=east)
    assert other.status_code == missing.status_code == 403
    # An admin sees every team, and gets the plain 404 for an account that does not exist.
    admin = bearer(service, "admin")
    assert api.get(f"/v1/accounts/{WEST}/score", headers=admin).status_code == 200
    assert api.get("/v1/accounts/No Such Co/score", headers=admin).status_code == 404


def test_a_rep_cannot_quote_for_another_teams_account(
    api: TestClient, service: CopilotService
) -> None:
    east = bearer(service, "rep", team="East")
    body = {"items": [{"product_id": "GTX Pro", "quantity": 5}], "talking_points": False}
    assert_refused(
        api.post(f"/v1/accounts/{WEST}/quote-strategies", json=body, headers=east), 403, WEST
    )
    mine = api.post(f"/v1/accounts/{EAST}/quote-strategies", json=body, headers=east)
    assert mine.status_code == 200, mine.text
    assert len(mine.json()["strategies"]) == 3


def test_a_manager_with_a_team_is_kept_to_it_and_one_without_sees_all(
    api: TestClient, service: CopilotService
) -> None:
    west_manager = bearer(service, "manager", team="West")
    assert api.get(f"/v1/accounts/{WEST}/score", headers=west_manager).status_code == 200
    assert_refused(api.get(f"/v1/accounts/{EAST}/score", headers=west_manager), 403, EAST)
    manager = bearer(service, "manager")
    assert api.get(f"/v1/accounts/{EAST}/score", headers=manager).status_code == 200


def test_a_rep_reads_alerts_only_of_their_teams_accounts(
    api: TestClient, service: CopilotService
) -> None:
    east = bearer(service, "rep", team="East")
    assert_refused(api.get("/v1/alerts", headers=east), 400, "account_id", "'East'")
    assert_refused(api.get("/v1/alerts", params={"account_id": WEST}, headers=east), 403, WEST)
    mine = api.get("/v1/alerts", params={"account_id": EAST}, headers=east)
    assert mine.status_code == 200 and mine.json() == []


# --- roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/training-runs", {"overrides": {"max_steps": 2}}),
        ("post", "/v1/adapters/any-adapter/promote", None),
        ("post", "/v1/adapters/rollback", None),
        ("post", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "account_id": EAST}),
        ("get", "/v1/webhooks", None),
        ("post", "/v1/events", {"type": "stock", "account_id": EAST}),
    ],
)
def test_a_rep_cannot_train_promote_or_feed_events(
    api: TestClient, service: CopilotService, method: str, path: str, body: dict | None
) -> None:
    rep = bearer(service, "rep", team="East")
    response = api.request(method.upper(), path, json=body, headers=rep)
    assert_refused(response, 403, "needs a manager key", "a rep key cannot")
    # Nothing was started, promoted or stored on the way to the refusal.
    assert list_training_runs(service.settings) == []
    assert service.registry.promoted() is None
    assert service.events.store.counts() == {"alerts": 0} and service.events.webhooks() == []


def test_a_manager_passes_the_role_check_and_meets_the_real_answer(
    api: TestClient, service: CopilotService
) -> None:
    manager = bearer(service, "manager")
    # No such adapter: past the role check, the registry's own 404.
    promote = api.post("/v1/adapters/any-adapter/promote", headers=manager)
    assert promote.status_code == 404, promote.text
    assert "any-adapter" in promote.json()["error"]["message"]
    assert api.get("/v1/webhooks", headers=manager).status_code == 200


def test_a_manager_limited_to_a_team_cannot_subscribe_to_every_teams_alerts(
    api: TestClient, service: CopilotService
) -> None:
    east_manager = bearer(service, "manager", team="East")
    hook = {"url": "http://127.0.0.1:9/hook"}
    assert_refused(api.post("/v1/webhooks", json=hook, headers=east_manager), 403, "'East'")
    assert_refused(
        api.post("/v1/webhooks", json={**hook, "account_id": WEST}, headers=east_manager),
        403,
        WEST,
    )


def test_a_name_speaks_for_one_live_key_at_a_time(service: CopilotService) -> None:
    """Feedback, A/B assignment and the decision log go by the name: no two live keys share it."""
    store = KeyStore(service.settings.db_path)
    store.create("rep", team="East", name="dup-dana")
    with pytest.raises(StateError, match="already named 'dup-dana'.*copilot keys revoke"):
        store.create("rep", team="West", name="dup-dana")
    # Names are compared as people read them, and a key's id is no one's name.
    for lookalike in ("DUP-DANA", "ｄｕｐ-ｄａｎａ"):
        with pytest.raises(StateError, match="already named 'dup-dana'"):
            store.create("rep", team="West", name=lookalike)
    first = next(k for k in store.list() if k.name == "dup-dana")
    with pytest.raises(StateError, match=f"id {first.key_id}"):
        store.create("rep", team="West", name=first.key_id.upper())
    store.revoke(first.key_id)
    assert store.authenticate(store.create("rep", team="West", name="dup-dana")).team == "West"


def test_key_ids_never_read_as_command_line_options(service: CopilotService) -> None:
    store = KeyStore(service.settings.db_path)
    for _ in range(64):
        key = store.create("manager")
        key_id = key.removeprefix("cpk_")[:8]
        assert not key_id.startswith("-") and all(c in "0123456789abcdef" for c in key_id)
