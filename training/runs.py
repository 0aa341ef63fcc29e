"""A training run's folder: the contract between the trainer, the CLI and the UI.

A run lives in ``<adapters_dir>/<name>/`` from its first step. The trainer writes,
and everyone else only reads, except for the stop request:

- ``run.json``: state (``running``, ``stopped``, ``failed``, ``done``), pid and host,
  the method (``sft`` or ``dpo``), ``max_steps``, the resolved training config and
  the author. Replaced atomically on every change of state.
- ``progress.jsonl``: one JSON object per line. ``{"event": "step", "step",
  "max_steps", "loss", "lr", "tokens_per_s", "eta_s", "elapsed_s", "epoch"}`` every
  ``training.log_every`` steps; ``{"event": "eval", "phase": "before"|"after",
  "loss"}``; ``{"event": "end", "state", "message"}`` last in each session. A
  resumed run appends to the same file, starting with ``{"event": "resume",
  "step"}``: step records after it restart from that (checkpointed) step, so a
  reader keeps the last record per step.
- ``STOP``: created by whoever wants the run to end (``request_stop``). The trainer
  checks for it after every optimiser step, saves a checkpoint and ends ``stopped``;
  ``copilot train --resume`` carries on from there.
- ``checkpoints/step-<N>/``: what a resume needs.
- ``copilot_adapter.json``: written last, only by a run that finished; from then on
  the registry lists the folder as an adapter.

    run = RunFolder(settings.adapters_dir / name)
    run.request_stop()
    for record in run.progress(): ...
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from copilot.store import process_alive
from training.registry import METADATA_FILE, write_json_atomic

logger = logging.getLogger(__name__)

STATE_FILE = "run.json"
PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "STOP"
CHECKPOINTS_DIR = "checkpoints"

RUNNING, STOPPED, FAILED, DONE = "running", "stopped", "failed", "done"


@dataclass(frozen=True)
class RunStatus:
    """What ``run.json`` says, with the liveness of a ``running`` run checked."""

    name: str
    path: Path
    state: str
    method: str
    max_steps: int
    step: int  # the last logged step, 0 before the first
    pid: int | None
    started_at: str | None
    message: str | None = None

    @property
    def resumable(self) -> bool:
        return self.state in (STOPPED, FAILED) and self.step < self.max_steps


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def finished(self) -> bool:
        return (self.path / METADATA_FILE).is_file()

    # The trainer's side

    def write_state(self, state: str, **fields: Any) -> None:
        """Replace ``run.json``, keeping earlier fields that ``fields`` does not change."""
        current = self.read_state()
        current.update(fields)
        current.update(
            state=state,
            pid=os.getpid() if state == RUNNING else current.get("pid"),
            host=socket.gethostname(),
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        current.setdefault("started_at", current["updated_at"])
        write_json_atomic(self.path / STATE_FILE, current)

    def log(self, record: dict[str, Any]) -> None:
        with self.progress_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def stop_requested(self) -> bool:
        return (self.path / STOP_FILE).exists()

    def clear_stop(self) -> None:
        (self.path / STOP_FILE).unlink(missing_ok=True)

    # Everyone's side

    def request_stop(self) -> None:
        """Ask the run to checkpoint and stop after its current step."""
        (self.path / STOP_FILE).touch()
        logger.info("asked training run %s to stop", self.name)

    def read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.path / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("unreadable %s in %s: %s", STATE_FILE, self.path, exc)
            return {}
        return state if isinstance(state, dict) else {}

    def progress(self) -> Iterator[dict[str, Any]]:
        """The progress records written so far; a line still being written is skipped."""
        try:
            lines = self.progress_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def status(self) -> RunStatus:
        state = self.read_state()
        steps = [r["step"] for r in self.progress() if r.get("event") == "step"]
        current = str(state.get("state") or (DONE if self.finished else FAILED))
        message = state.get("message")
        pid = state.get("pid")
        if current == RUNNING and not _alive(state.get("host"), pid):
            # Killed without a chance to say so (power cut, kill -9): resumable.
            current, message = FAILED, "the training process is gone; `copilot train --resume`"
        return RunStatus(
            name=self.name,
            path=self.path,
            state=current,
            method=str(state.get("method") or "sft"),
            max_steps=int(state.get("max_steps") or 0),
            step=max(steps, default=0),
            pid=pid if isinstance(pid, int) else None,
            started_at=state.get("started_at"),
            message=message,
        )


def list_runs(adapters_dir: Path) -> list[RunStatus]:
    """Every run folder (finished or not), oldest first."""
    if not Path(adapters_dir).is_dir():
        return []
    runs = [
        RunFolder(p).status()
        for p in sorted(Path(adapters_dir).iterdir())
        if p.is_dir() and (p / STATE_FILE).is_file()
    ]
    return sorted(runs, key=lambda r: (r.started_at or "", r.name))


def latest_resumable(adapters_dir: Path) -> RunStatus | None:
    resumable = [r for r in list_runs(adapters_dir) if r.resumable]
    return resumable[-1] if resumable else None


def run_of_process(adapters_dir: Path, pid: int) -> RunFolder | None:
    """The run that process ``pid`` of this host is training now, if its run.json says so."""
    if not Path(adapters_dir).is_dir():
        return None
    for path in sorted(Path(adapters_dir).iterdir()):
        if not (path / STATE_FILE).is_file():
            continue
        state = RunFolder(path).read_state()
        if (
            state.get("state") == RUNNING
            and state.get("pid") == pid
            and state.get("host") == socket.gethostname()
        ):
            return RunFolder(path)
    return None


def _alive(host: Any, pid: Any) -> bool:
    # A run.json without a usable pid cannot be checked, so it is trusted.
    return not isinstance(pid, int) or process_alive(host if isinstance(host, str) else None, pid)
