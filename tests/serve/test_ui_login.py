"""The manager UI opens only to a manager or admin key, signed in under the key's name."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serve.api.app import create_app
from serve.service import CopilotService
from serve.ui.login import LOGIN_MESSAGE, manager_login


@pytest.fixture
def ui(service: CopilotService) -> TestClient:
    with TestClient(create_app(service)) as client:
        yield client


def login(client: TestClient, username: str, password: str) -> int:
    return client.post("/ui/login", data={"username": username, "password": password}).status_code


def test_without_login_the_ui_shows_only_the_login_page(ui: TestClient) -> None:
    assert ui.get("/ui/").status_code == 200  # the page that holds the login form
    refused = ui.get("/ui/config")
    assert refused.status_code == 401
    assert refused.json()["detail"]["auth_message"] == LOGIN_MESSAGE
    # The event routes behind the tabs are closed too, not only the page.
    join = {"data": [], "fn_index": 0, "session_hash": "s1"}
    assert ui.post("/ui/gradio_api/queue/join", json=join).status_code == 401
    assert ui.post("/ui/gradio_api/run/predict", json=join).status_code == 401
    assert ui.get("/ui/gradio_api/info").status_code == 401


def test_rep_key_is_refused(ui: TestClient, service: CopilotService) -> None:
    rep = service.keys.create("rep", team="Central", name="rob")
    assert login(ui, "rob", rep) == 400
    assert ui.get("/ui/config").status_code == 401


# An empty password never reaches our check: gradio's login form refuses it (422).
@pytest.mark.parametrize(
    ("password", "status"), [("", 422), ("cpk_not-a-real-key", 400), ("hunter2", 400)]
)
def test_missing_or_unknown_key_is_refused(ui: TestClient, password: str, status: int) -> None:
    assert login(ui, "dana", password) == status
    assert ui.get("/ui/config").status_code == 401


def test_revoked_key_is_refused(ui: TestClient, service: CopilotService) -> None:
    key = service.keys.create("manager", name="dana")
    service.keys.revoke(service.keys.list()[-1].key_id)
    assert login(ui, "dana", key) == 400


def test_key_under_another_name_is_refused(ui: TestClient, service: CopilotService) -> None:
    key = service.keys.create("manager", name="dana")
    assert login(ui, "someone-else", key) == 400
    assert login(ui, "", key) in (400, 422)  # gradio's form refuses an empty username itself
    assert ui.get("/ui/config").status_code == 401


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_manager_and_admin_keys_open_the_ui(
    ui: TestClient, service: CopilotService, role: str
) -> None:
    key = service.keys.create(role, name=f"{role}-dana")
    assert login(ui, f" {role}-dana ", key) == 200  # gradio strips the username
    config = ui.get("/ui/config")
    assert config.status_code == 200
    labels = {c.get("props", {}).get("label") for c in config.json()["components"]}
    assert {"Calls", "Prompt workshop", "System prompt", "Saved versions"} <= labels


def test_unnamed_key_signs_in_under_its_id(service: CopilotService) -> None:
    key = service.keys.create("manager")
    key_id = service.keys.list()[-1].key_id
    check = manager_login(service)
    assert check(key_id, key) is True
    assert check(key_id, f"  {key}  ") is True  # a pasted key's spaces are not part of it
    assert check("manager", key) is False


def test_revoking_a_key_ends_its_open_ui_session(ui: TestClient, service: CopilotService) -> None:
    key = service.keys.create("manager", name="mara")
    assert login(ui, "mara", key) == 200
    assert ui.get("/ui/config").status_code == 200
    key_id = next(k.key_id for k in service.keys.list() if k.name == "mara")
    service.keys.revoke(key_id)
    assert ui.get("/ui/config").status_code == 401
    # A new rep key under the same name does not bring the session back.
    service.keys.create("rep", team="Central", name="mara")
    assert ui.get("/ui/config").status_code == 401


def test_a_manager_limited_to_one_team_cannot_open_the_ui(
    ui: TestClient, service: CopilotService
) -> None:
    key = service.keys.create("manager", team="East", name="east-lead")
    assert login(ui, "east-lead", key) == 400
    assert ui.get("/ui/config").status_code == 401
