"""Training and evaluation jobs: real `copilot` subprocesses on a tiny data dir.

The objections of tests/training/conftest.py are stored in a real Store at the
data dir's database, exactly where `copilot train` reads them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from copilot.errors import ConfigError, NotFoundError, StateError
from copilot.settings import Settings, load_settings
from copilot.store import Store
from tests.training.conftest import make_objections
from training.jobs import (
    TrainingStatus,
    active_training,
    evaluation_status,
    list_training_runs,
    start_evaluation,
    start_training,
    stop_training,
    training_status,
)
from training.registry import AdapterRegistry
from training.runs import RunFolder

TIMEOUT_S = 900  # model load + a few steps on 2 cores shared with other test runs
STEPS = 4


# The server's own config file: a recipe small enough for a few steps on CPU, and
# short generations for the evaluation. Jobs hand these settings to their children.
SERVER_CONFIG = """\
models:
  generator:
    max_new_tokens: 24
training:
  batch_size: 2
  max_length: 128
  log_every: 1
  eval_fraction: 0.25
  max_eval_examples: 8
"""


@pytest.fixture(scope="module")
def job_settings(tmp_path_factory) -> Iterator[Settings]:
    """A data dir with the fixture objections stored in its real Store."""
    root = tmp_path_factory.mktemp("jobs")
    (root / "server.yaml").write_text(SERVER_CONFIG, encoding="utf-8")
    settings = load_settings(root / "server.yaml", root / "data")
    assert Store(settings.db_path).replace_objections(make_objections()) == 36
    yield settings
    end_jobs(settings)


def wait_for(
    settings: Settings,
    name: str,
    done: Callable[[TrainingStatus], bool],
    timeout: float = TIMEOUT_S,
) -> TrainingStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = training_status(settings, name)
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run {name} still {status.state} after {timeout} s:\n{status}")
        time.sleep(1.0)


def end_jobs(settings: Settings) -> None:
    """End every job process a test left running (a failed assertion must not leave one)."""
    for record in (settings.data_dir / "jobs").glob("*.json"):
        pid = json.loads(record.read_text(encoding="utf-8"))["pid"]
        try:  # only if the pid is still our command, not a reused id
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(settings.data_dir) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def info_train_calls(info) -> set[str]:
    meta = json.loads((info.path / "copilot_adapter.json").read_text(encoding="utf-8"))
    return set(meta["train_calls"])


def step_records(settings: Settings, name: str) -> list[dict]:
    progress = RunFolder(settings.adapters_dir / name).progress()
    return [r for r in progress if r.get("event") == "step"]


def test_bad_hyper_parameters_are_refused_before_anything_starts(job_settings: Settings) -> None:
    before = list_training_runs(job_settings)
    with pytest.raises(ConfigError, match="'learning_rate'"):
        start_training(job_settings, overrides={"learning_rate": -0.001})
    with pytest.raises(ConfigError, match="unknown key 'lora_rank'"):
        start_training(job_settings, overrides={"lora_rank": 8})
    with pytest.raises(ConfigError, match="'method'"):
        start_training(job_settings, overrides={"method": "ppo"})
    assert list_training_runs(job_settings) == before
    assert active_training(job_settings) is None


def test_a_command_that_dies_at_once_shows_its_own_error(
    job_settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "server.yaml"
    bad.write_text("training:\n  lora_rnk: 8\n", encoding="utf-8")
    job = start_training(job_settings, name="bad-config", overrides={}, config_path=bad)
    assert job.command[:3] == [sys.executable, "-m", "serve.cli"]
    assert job.command[job.command.index("--config") + 1] == str(bad.resolve())

    failed = wait_for(job_settings, job.name, lambda s: not s.active, timeout=120)
    assert failed.state == "failed"
    assert "unknown key 'training.lora_rnk'" in failed.message
    assert "unknown key 'training.lora_rnk'" in failed.log_tail
    assert failed.losses == [] and failed.run is None
    assert active_training(job_settings) is None


def test_unknown_names_are_not_found(job_settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="no training run named 'nope'"):
        training_status(job_settings, "nope")
    with pytest.raises(NotFoundError, match="no adapter named 'nope'"):
        start_evaluation(job_settings, "nope")
    with pytest.raises(StateError, match="not running"):
        stop_training(job_settings, "bad-config")


@pytest.mark.slow
def test_train_then_evaluate_in_background_processes(job_settings: Settings) -> None:
    job = start_training(job_settings, name="four-steps", overrides={"max_steps": STEPS})
    assert job.command[:3] == [sys.executable, "-m", "serve.cli"]
    assert job.command[job.command.index("--data-dir") + 1] == str(job_settings.data_dir)
    assert f"max_steps={STEPS}" in job.command
    # The child resolves exactly the caller's settings (config file and all).
    snapshot = Path(job.command[job.command.index("--config") + 1])
    assert load_settings(snapshot, job_settings.data_dir) == job_settings
    assert training_status(job_settings, job.name).state in ("starting", "running")

    # One run at a time, and the refusal names the run in the way.
    with pytest.raises(StateError, match="'four-steps' is still running"):
        start_training(job_settings, overrides={"max_steps": STEPS})
    assert active_training(job_settings) == "four-steps"

    progressing = wait_for(job_settings, job.name, lambda s: bool(s.losses) or not s.active)
    assert progressing.losses, progressing.log_tail
    done = wait_for(job_settings, job.name, lambda s: not s.active)
    assert done.state == "done", done.log_tail
    assert (done.step, done.max_steps, done.method) == (STEPS, STEPS, "sft")

    # The curve is exactly what the trainer logged, one point per step (log_every 1).
    logged = step_records(job_settings, job.name)
    assert [(p.step, p.loss) for p in done.losses] == [(r["step"], r["loss"]) for r in logged]
    assert [p.step for p in done.losses] == list(range(1, STEPS + 1))
    assert all(math.isfinite(p.loss) and p.loss > 0 for p in done.losses)

    # The registered adapter carries the held-out losses the status shows.
    info = AdapterRegistry(job_settings.adapters_dir).get(job.name)
    assert info.metrics["eval_loss_before"] == pytest.approx(done.eval_loss_before, rel=1e-4)
    assert info.metrics["eval_loss_after"] == pytest.approx(done.eval_loss_after, rel=1e-4)
    assert active_training(job_settings) is None
    with pytest.raises(StateError, match="'four-steps' cannot be resumed"):
        start_training(job_settings, name="four-steps", resume=True)

    # Evaluation: its own process too, one at a time, read back from evaluation.json.
    assert evaluation_status(job_settings, "four-steps").state == "none"
    start_evaluation(job_settings, "four-steps", limit=5)
    assert evaluation_status(job_settings, "four-steps").state == "running"
    with pytest.raises(StateError, match="'four-steps' is being evaluated"):
        start_evaluation(job_settings, "four-steps")
    deadline = time.monotonic() + TIMEOUT_S
    while (status := evaluation_status(job_settings, "four-steps")).state == "running":
        assert time.monotonic() < deadline, "the evaluation did not finish"
        time.sleep(2.0)
    assert status.state == "done", status.log_tail
    evaluation = status.evaluation
    assert evaluation["adapter"]["name"] == "four-steps"
    assert evaluation["win_likeness"]["n"] == len(evaluation["rows"]) == 5
    assert {row["call_id"] for row in evaluation["rows"]}.isdisjoint(info_train_calls(info))
