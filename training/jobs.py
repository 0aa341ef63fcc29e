"""Training and evaluation as background processes: what the UI starts, watches and stops.

The UI (or any long-lived caller) never trains in its own process: a run would
hold the GIL and the CPU for minutes and take the server and every rep's chat
down with it. Instead each job is the same ``copilot`` command a manager could
type, spawned as its own process in its own session (a Ctrl-C on the server
does not kill it) with no shell:

    job = start_training(settings, overrides={"max_steps": 40})
    training_status(settings, job.name)      # state, step, losses, log tail
    stop_training(settings, job.name)        # RunFolder.request_stop()
    start_evaluation(settings, job.name)     # `copilot eval NAME --json`

The run folder (``training.runs``) stays the source of truth for a run; this
module adds only what exists before the trainer writes ``run.json`` or after a
process died without a word: a job record and a log file per job under
``<data_dir>/jobs/``, so that a command that fails on a bad option shows its own
error text instead of a run that never starts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from copilot.errors import NotFoundError, StateError
from copilot.settings import Settings
from training.registry import AdapterRegistry, validate_adapter_name, write_json_atomic
from training.runs import DONE, FAILED, RUNNING, STATE_FILE, STOPPED, RunFolder, RunStatus

logger = logging.getLogger(__name__)

TRAIN, EVAL = "train", "eval"
# Until the trainer writes run.json (the first seconds: Python and library imports)
# a run is only a process.
STARTING = "starting"
# Evaluation states besides RUNNING, FAILED and DONE: never evaluated.
NOT_EVALUATED = "none"
JOBS_DIR = "jobs"
LOG_TAIL_LINES = 25

# Children this process spawned, by (kind, name): polling them reaps them, so a
# finished child never lingers as a zombie that still looks alive to os.kill(pid, 0).
_children: dict[tuple[str, str], subprocess.Popen] = {}
# One start at a time within this process, so two clicks cannot both pass the
# "nothing is running" check. Two separate processes could still race; the
# trainer refusing an existing run folder is the last guard there.
_start_lock = threading.Lock()


@dataclass(frozen=True)
class TrainingJob:
    """A spawned ``copilot`` command: what to watch and where its output goes."""

    name: str  # the adapter / run name
    kind: str  # "train" or "eval"
    pid: int
    command: list[str]
    log_path: Path
    started_at: str
    stop_requested: bool = False


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float


@dataclass(frozen=True)
class TrainingStatus:
    """A run as the UI shows it; ``losses`` are the logged training losses, in step order."""

    name: str
    state: str  # starting, running, stopped, failed, done
    method: str | None
    step: int
    max_steps: int | None
    tokens_per_s: float | None
    eta_s: float | None
    losses: list[LossPoint] = field(default_factory=list)
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    message: str | None = None
    log_tail: str = ""  # the end of the command's output, filled when the run failed
    run: RunStatus | None = None

    @property
    def active(self) -> bool:
        return self.state in (STARTING, RUNNING)


@dataclass(frozen=True)
class EvaluationStatus:
    """An adapter's evaluation: the saved result (if any) and the job computing a new one."""

    name: str
    state: str  # none, running, failed, done
    evaluation: dict[str, Any] | None
    message: str | None = None
    log_tail: str = ""


# --- training -------------------------------------------------------------------


def start_training(
    settings: Settings,
    *,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
    config_path: Path | None = None,
    resume: bool = False,
) -> TrainingJob:
    """Spawn ``copilot train --name NAME --set KEY=VALUE ...``; returns at once.

    ``overrides`` are ``training:`` keys. ``config_path`` is the config file the
    caller runs with; without one the child gets a snapshot of ``settings``, so it
    trains with exactly what the server uses. Bad override values raise
    ConfigError here, before anything is spawned. ``resume=True`` continues the
    stopped or failed run ``name`` from its last checkpoint, with its own config.
    """
    overrides = dict(overrides or {})
    # Validated in-process: a typo or a negative learning rate is reported now, in
    # the caller's words, not as a child process that dies a second later.
    resolved = settings.with_training(overrides).training
    recipe = {key: getattr(resolved, key) for key in overrides}

    with _start_lock:
        active = active_training(settings)
        if active is not None:
            raise StateError(
                f"training run '{active}' is still running; wait for it to finish or stop it "
                "(Stop button, or touch its STOP file) before starting another"
            )
        if resume:
            name = _resumable(settings, name)
        elif name:
            name = validate_adapter_name(name)
            if (settings.adapters_dir / name).exists():
                raise StateError(
                    f"a run or adapter named '{name}' already exists in {settings.adapters_dir}; "
                    "choose another name or leave it empty for a dated default"
                )
        else:
            name = _new_run_name(settings, resolved.method)

        command = [*_cli_prefix(settings, config_path, f"{TRAIN}-{name}"), "train", "--name", name]
        for key, value in sorted(recipe.items()):
            command += ["--set", f"{key}={_yaml_value(value)}"]
        command += ["--resume", "--json"] if resume else ["--json"]
        job = _spawn(settings, TRAIN, name, command)
    logger.info(
        "%s training run %s (pid %d, %s); log in %s",
        "resumed" if resume else "started",
        name,
        job.pid,
        ", ".join(f"{k}={v}" for k, v in sorted(recipe.items())) or "config defaults",
        job.log_path,
    )
    return job


def stop_training(settings: Settings, name: str) -> TrainingStatus:
    """Ask run ``name`` to checkpoint and stop after its current step (it stays resumable)."""
    status = training_status(settings, name)
    if status.state == RUNNING:
        RunFolder(settings.adapters_dir / name).request_stop()
        return status
    if status.state == STARTING:
        # No step has run, so there is nothing to checkpoint: end the process. (Its run
        # folder may not exist yet, so a STOP file has nowhere to go.) Should run.json
        # appear in between, the run reads as failed and resumable, never as running.
        job = _read_job(settings, TRAIN, name)
        if job is not None:
            _write_job(settings, _replace(job, stop_requested=True))
            _terminate(job)
            logger.info("stopped training run %s before its first step", name)
        return training_status(settings, name)
    raise StateError(
        f"training run '{name}' is not running (state: {status.state}); nothing to stop"
    )


def training_status(settings: Settings, name: str) -> TrainingStatus:
    """The run's state, its logged losses, and on failure the end of its output."""
    validate_adapter_name(name)
    run_folder = RunFolder(settings.adapters_dir / name)
    job = _read_job(settings, TRAIN, name)
    exit_code = _exit_code(job) if job else None
    has_state = (run_folder.path / STATE_FILE).is_file()

    if not has_state and job is None and not run_folder.finished:
        raise NotFoundError(
            f"no training run named '{name}'; runs are listed in the Train tab and under "
            f"{settings.adapters_dir}"
        )

    # The run folder's account, once the trainer has written one
    run = run_folder.status() if has_state or run_folder.finished else None
    records = list(run_folder.progress())
    # A resumed run re-logs the steps after its checkpoint: the last record per step counts.
    by_step = {int(r["step"]): r for r in records if r.get("event") == "step" and "step" in r}
    steps = [by_step[step] for step in sorted(by_step)]
    evals = {r.get("phase"): r.get("loss") for r in records if r.get("event") == "eval"}
    last = steps[-1] if steps else {}

    if run is not None:
        state, message = run.state, run.message
        if state == RUNNING and exit_code is not None and job is not None and run.pid == job.pid:
            # Our own child is gone but run.json still says running (killed mid-write);
            # reaping it here also keeps a zombie from passing the liveness check.
            state, message = FAILED, f"the training process exited with code {exit_code}"
    elif exit_code is None and job is not None:
        state, message = STARTING, "loading the model and building the dataset"
    elif job is not None and job.stop_requested:
        state, message = STOPPED, "stopped before the first step"
    else:
        state, message = FAILED, None

    tail = ""
    if state == FAILED and job is not None:
        tail = _log_tail(job.log_path)
        message = (
            message or _error_line(tail) or f"the training command exited with code {exit_code}"
        )

    return TrainingStatus(
        name=name,
        state=state,
        method=run.method if run else None,
        step=run.step if run else 0,
        max_steps=(run.max_steps or None) if run else last.get("max_steps"),
        tokens_per_s=last.get("tokens_per_s"),
        eta_s=last.get("eta_s") if state == RUNNING else None,
        losses=[LossPoint(int(r["step"]), float(r["loss"])) for r in steps if "loss" in r],
        eval_loss_before=_float_or_none(evals.get("before")),
        eval_loss_after=_float_or_none(evals.get("after")),
        message=message,
        log_tail=tail,
        run=run,
    )


def list_training_runs(settings: Settings) -> list[str]:
    """Names of every run (finished, stopped, failed or in progress), oldest first."""
    from training.runs import list_runs

    names = [r.name for r in list_runs(settings.adapters_dir)]
    # Runs spawned here that have not written run.json yet (or never will: a bad option).
    for job in _jobs(settings, TRAIN):
        if job.name not in names:
            names.append(job.name)
    return names


def active_training(settings: Settings) -> str | None:
    """The name of the run that is starting or running, if any (there is at most one)."""
    from training.runs import list_runs

    for run in list_runs(settings.adapters_dir):
        if run.state == RUNNING:
            job = _read_job(settings, TRAIN, run.name)
            if job is None or job.pid != run.pid or _exit_code(job) is None:
                return run.name
    # A spawned run that has not written run.json yet (once it has, run.json decides:
    # a process still exiting after writing "done" is not training any more).
    for job in _jobs(settings, TRAIN):
        started = (settings.adapters_dir / job.name / STATE_FILE).is_file()
        if not started and _exit_code(job) is None:
            return job.name
    return None


# --- evaluation -------------------------------------------------------------------


def start_evaluation(
    settings: Settings, name: str, *, limit: int | None = None, config_path: Path | None = None
) -> TrainingJob:
    """Spawn ``copilot eval NAME --json`` (base vs adapter on held-out calls); returns at once.

    ``limit``: held-out objections to reply to (the command's default when None).
    """
    AdapterRegistry(settings.adapters_dir).get(name)  # NotFoundError names the known adapters
    with _start_lock:
        for job in _jobs(settings, EVAL):
            if _exit_code(job) is None:
                raise StateError(
                    f"adapter '{job.name}' is being evaluated; wait for it to finish "
                    "(one evaluation at a time: each one loads and runs the model)"
                )
        command = [*_cli_prefix(settings, config_path, f"{EVAL}-{name}"), "eval", name, "--json"]
        if limit is not None:
            command += ["--limit", str(limit)]
        job = _spawn(settings, EVAL, name, command)
    logger.info("started evaluation of %s (pid %d); log in %s", name, job.pid, job.log_path)
    return job


def evaluation_status(settings: Settings, name: str) -> EvaluationStatus:
    """The saved evaluation of adapter ``name``, and whether a new one is being computed."""
    evaluation = _load_evaluation(settings, name)  # NotFoundError for an unknown adapter
    job = _read_job(settings, EVAL, name)
    if job is None:
        state = DONE if evaluation is not None else NOT_EVALUATED
        return EvaluationStatus(name, state, evaluation)

    exit_code = _exit_code(job)
    if exit_code is None:
        return EvaluationStatus(name, RUNNING, evaluation, "evaluating base model and adapter")
    if exit_code == 0 and evaluation is not None:
        return EvaluationStatus(name, DONE, evaluation)
    tail = _log_tail(job.log_path)
    message = _error_line(tail) or f"the evaluation command exited with code {exit_code}"
    return EvaluationStatus(name, FAILED, evaluation, message, tail)


# --- processes and job records -----------------------------------------------------


def _cli_prefix(settings: Settings, config_path: Path | None, job_key: str) -> list[str]:
    """``python -m serve.cli --data-dir D --config C``: the same entry point as a typed command."""
    if config_path is None:
        # A snapshot of the caller's settings: whatever config file, environment or
        # in-code override produced them, the child resolves exactly the same values.
        config_path = _jobs_dir(settings) / f"{job_key}.config.yaml"
        snapshot = settings.model_dump(mode="json", exclude={"data_dir"})
        config_path.write_text(yaml.safe_dump(snapshot, sort_keys=True), encoding="utf-8")
    return [
        sys.executable,
        "-m",
        "serve.cli",
        "--data-dir",
        str(settings.data_dir),
        "--config",
        str(Path(config_path).resolve()),
    ]


def _spawn(settings: Settings, kind: str, name: str, command: list[str]) -> TrainingJob:
    log_path = _jobs_dir(settings) / f"{kind}-{name}.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the server does not end a training run.
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    _children[(kind, name)] = child
    job = TrainingJob(
        name=name,
        kind=kind,
        pid=child.pid,
        command=command,
        log_path=log_path,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_job(settings, job)
    return job


def _exit_code(job: TrainingJob) -> int | None:
    """None while the job's process runs; its exit code (or -1 if unknown) once it ended."""
    child = _children.get((job.kind, job.name))
    if child is not None and child.pid == job.pid:
        return child.poll()
    # Spawned by another process (a server since restarted): only liveness is known.
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return -1
    except PermissionError:
        return None
    return None


def _terminate(job: TrainingJob) -> None:
    child = _children.get((job.kind, job.name))
    try:
        if child is not None and child.pid == job.pid:
            child.terminate()
            child.wait(timeout=10)
        else:
            os.kill(job.pid, signal.SIGTERM)
    except (ProcessLookupError, subprocess.TimeoutExpired) as exc:
        logger.warning("could not end %s job %s (pid %d): %s", job.kind, job.name, job.pid, exc)


def _jobs_dir(settings: Settings) -> Path:
    folder = settings.data_dir / JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _job_path(settings: Settings, kind: str, name: str) -> Path:
    return settings.data_dir / JOBS_DIR / f"{kind}-{name}.json"


def _write_job(settings: Settings, job: TrainingJob) -> None:
    record = {**asdict(job), "log_path": str(job.log_path)}
    write_json_atomic(_job_path(settings, job.kind, job.name), record)


def _read_job(settings: Settings, kind: str, name: str) -> TrainingJob | None:
    path = _job_path(settings, kind, name)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return TrainingJob(**{**record, "log_path": Path(record["log_path"])})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logger.warning("ignoring unreadable job record %s: %s", path, exc)
        return None


def _jobs(settings: Settings, kind: str) -> list[TrainingJob]:
    folder = settings.data_dir / JOBS_DIR
    if not folder.is_dir():
        return []
    names = sorted(p.name[len(kind) + 1 : -len(".json")] for p in folder.glob(f"{kind}-*.json"))
    return [job for n in names if (job := _read_job(settings, kind, n)) is not None]


def _replace(job: TrainingJob, **changes: Any) -> TrainingJob:
    return TrainingJob(**{**asdict(job), "log_path": job.log_path, **changes})


def _resumable(settings: Settings, name: str | None) -> str:
    """The run a resume continues: ``name``, else the newest stopped or failed one."""
    from training.runs import latest_resumable

    if not name:
        latest = latest_resumable(settings.adapters_dir)
        if latest is None:
            raise StateError("no stopped or failed training run to resume; start a new one")
        return latest.name
    status = training_status(settings, validate_adapter_name(name))
    if status.run is None or not status.run.resumable:
        raise StateError(
            f"training run '{name}' cannot be resumed (state: {status.state}); only a stopped "
            "or failed run with steps left can"
        )
    return name


def _yaml_value(value: Any) -> str:
    """``value`` as the CLI's ``--set`` reads it back (YAML): ``sft``, ``0.0005``, ``[a, b]``."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    if isinstance(value, float) and "e" in repr(value) and "." not in repr(value):
        return repr(value).replace("e", ".0e")  # YAML reads 1e-05 as a string, 1.0e-05 as a float
    return json.dumps(value)  # JSON is YAML, and quotes what YAML would re-type


def _new_run_name(settings: Settings, method: str) -> str:
    """``<yyyymmdd-hhmmss>-<method>``, with ``-2``, ``-3`` ... if taken."""
    base = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{method}"
    name, n = base, 1
    while (settings.adapters_dir / name).exists() or _job_path(settings, TRAIN, name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    # Progress bars redraw with carriage returns; keep each bar's last state only.
    rows = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join([row for row in rows if row.strip()][-lines:])


def _error_line(tail: str) -> str | None:
    """The CLI's own ``error: ...`` line, else the last line (of a traceback, a usage error)."""
    # Usage errors come framed in a box drawn with these characters.
    lines = [line.strip(" │╭╮╰╯─") for line in tail.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else None


def _load_evaluation(settings: Settings, name: str) -> dict[str, Any] | None:
    from training.judge import load_evaluation

    return load_evaluation(AdapterRegistry(settings.adapters_dir).get(name))


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
