"""Stop and resume: a run ended by the STOP file or by SIGKILL carries on from its checkpoint.

One uninterrupted run is the reference. A resumed run restores the LoRA weights,
the optimiser, the schedule, the RNG states and the example order, so it must log
the reference's losses step for step after the resume (a resume from the base model,
or with a fresh optimiser or another batch order, would not), and end with the same
number of steps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from copilot.errors import InputError, StateError
from copilot.store import Store
from training.checkpoint import checkpoints
from training.registry import AdapterRegistry
from training.runs import DONE, FAILED, STOPPED, RunFolder, latest_resumable
from training.trainer import train_adapter

RECIPE = {
    "max_steps": 6,
    "batch_size": 2,
    "learning_rate": 5e-4,
    "max_length": 160,
    "log_every": 1,
    "checkpoint_every": 2,
    "eval_fraction": 0.25,
    "max_eval_examples": 4,
}
STOP_AFTER = 3  # one step past the checkpoint at step 2, so the stop writes its own


def _steps(run_dir) -> list[dict]:
    return [r for r in RunFolder(run_dir).progress() if r.get("event") == "step"]


def _losses_after_last_resume(run_dir) -> dict[int, float]:
    records = list(RunFolder(run_dir).progress())
    last_resume = max(i for i, r in enumerate(records) if r.get("event") == "resume")
    return {r["step"]: r["loss"] for r in records[last_resume:] if r.get("event") == "step"}


@pytest.fixture(scope="module")
def recipe_settings(settings):
    return settings.with_training(RECIPE)


@pytest.fixture(scope="module")
def reference(recipe_settings, objections, base):
    run = train_adapter(recipe_settings, objections, name="resume-reference")
    return run, {r["step"]: r["loss"] for r in _steps(run.path)}


@pytest.mark.slow
def test_stop_file_then_resume_continues_the_same_run(recipe_settings, objections, reference):
    folder = RunFolder(recipe_settings.adapters_dir / "resume-stopped")

    def stop_at(step: int, loss: float) -> None:
        if step == STOP_AFTER:
            folder.request_stop()

    stopped = train_adapter(recipe_settings, objections, name=folder.name, progress=stop_at)

    # Stopped: checkpointed, resumable, not an adapter
    assert stopped.state == STOPPED and stopped.steps == STOP_AFTER
    assert stopped.eval_loss_after is None
    assert folder.read_state()["state"] == STOPPED
    assert not folder.finished and not (folder.path / "STOP").exists()
    assert [p.name for p in checkpoints(folder)] == ["step-2", f"step-{STOP_AFTER}"]
    assert folder.name not in [a.name for a in AdapterRegistry(recipe_settings.adapters_dir).list()]
    assert latest_resumable(recipe_settings.adapters_dir).name == folder.name
    assert list(folder.progress())[-1]["event"] == "end"

    # Resuming on other data is refused before any model loads
    fewer = [o for o in objections if o.call_id != "won-birch"]
    with pytest.raises(StateError, match="data changed.*`copilot train` \\(without --resume\\)"):
        train_adapter(recipe_settings, fewer, resume=True)
    with pytest.raises(InputError, match="drop --max-steps"):
        train_adapter(recipe_settings, objections, resume=True, max_steps=10)

    # The newest resumable run is this one; it ends where the reference ended
    resumed = train_adapter(recipe_settings, objections, resume=True)
    ref_run, ref_losses = reference
    assert resumed.name == folder.name and resumed.state == DONE
    assert resumed.steps == ref_run.steps == RECIPE["max_steps"]
    after = _losses_after_last_resume(folder.path)
    assert sorted(after) == list(range(STOP_AFTER + 1, RECIPE["max_steps"] + 1))
    for step, loss in after.items():
        assert loss == pytest.approx(ref_losses[step], abs=1e-3), step
    assert resumed.eval_loss_after == pytest.approx(ref_run.eval_loss_after, abs=1e-3)
    assert resumed.eval_loss_before == pytest.approx(ref_run.eval_loss_before, abs=1e-6)

    meta = json.loads((folder.path / "copilot_adapter.json").read_text())
    assert meta["resumes"] == 1 and meta["metrics"]["steps"] == RECIPE["max_steps"]
    assert folder.read_state()["state"] == DONE
    assert not folder.checkpoints_dir.exists()  # a finished run drops its checkpoints
    with pytest.raises(StateError, match="finished already"):
        train_adapter(recipe_settings, objections, resume=True, name=folder.name)


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_through_the_cli(
    recipe_settings, objections, reference, tmp_path
):
    from tests.conftest import REPO

    # A data dir of its own with the fixture objections stored, sharing the
    # dequantised base model so the child does not convert the GGUF file again
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cache").symlink_to(recipe_settings.cache_dir)
    Store(data_dir / "copilot.sqlite3").replace_objections(objections)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"training": RECIPE}), encoding="utf-8")
    command = [sys.executable, "-m", "serve.cli", "--data-dir", str(data_dir)]
    command += ["--config", str(config), "train"]
    folder = RunFolder(data_dir / "adapters" / "killed")

    def bar_steps() -> list[int]:
        text = (tmp_path / "child.log").read_text(errors="replace")
        return [int(n) for n in re.findall(r"train: +\d+%\|[^|]*\| (\d)/6", text)]

    # Kill the child with SIGKILL once its first checkpoint is on disk and its bar,
    # which polls progress.jsonl every 0.5 s, has had the chance to show that step
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen([*command, "--name", "killed"], cwd=REPO, stdout=log, stderr=log)
    deadline = time.monotonic() + 900
    while child.poll() is None and time.monotonic() < deadline:
        if checkpoints(folder) and max(bar_steps(), default=0) >= RECIPE["checkpoint_every"]:
            break
        time.sleep(0.2)
    assert checkpoints(folder), (tmp_path / "child.log").read_text()[-3000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    log.close()

    status = folder.status()
    assert status.state == FAILED and status.resumable  # run.json still says running
    assert not folder.finished
    # The child's bar followed progress.jsonl: it got at least to the checkpointed step.
    assert max(bar_steps(), default=0) >= RECIPE["checkpoint_every"]

    # `train --resume` (no name: the newest resumable run) finishes it
    done = subprocess.run(
        [*command, "--resume", "--json"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["name"] == "killed" and result["state"] == DONE
    assert result["steps"] == RECIPE["max_steps"]

    resumed_at = [r["step"] for r in folder.progress() if r.get("event") == "resume"]
    assert resumed_at and resumed_at[0] >= RECIPE["checkpoint_every"]
    _, ref_losses = reference
    after = _losses_after_last_resume(folder.path)
    assert min(after) == resumed_at[0] + 1 and max(after) == RECIPE["max_steps"]
    for step, loss in after.items():
        assert loss == pytest.approx(ref_losses[step], abs=1e-3), step
    assert AdapterRegistry(data_dir / "adapters").get("killed").metrics["steps"] == 6


def test_nothing_to_resume_is_a_clear_error(settings, objections, tmp_path):
    empty = settings.model_copy(update={"data_dir": tmp_path})
    with pytest.raises(StateError, match="no stopped or failed training run"):
        train_adapter(empty, objections, resume=True)
    with pytest.raises(StateError, match="no training run named 'nope'"):
        train_adapter(empty, objections, resume=True, name="nope")


def _cli(monkeypatch, data_dir, *args):
    from typer.testing import CliRunner

    from serve import cli

    monkeypatch.setattr(cli.state, "_settings", None)
    monkeypatch.setattr(cli.state, "_service", None)
    return CliRunner().invoke(cli.app, ["--data-dir", str(data_dir), "train", *args])


def test_cli_overrides_are_checked_before_anything_trains(monkeypatch, tmp_path, objections):
    Store(tmp_path / "copilot.sqlite3").replace_objections(objections)

    typo = _cli(monkeypatch, tmp_path, "--set", "lora_rr=8")
    assert typo.exit_code == 1 and "unknown key 'lora_rr'" in typo.output
    negative = _cli(monkeypatch, tmp_path, "--set", "learning_rate=-1", "--set", "lora_r=8")
    assert negative.exit_code == 1 and "'learning_rate'" in negative.output
    malformed = _cli(monkeypatch, tmp_path, "--set", "lora_r")
    assert malformed.exit_code == 2 and "KEY=VALUE" in malformed.output
    mixed = _cli(monkeypatch, tmp_path, "--resume", "--set", "lora_r=8")
    assert mixed.exit_code == 1 and "a resumed run keeps the config" in mixed.output
    nothing = _cli(monkeypatch, tmp_path, "--resume")
    assert nothing.exit_code == 1 and "no stopped or failed training run" in nothing.output
    assert not (tmp_path / "adapters").exists() or not any((tmp_path / "adapters").iterdir())
