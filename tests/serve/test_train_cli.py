"""`copilot train --set method=dpo` end to end: the CLI, the service and the DPO trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve.test_dataset_cli import run, store_objections
from training.registry import AdapterRegistry

pytestmark = pytest.mark.slow


def test_dpo_through_the_cli_registers_a_portable_dpo_adapter(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store_objections(data)

    result = run(
        data,
        "train",
        "--name",
        "pref",
        "--set",
        "method=dpo",
        "--set",
        "batch_size=2",
        "--set",
        "max_length=160",
        "--max-steps",
        "2",
        "--json",
        # A model load, a GGUF dequantisation and two DPO steps: minutes on 2 busy cores.
        timeout_s=1200,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["name"] == "pref" and summary["method"] == "dpo"
    assert summary["state"] == "done" and summary["steps"] == 2
    meta = json.loads((data / "adapters" / "pref" / "copilot_adapter.json").read_text())
    assert meta["method"] == "dpo"
    # The service hands the MiniLM embedder over, so lost replies are paired by similarity.
    assert meta["dpo"]["pairing"] == "embedding"
    assert [a.name for a in AdapterRegistry(data / "adapters").list()] == ["pref"]
    # The saved peft config names the base model, not this machine's cache folder.
    config = json.loads((data / "adapters" / "pref" / "adapter_config.json").read_text())
    assert str(data) not in config["base_model_name_or_path"]
    assert config["base_model_name_or_path"] == summary["base_model"]


def test_a_bad_override_is_refused_before_anything_trains(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store_objections(data)

    result = run(data, "train", "--set", "method=ppo", "--max-steps", "2")

    assert result.returncode == 1
    assert "method" in result.stderr and "sft" in result.stderr
    assert not (data / "adapters").exists() or not any((data / "adapters").iterdir())
