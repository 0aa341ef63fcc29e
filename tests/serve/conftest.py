"""Fixtures for the API and UI tests: a real service over a throw-away data dir."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copilot.schemas import CallRecord, Turn
from copilot.settings import ServeSettings, Settings, load_settings
from serve.api.app import create_app
from serve.service import CopilotService

SAMPLE_TRANSCRIPT = """\
Rep: Hi, this is Dana from Northwind Insurance. Thanks for taking the call today.
Customer: Sure. Honestly, your premium is a lot more expensive than what we pay now.
Rep: I understand. Our plan includes roadside cover, so the total cost ends up lower.
Customer: Okay, that does make a difference. Send me the quote and we can sign this week.
Rep: Great, I will email it within the hour.
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def service(settings: Settings) -> CopilotService:
    return CopilotService(settings)


def bearer(service: CopilotService, role: str = "admin", team: str | None = None, name=None):
    """Headers with a new key of ``role`` (and ``team``) from the service's key store."""
    key = service.keys.create(role, team=team, name=name)
    return {"Authorization": f"Bearer {key}"}


def ui_login(client: TestClient, service: CopilotService, role: str = "manager") -> None:
    """Sign ``client`` in to the mounted UI with a new ``role`` key (username = the key's name)."""
    name = f"ui-{role}-{uuid.uuid4().hex[:6]}"  # a live key's name is unique
    key = service.keys.create(role, team="Central" if role == "rep" else None, name=name)
    response = client.post("/ui/login", data={"username": name, "password": key})
    assert response.status_code == 200, response.text


@pytest.fixture
def client(service: CopilotService) -> TestClient:
    # Server errors come back as responses (not raised) so tests see what a client sees.
    # An admin key by default: tests of access control build their own headers with bearer().
    with TestClient(
        create_app(service, with_ui=False),
        raise_server_exceptions=False,
        headers=bearer(service, "admin", name="test-admin"),
    ) as c:
        yield c


def client_with_limit(settings: Settings, max_upload_mb: float) -> TestClient:
    serve = ServeSettings(**{**settings.serve.model_dump(), "max_upload_mb": max_upload_mb})
    limited = settings.model_copy(update={"serve": serve})
    service = CopilotService(limited)
    app = create_app(service, with_ui=False)
    return TestClient(app, raise_server_exceptions=False, headers=bearer(service))


@pytest.fixture
def transcript_file(tmp_path: Path) -> Path:
    path = tmp_path / "northwind-renewal.txt"
    path.write_text(SAMPLE_TRANSCRIPT, encoding="utf-8")
    return path


def store_call(service: CopilotService, call_id: str = "call-a") -> CallRecord:
    """A call written straight to the store (no parsing, no index, no model)."""
    record = CallRecord(
        call_id=call_id,
        turns=[
            Turn("rep", 0.0, 4.0, "Thanks for your time."),
            Turn("customer", 4.0, 9.5, "It is too expensive."),
        ],
        source=f"/tmp/{call_id}.txt",
        source_kind="transcript",
        content_hash=f"hash-{call_id}",
        outcome="won",
        account_id="acct-1",
        duration_s=9.5,
    )
    service.store.save_calls([record], input_hash=f"input-{call_id}", input_path=record.source)
    return record
