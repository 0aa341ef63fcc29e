"""`copilot adapters ...` in real subprocesses: one JSON document per --json, exit 1 with the reason."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from copilot.settings import load_settings
from tests.training.test_registry import OTHER_BASE, make_peft_adapter, write_adapter
from training.model import base_model_id

A, B, C = "20260101-090000-aaaa1111", "20260201-090000-bbbb2222", "20260301-090000-cccc3333"


def copilot(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --data-dir (not the env var): the global option must reach the sub-app's commands.
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", "--data-dir", str(data_dir), "adapters", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COPILOT_DATA_DIR"},
        timeout=300,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # fails on anything but exactly one document


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Three adapters on the configured base, one on another base, and a failed run."""
    data = tmp_path / "data"
    base = base_model_id(load_settings(data_dir=data))
    root = data / "adapters"
    write_adapter(root, A, "2026-01-01T09:00:00+00:00", base, loss=3.1)
    write_adapter(root, B, "2026-02-01T09:00:00+00:00", base, loss=2.7, method="dpo")
    write_adapter(root, C, "2026-03-01T09:00:00+00:00", base, loss=2.2)
    write_adapter(root, "foreign", "2026-04-01T09:00:00+00:00", OTHER_BASE)
    failed = root / "20260501-090000-dddd4444"
    failed.mkdir()
    (failed / "run.json").write_text(
        json.dumps(
            {
                "state": "failed",
                "pid": 1,
                "host": socket.gethostname(),
                "max_steps": 40,
                "started_at": "2026-05-01T09:00:00+00:00",
                "method": "sft",
            }
        )
    )
    return data


def test_list_json_names_adapters_runs_and_the_base(data_dir: Path) -> None:
    base = base_model_id(load_settings(data_dir=data_dir))
    doc = as_json(copilot(data_dir, "list", "--json"))

    assert doc["base_model"] == base
    assert doc["promoted"] is None and doc["history"] == []
    assert [a["name"] for a in doc["adapters"]] == [A, B, C, "foreign"]
    by_name = {a["name"]: a for a in doc["adapters"]}
    assert [a["compatible"] for a in doc["adapters"]] == [True, True, True, False]
    assert by_name[B]["method"] == "dpo" and by_name[A]["method"] == "sft"
    assert by_name[C]["metrics"] == {"eval_loss_before": 3.4, "eval_loss_after": 2.2, "steps": 20}
    assert by_name[A]["author"] == "maria"
    assert by_name[A]["created_at"] == "2026-01-01T09:00:00+00:00"
    assert by_name[A]["path"] == str(data_dir.resolve() / "adapters" / A)
    assert [(r["name"], r["state"], r["max_steps"]) for r in doc["runs"]] == [
        ("20260501-090000-dddd4444", "failed", 40)
    ]

    empty = as_json(copilot(data_dir.parent / "empty", "list", "--json"))
    assert (empty["adapters"], empty["runs"], empty["promoted"]) == ([], [], None)


def test_list_text_marks_the_promoted_and_foreign_adapters(data_dir: Path) -> None:
    as_json(copilot(data_dir, "promote", B, "--json"))
    out = copilot(data_dir, "list").stdout
    lines = {name: next(x for x in out.splitlines() if name in x) for name in (A, B, "foreign")}
    assert lines[B].startswith(f"* {B}")
    assert lines[A].startswith(f"  {A}")
    assert "20 steps, eval loss 3.400 -> 3.100" in lines[A]
    assert f"[base {OTHER_BASE}]" in lines["foreign"]
    assert "unfinished training runs:" in out
    assert "20260501-090000-dddd4444" in out and "failed" in out


def test_promote_and_rollback_keep_the_history(data_dir: Path) -> None:
    assert as_json(copilot(data_dir, "promote", A, "--json"))["promoted"] == A
    doc = as_json(copilot(data_dir, "promote", C, "--json"))
    assert [(p["name"], p["via"]) for p in doc["history"]] == [(A, "promote"), (C, "promote")]

    doc = as_json(copilot(data_dir, "rollback", "--json"))
    assert (doc["promoted"], doc["rolled_back_from"], doc["skipped"]) == (A, C, [])
    assert [(p["name"], p["via"]) for p in doc["history"]] == [(A, "rollback")]
    pointer = json.loads((data_dir / "adapters" / "promoted.json").read_text())
    assert pointer["name"] == A

    result = copilot(data_dir, "rollback", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert f"'{A}' is the first adapter promoted here" in result.stderr

    listed = as_json(copilot(data_dir, "list", "--json"))
    assert [a["name"] for a in listed["adapters"] if a["promoted"]] == [A]


def test_promote_refuses_unknown_names_and_other_bases(data_dir: Path) -> None:
    result = copilot(data_dir, "promote", "nope", "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert "no adapter named 'nope'" in result.stderr
    assert "`copilot adapters list`" in result.stderr

    result = copilot(data_dir, "promote", "foreign")
    assert result.returncode == 1
    assert OTHER_BASE in result.stderr
    assert base_model_id(load_settings(data_dir=data_dir)) in result.stderr
    assert not (data_dir / "adapters" / "promoted.json").exists()

    result = copilot(data_dir, "promote", "../etc")
    assert result.returncode == 1 and "not allowed" in result.stderr


def test_delete_needs_force_for_the_promoted_adapter_and_refuses_running_runs(
    data_dir: Path,
) -> None:
    as_json(copilot(data_dir, "promote", A, "--json"))
    as_json(copilot(data_dir, "promote", C, "--json"))

    result = copilot(data_dir, "delete", C)
    assert result.returncode == 1 and "--force" in result.stderr
    assert (data_dir / "adapters" / C).is_dir()

    doc = as_json(copilot(data_dir, "delete", C, "--force", "--json"))
    assert (doc["name"], doc["kind"], doc["was_promoted"], doc["promoted"]) == (
        C,
        "adapter",
        True,
        A,
    )
    assert not (data_dir / "adapters" / C).exists()

    doc = as_json(copilot(data_dir, "delete", "20260501-090000-dddd4444", "--json"))
    assert (doc["kind"], doc["was_promoted"], doc["promoted"]) == ("run", False, A)

    running = data_dir / "adapters" / "20260601-090000-eeee5555"
    running.mkdir()
    (running / "run.json").write_text(
        json.dumps({"state": "running", "pid": os.getpid(), "host": socket.gethostname()})
    )
    result = copilot(data_dir, "delete", running.name, "--force")
    assert result.returncode == 1 and "still running" in result.stderr
    assert running.is_dir()

    listed = as_json(copilot(data_dir, "list", "--json"))
    assert [a["name"] for a in listed["adapters"]] == [A, B, "foreign"]


def test_export_refusals_exit_1_before_loading_a_model(data_dir: Path, tmp_path: Path) -> None:
    result = copilot(data_dir, "export", "nope", "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "no adapter named 'nope'" in result.stderr

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep")
    result = copilot(data_dir, "export", A, "--out", str(taken), "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert "not empty" in result.stderr and "--force" in result.stderr

    result = copilot(data_dir, "export", "foreign", "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and OTHER_BASE in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_writes_a_merged_model_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    make_peft_adapter(settings, "probe", seed=3, created_at="2026-03-01T09:00:00+00:00")

    doc = as_json(copilot(data, "export", "probe", "--out", str(tmp_path / "merged"), "--json"))

    assert doc["adapter"] == "probe"
    assert doc["base_model"] == base_model_id(settings)
    assert doc["path"] == str(tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "copilot_export.json"} <= set(
        doc["files"]
    )
    assert json.loads((tmp_path / "merged" / "copilot_export.json").read_text())["adapter"] == (
        "probe"
    )
