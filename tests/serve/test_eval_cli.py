"""`copilot eval`: refusals in a real subprocess, before any model loads.

The successful run, which needs a trained adapter, is tested beside the trainer's
session adapter in tests/training/test_judge.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from copilot.settings import load_settings
from training.model import base_model_id

COPILOT = [sys.executable, "-m", "serve.cli"]
FOREIGN_BASE = "Qwen2.5-0.5B-Instruct@0123456789"


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --data-dir, not the environment: the option must reach the command run via -m.
    env = {k: v for k, v in os.environ.items() if k != "COPILOT_DATA_DIR"}
    return subprocess.run(
        [*COPILOT, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def write_adapter(data_dir: Path, name: str, base_model: str) -> Path:
    """An adapter folder as the registry lists it: only its metadata file."""
    folder = data_dir / "adapters" / name
    folder.mkdir(parents=True)
    meta = {
        "name": name,
        "created_at": "2025-01-01T00:00:00+00:00",
        "base_model": base_model,
        "train_calls": ["won-a"],
        "eval_calls": ["won-b"],
    }
    (folder / "copilot_adapter.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def test_unknown_adapter_exits_1_naming_the_known_ones(tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_adapter(data, "price-v1", FOREIGN_BASE)
    result = run(data, "eval", "no-such-adapter", "--json")
    assert result.returncode == 1
    assert "no adapter named 'no-such-adapter' (known: price-v1)" in result.stderr
    assert result.stdout == ""


def test_adapter_on_another_base_is_refused_not_evaluated(tmp_path: Path) -> None:
    data = tmp_path / "d"
    folder = write_adapter(data, "qwen-tuned", FOREIGN_BASE)
    result = run(data, "eval", "qwen-tuned")
    assert result.returncode == 1
    configured = base_model_id(load_settings(data_dir=data))
    assert f"trained on base model '{FOREIGN_BASE}'" in result.stderr
    assert f"the configured base model is '{configured}'" in result.stderr
    assert not (folder / "evaluation.json").exists()
    assert "held-out response loss" not in result.stdout


def test_limit_below_five_is_a_usage_error(tmp_path: Path) -> None:
    result = run(tmp_path / "d", "eval", "any", "--limit", "3")
    assert result.returncode == 2
    assert "--limit" in result.stderr
