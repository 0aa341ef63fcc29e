"""A running server serves a newly promoted adapter from the next request, and refuses foreign ones.

One app over one service stays up for the whole module, as `copilot serve` would;
promotions come from the `copilot adapters` CLI in a separate process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copilot.settings import Settings, load_settings
from serve.api.app import create_app
from serve.service import CopilotService
from tests.serve.conftest import bearer
from tests.serve.test_api import assert_error
from tests.training.test_registry import OTHER_BASE, make_peft_adapter
from training.model import base_model_id
from training.registry import METADATA_FILE, AdapterRegistry

OBJECTION = {"text": "Your price is too high for a team of our size."}

pytestmark = pytest.mark.slow


def copilot(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COPILOT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    loaded = load_settings(data_dir=tmp_path_factory.mktemp("hot") / "data")
    # A few greedy tokens are enough to prove which adapter answered.
    generator = loaded.models.generator.model_copy(update={"max_new_tokens": 6})
    return loaded.model_copy(
        update={"models": loaded.models.model_copy(update={"generator": generator})}
    )


@pytest.fixture(scope="module")
def adapters(settings: Settings) -> AdapterRegistry:
    make_peft_adapter(settings, "alpha", seed=1, created_at="2026-01-01T09:00:00+00:00")
    make_peft_adapter(settings, "beta", seed=2, created_at="2026-02-01T09:00:00+00:00")
    # Real peft weights, but recorded as trained on another base; and the newest one.
    foreign = settings.adapters_dir / "foreign"
    shutil.copytree(settings.adapters_dir / "alpha", foreign)
    meta = json.loads((foreign / METADATA_FILE).read_text())
    meta.update(base_model=OTHER_BASE, created_at="2026-03-01T09:00:00+00:00")
    (foreign / METADATA_FILE).write_text(json.dumps(meta))
    return AdapterRegistry(settings.adapters_dir)


@pytest.fixture(scope="module")
def service(settings: Settings, adapters: AdapterRegistry) -> CopilotService:
    return CopilotService(settings)


@pytest.fixture(scope="module")
def client(service: CopilotService):
    with TestClient(
        create_app(service, with_ui=False), raise_server_exceptions=False, headers=bearer(service)
    ) as c:
        yield c


def _slot(service: CopilotService):
    from training.generate import _slots

    return _slots[service.generator.base_model]


def _ask(client: TestClient, **extra: str) -> dict:
    response = client.post("/v1/objections/handle", json={**OBJECTION, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_promotion_reaches_the_running_server_without_restart(
    client: TestClient, service: CopilotService, settings: Settings, adapters: AdapterRegistry
) -> None:
    adapters.promote("alpha", expected_base=base_model_id(settings))
    first = _ask(client)
    assert first["adapter"] == "alpha"
    generator = service.generator
    assert _slot(service).peft.active_adapter == "alpha"

    # Another process promotes beta; the server's next request serves it.
    result = copilot(settings.data_dir, "adapters", "promote", "beta", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["promoted"] == "beta"
    assert [p["name"] for p in doc["history"]] == ["alpha", "beta"]

    second = _ask(client)
    assert second["adapter"] == "beta"
    assert service.generator is generator  # same process, same loaded model
    assert _slot(service).peft.active_adapter == "beta"
    assert set(_slot(service).adapters) == {"alpha", "beta"}

    result = copilot(settings.data_dir, "adapters", "rollback", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back_from"] == "beta"
    third = _ask(client)
    assert third["adapter"] == "alpha"
    assert third["reply"] == first["reply"]  # greedy decoding with the same weights
    assert _ask(client, adapter="beta")["reply"] == second["reply"]

    # Deleting the promoted adapter with --force leaves nothing promoted: the newest
    # adapter on this base serves (the newer foreign one is passed over).
    result = copilot(settings.data_dir, "adapters", "delete", "alpha", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["promoted"] is None
    assert _ask(client)["adapter"] == "beta"
    assert not (settings.adapters_dir / "alpha").exists()


def test_adapter_of_another_base_gets_a_json_error_and_is_never_loaded(
    client: TestClient, service: CopilotService, settings: Settings, adapters: AdapterRegistry
) -> None:
    current = base_model_id(settings)

    message = assert_error(
        client.post("/v1/objections/handle", json={**OBJECTION, "adapter": "foreign"}),
        400,
        "bad_input",
    )
    assert OTHER_BASE in message and current in message and "'foreign'" in message

    result = copilot(settings.data_dir, "adapters", "promote", "foreign")
    assert result.returncode == 1
    assert OTHER_BASE in result.stderr and current in result.stderr
    assert adapters.promoted() is None or adapters.promoted().name != "foreign"

    # Promoted by hand-editing the pointer file: refused on every default request.
    adapters.pointer_path.write_text(json.dumps({"name": "foreign"}))
    message = assert_error(client.post("/v1/objections/handle", json=OBJECTION), 409, "bad_state")
    assert message.startswith("the promoted adapter 'foreign' was trained on")
    assert OTHER_BASE in message and current in message
    assert "copilot adapters promote NAME" in message
    assert client.get("/healthz").status_code == 200  # the server itself is fine

    # The fix the message names: promote an adapter of this base.
    result = copilot(settings.data_dir, "adapters", "promote", "beta")
    assert result.returncode == 0, result.stderr
    assert _ask(client)["adapter"] == "beta"
    assert "foreign" not in _slot(service).adapters
