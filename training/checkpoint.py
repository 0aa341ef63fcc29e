"""Training checkpoints: everything a resumed run needs to carry on as if never stopped.

``<run>/checkpoints/step-<N>/`` holds

- ``adapter_model.safetensors`` + ``adapter_config.json``: the LoRA weights (peft's format);
- ``trainer.pt``: optimiser and scheduler state, and the RNG states (python, torch CPU,
  CUDA) so dropout draws the same masks after a resume;
- ``state.json``: step, the example-order cursor (epoch, position), elapsed seconds,
  tokens seen, the held-out loss before training, the data hash.

A checkpoint is written into a temporary sibling folder and renamed into place,
so a crash mid-write (even ``kill -9``) leaves either the old set or the new one,
never a half-written folder that a resume would trust. The newest ``KEEP`` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from copilot.errors import StateError
from training.runs import RunFolder

logger = logging.getLogger(__name__)

KEEP = 2
STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"
WEIGHTS_FILE = "adapter_model.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    """The JSON part of a checkpoint."""

    step: int
    max_steps: int
    order: dict[str, int]  # training.batching.ExampleOrder.state()
    elapsed_s: float
    tokens_seen: int
    eval_loss_before: float
    data_hash: str


def checkpoints(run: RunFolder) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are not listed)."""
    if not run.checkpoints_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in run.checkpoints_dir.iterdir()
        if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run: RunFolder) -> Path | None:
    found = checkpoints(run)
    return found[-1] if found else None


def save_checkpoint(
    run: RunFolder, model: Any, optimizer: Any, scheduler: Any, state: TrainerState
) -> Path:
    """Write ``checkpoints/step-<N>`` atomically and drop all but the newest ``KEEP``."""
    import torch

    started = time.perf_counter()
    run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = run.checkpoints_dir / f"step-{state.step}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=run.checkpoints_dir))
    try:
        model.save_pretrained(staging)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_states(),
            },
            staging / TRAINER_FILE,
        )
        # state.json last: a folder without it is never listed as a checkpoint.
        (staging / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        if final.exists():  # the same step saved again (a stop right after a checkpoint)
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    for old in checkpoints(run)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    _remove_leftovers(run)
    logger.info(
        "checkpoint at step %d/%d in %s (%.2f s)",
        state.step,
        state.max_steps,
        final,
        time.perf_counter() - started,
    )
    return final


def read_state(checkpoint: Path) -> TrainerState:
    return TrainerState(**json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")))


def load_checkpoint(checkpoint: Path, model: Any, optimizer: Any, scheduler: Any) -> TrainerState:
    """Restore weights, optimiser, scheduler and RNG states into the live objects."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = model.get_input_embeddings().weight.device
    result = set_peft_model_state_dict(
        model, load_file(checkpoint / WEIGHTS_FILE, device=str(device))
    )
    if getattr(result, "unexpected_keys", None):
        raise StateError(
            f"checkpoint {checkpoint} does not fit this run's LoRA layers (unexpected weights "
            f"such as {result.unexpected_keys[0]}); start a new run with `copilot train`"
        )
    saved = torch.load(checkpoint / TRAINER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_states(saved["rng"])
    state = read_state(checkpoint)
    logger.info("resumed from %s (step %d/%d)", checkpoint, state.step, state.max_steps)
    return state


def remove_checkpoints(run: RunFolder) -> None:
    """A finished run no longer needs them (several MB each)."""
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)


def _remove_leftovers(run: RunFolder) -> None:
    # Staging folders of a process killed mid-write; ours was renamed or removed already.
    for leftover in run.checkpoints_dir.glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _rng_states() -> dict[str, Any]:
    import torch

    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    import torch

    random.setstate(states["python"])
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
