"""The `copilot` CLI: exit codes, --json documents, and the data dir, in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

COPILOT = [sys.executable, "-m", "serve.cli"]


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COPILOT_DATA_DIR": str(data_dir)}
    return subprocess.run([*COPILOT, *args], capture_output=True, text=True, env=env, timeout=300)


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, "ingest")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_status_json_is_one_document_on_stdout(tmp_path: Path) -> None:
    result = run(tmp_path / "d", "status", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["calls"], info["turns"], info["chunks"]) == (0, 0, 0)
    assert info["objections"] == {} and info["adapters"] == []
    assert set(info["models"]) == {"transcriber", "embedder", "generator"}
    assert info["data_dir"] == str((tmp_path / "d").resolve())


def test_bad_config_and_unknown_call_exit_1_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve:\n  prot: 1\n", encoding="utf-8")
    result = run(tmp_path / "d", "--config", str(bad), "status")
    assert result.returncode == 1
    assert "unknown key 'serve.prot'" in result.stderr

    result = run(tmp_path / "d", "transcript", "no-such-call")
    assert result.returncode == 1
    assert "no call with id 'no-such-call'" in result.stderr


@pytest.mark.slow
def test_ingest_transcript_then_read_it_back(tmp_path: Path) -> None:
    data = tmp_path / "d"
    result = run(data, "ingest", str(SAMPLE / "call-text-01.txt"), "--outcome", "won", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stored"] == ["call-text-01"]

    result = run(data, "transcript", "call-text-01", "--json")
    doc = json.loads(result.stdout)
    assert doc["call_id"] == "call-text-01"
    assert doc["turns"][0]["speaker"] == "rep" and doc["turns"][1]["speaker"] == "customer"
    assert "more expensive than our current plan" in doc["turns"][1]["text"]

    missing = run(data, "ingest", str(tmp_path / "nope.flac"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
