"""LoRA fine-tuning of the generator on won-call objection replies.

    run = train_adapter(settings, objections, max_steps=40, author="maria")
    run = train_adapter(settings, objections, resume=True)               # newest resumable run
    run = train_adapter(settings, objections, resume=True, name="q3-price")

One process, CPU or one GPU, a plain torch loop: AdamW, linear warmup then linear
decay, ``training.grad_accum_steps`` micro-batches per optimiser step, each
micro-batch ``training.batch_size`` examples packed into one row without padding
(``training.batching``), loss on the reply tokens only, averaged over every reply
token of the step. The held-out reply loss is measured before (the base model)
and after.

The run folder follows ``training.runs``: ``run.json`` goes running -> done,
stopped or failed; ``progress.jsonl`` gets step, eval, resume and end records; a
``STOP`` file ends the run after the current step with a checkpoint; checkpoints
(``training.checkpoint``) every ``training.checkpoint_every`` steps let
``resume=True`` carry on with the config recorded when the run started, to the
same number of steps. ``copilot_adapter.json`` is written last, by a run that finished.

``training.method: dpo`` hands the whole run to ``training.dpo``.
"""

from __future__ import annotations

import logging
import platform
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from copilot.errors import InputError, StateError
from copilot.schemas import Objection
from copilot.settings import Settings
from training.batching import ExampleOrder, accumulate_gradients, pack
from training.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    read_state,
    remove_checkpoints,
    save_checkpoint,
)
from training.dataset import build_examples, build_sft_data, data_hash, require_both_outcomes
from training.evaluate import perplexity, response_loss
from training.export import make_adapter_portable
from training.model import base_model_id, load_base
from training.registry import (
    METADATA_FILE,
    AdapterRegistry,
    default_adapter_name,
    validate_adapter_name,
    write_json_atomic,
)
from training.runs import (
    DONE,
    FAILED,
    PROGRESS_FILE,
    RUNNING,
    STOPPED,
    RunFolder,
    latest_resumable,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PROGRESS_FILE",
    "TrainingRun",
    "device_name",
    "peak_memory",
    "resolved_config",
    "run_summary",
    "train_adapter",
]

WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0
EVAL_BATCH_SIZE = 4


@dataclass
class TrainingRun:
    """What one training run produced; losses are nats per response token.

    ``state`` is ``done`` (adapter registered) or ``stopped`` (a STOP request ended
    it after ``steps`` of ``max_steps``; no adapter yet, ``eval_loss_after`` is None,
    ``copilot train --resume`` continues it).
    """

    name: str
    path: Path
    base_model: str
    steps: int
    train_examples: int
    eval_examples: int
    train_calls: list[str] = field(repr=False)
    eval_calls: list[str] = field(repr=False)
    tokens_per_s: float
    wall_s: float
    eval_loss_before: float
    eval_loss_after: float | None
    data_hash: str
    state: str = DONE
    max_steps: int = 0
    method: str = "sft"


ProgressCallback = Callable[[int, float], None]


def train_adapter(
    settings: Settings,
    objections: Sequence[Objection],
    *,
    max_steps: int | None = None,
    name: str | None = None,
    author: str | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    embed: Callable[[Sequence[str]], Any] | None = None,
) -> TrainingRun:
    """Fine-tune a LoRA adapter on ``objections`` and register it; see the module docstring.

    ``resume=True`` continues run ``name`` (else the newest stopped or failed run)
    from its newest checkpoint, with the settings recorded in its ``run.json``.
    ``progress(step, loss)`` is called after every optimiser step, for in-process
    observers; the CLI and the UI read ``progress.jsonl`` instead. ``embed`` (texts
    to vectors) lets ``method: dpo`` pair won and lost replies by similarity.
    """
    # Guards that need no model: the step count, the run to resume, a dataset that is
    # empty or holds one outcome class only
    if max_steps is not None and max_steps < 1:
        raise InputError(f"max_steps must be at least 1, got {max_steps}")
    run: RunFolder | None = None
    if resume:
        run, settings = _resumable_run(settings, name, max_steps)
        max_steps = int(run.read_state()["max_steps"])
    require_both_outcomes(objections)

    if settings.training.method == "dpo":
        from training.dpo import train_preference_adapter

        return train_preference_adapter(
            settings,
            objections,
            max_steps=max_steps,
            name=run.name if run is not None else name,
            author=author,
            resume=resume,
            embed=embed,
            progress=progress,
        )
    return _train_sft(settings, objections, max_steps, name, author, run, progress)


def run_summary(run: TrainingRun) -> dict:
    """The run as JSON-ready values (paths as strings)."""
    summary = asdict(run)
    summary["path"] = str(run.path)
    return summary


def resolved_config(settings: Settings) -> dict[str, Any]:
    """The whole settings as JSON, without the data dir (machine-specific, never reused)."""
    return settings.model_dump(mode="json", exclude={"data_dir"})


# --- the SFT run ------------------------------------------------------------------


def _train_sft(
    settings: Settings,
    objections: Sequence[Objection],
    max_steps: int | None,
    name: str | None,
    author: str | None,
    resumed: RunFolder | None,
    progress: ProgressCallback | None,
) -> TrainingRun:
    cfg = settings.training
    steps = max_steps or cfg.max_steps

    # The data's identity before the model loads: the run folder is named by it,
    # and a resume on changed data is refused here
    train, evaluation, _, _ = build_examples(objections, cfg)
    current_hash = data_hash(train, evaluation)
    base_id = base_model_id(settings)
    if resumed is not None:
        run = resumed
        recorded_hash = run.read_state().get("data_hash")
        recorded_base = run.read_state().get("base_model")
        if recorded_base != base_id:
            raise StateError(
                f"run '{run.name}' was started on base model '{recorded_base}', but this "
                f"machine's base model is '{base_id}'; resume it where that model is installed, "
                "or start a new run with `copilot train`"
            )
        if recorded_hash != current_hash:
            raise StateError(
                f"the training data changed since run '{run.name}' started (data hash "
                f"{str(recorded_hash)[:12]} then, {current_hash[:12]} now: calls were ingested, "
                "objections re-mined or labels corrected), so its checkpoints no longer fit; "
                "start a new run with `copilot train` (without --resume)"
            )
        run.clear_stop()
        run.write_state(RUNNING, message=None, resumes=int(run.read_state().get("resumes", 0)) + 1)
    else:
        run = RunFolder(
            _new_adapter_dir(AdapterRegistry(settings.adapters_dir), name, current_hash)
        )
        run.write_state(
            RUNNING,
            name=run.name,
            method="sft",
            max_steps=steps,
            author=author,
            base_model=base_id,
            data_hash=current_hash,
            config=_with_steps(resolved_config(settings), steps),
        )

    try:
        return _run_loop(settings, objections, steps, run, resumed is not None, progress)
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        run.write_state(FAILED, message=message)
        run.log({"event": "end", "state": FAILED, "message": message})
        logger.error("training run %s failed: %s", run.name, message)
        raise


def _run_loop(
    settings: Settings,
    objections: Sequence[Objection],
    steps: int,
    run: RunFolder,
    resuming: bool,
    progress: ProgressCallback | None,
) -> TrainingRun:
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = settings.training
    _seed_everything(cfg.seed)

    # Data and base model (a private copy: peft injects layers into what it wraps)
    model, tokenizer = load_base(settings, fresh=True)
    model.to(_device())
    data = build_sft_data(objections, cfg, tokenizer)
    rows = list(data.train)
    checkpoint = latest_checkpoint(run) if resuming else None
    saved = read_state(checkpoint) if checkpoint is not None else None
    if resuming:
        run.log({"event": "resume", "step": saved.step if saved else 0})
        logger.info(
            "resuming training run %s from %s",
            run.name,
            f"step {saved.step}" if saved else "the start (it stopped before its first checkpoint)",
        )

    # Evaluation of the base model (a resume reuses the first session's figure)
    if saved is not None:
        eval_loss_before = saved.eval_loss_before
    else:
        eval_loss_before = response_loss(model, tokenizer, data.eval, EVAL_BATCH_SIZE)
        run.log({"event": "eval", "phase": "before", "loss": round(eval_loss_before, 5)})
        logger.info(
            "held-out response loss before training: %.4f nats/token (perplexity %.1f)",
            eval_loss_before,
            perplexity(eval_loss_before),
        )

    # LoRA, optimiser, schedule
    _seed_everything(cfg.seed)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    logger.info(
        "LoRA r=%d on %s: %.2f M trainable parameters; %d examples per step "
        "(%d micro-batch(es) of %d, packed without padding)",
        cfg.lora_r,
        ",".join(cfg.target_modules),
        sum(p.numel() for p in trainable) / 1e6,
        cfg.batch_size * cfg.grad_accum_steps,
        cfg.grad_accum_steps,
        cfg.batch_size,
    )
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    warmup = max(1, int(steps * WARMUP_FRACTION))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup + 1)),
    )

    # Where the run stands: fresh, or restored from the newest checkpoint (weights,
    # optimiser, schedule, RNG, example order)
    if checkpoint is not None:
        load_checkpoint(checkpoint, model, optimizer, scheduler)
        order = ExampleOrder.from_state(saved.order)
        clock = _Clock(saved.elapsed_s, saved.tokens_seen)
        first_step = saved.step + 1
    else:
        order, clock, first_step = ExampleOrder(len(rows), cfg.seed), _Clock(0.0, 0), 1

    def snapshot(step: int) -> TrainerState:
        return TrainerState(
            step=step,
            max_steps=steps,
            order=order.state(),
            elapsed_s=round(clock.elapsed_s, 3),
            tokens_seen=clock.tokens_total,
            eval_loss_before=eval_loss_before,
            data_hash=data.data_hash,
        )

    # Training
    model.train()
    last_loss, window_loss, window_tokens = float("nan"), 0.0, 0
    for step in range(first_step, steps + 1):
        step_started = time.perf_counter()
        micro = [
            pack([rows[i] for i in order.next_batch(cfg.batch_size)])
            for _ in range(cfg.grad_accum_steps)
        ]
        last_loss, reply_tokens = accumulate_gradients(model, micro)
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        clock.add_step(time.perf_counter() - step_started, sum(b.tokens for b in micro))
        window_loss += last_loss * reply_tokens
        window_tokens += reply_tokens
        if progress is not None:
            progress(step, last_loss)

        stop = step < steps and run.stop_requested()
        if stop or step % cfg.log_every == 0 or step == steps:
            # The loss is the reply-token mean over the steps since the last record.
            run.log(
                {
                    "event": "step",
                    "step": step,
                    "max_steps": steps,
                    "loss": round(window_loss / window_tokens, 5),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": round(clock.tokens_per_s, 1),
                    "eta_s": round(clock.eta_s(steps - step), 1),
                    "elapsed_s": round(clock.elapsed_s, 2),
                    "epoch": round(order.epochs_done, 3),
                }
            )
            logger.info(
                "step %d/%d: loss %.4f, lr %.2e, %.0f tokens/s",
                step,
                steps,
                window_loss / window_tokens,
                scheduler.get_last_lr()[0],
                clock.tokens_per_s,
            )
            window_loss, window_tokens = 0.0, 0
        if stop or (step % cfg.checkpoint_every == 0 and step < steps):
            save_checkpoint(run, model, optimizer, scheduler, snapshot(step))
        if stop:
            message = (
                f"stopped at step {step}/{steps} on request; "
                f"`copilot train --resume --name {run.name}` continues it"
            )
            run.clear_stop()
            run.write_state(STOPPED, message=message)
            run.log({"event": "end", "state": STOPPED, "message": message})
            logger.info("training run %s %s", run.name, message)
            return _result(run, data, step, steps, eval_loss_before, None, clock, STOPPED)

    # Evaluation of the adapter
    eval_loss_after = response_loss(model, tokenizer, data.eval, EVAL_BATCH_SIZE)
    run.log({"event": "eval", "phase": "after", "loss": round(eval_loss_after, 5)})
    logger.info(
        "held-out response loss after %d steps: %.4f nats/token (perplexity %.1f)",
        steps,
        eval_loss_after,
        perplexity(eval_loss_after),
    )

    # Save: adapter weights first, the registry's metadata file last
    model.save_pretrained(run.path)
    make_adapter_portable(run.path, base_model_id(settings))
    result = _result(run, data, steps, steps, eval_loss_before, eval_loss_after, clock, DONE)
    write_json_atomic(
        run.path / METADATA_FILE,
        adapter_metadata(
            result,
            settings,
            run,
            config=_with_steps(resolved_config(settings), steps),
            final_train_loss=last_loss,
            epochs=order.epochs_done,
            truncated=data.truncated,
        ),
    )
    run.write_state(DONE, message=None)
    run.log({"event": "end", "state": DONE, "message": None})
    run.clear_stop()  # one that came during the last step: nothing was left to stop
    remove_checkpoints(run)
    logger.info(
        "trained adapter %s: %d steps, %d train / %d eval examples, %.0f tokens/s, "
        "%.1f s in all; eval loss %.3f -> %.3f",
        result.name,
        steps,
        result.train_examples,
        result.eval_examples,
        result.tokens_per_s,
        result.wall_s,
        eval_loss_before,
        eval_loss_after,
    )
    return result


@dataclass
class _Clock:
    """Wall time and tokens of a run across its sessions (each resume is a new session).

    ``tokens_per_s`` and ``eta_s`` use this session's optimiser steps only, so a
    resume on another machine reports that machine's speed.
    """

    elapsed_before: float
    tokens_before: int
    session_started: float = field(default_factory=time.perf_counter)
    train_s: float = 0.0
    tokens: int = 0
    steps: int = 0

    def add_step(self, seconds: float, tokens: int) -> None:
        self.train_s += seconds
        self.tokens += tokens
        self.steps += 1

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_started

    @property
    def tokens_total(self) -> int:
        return self.tokens_before + self.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0

    def eta_s(self, steps_left: int) -> float:
        return steps_left * self.train_s / self.steps if self.steps else 0.0


def _result(
    run: RunFolder,
    data: Any,
    steps: int,
    max_steps: int,
    eval_loss_before: float,
    eval_loss_after: float | None,
    clock: _Clock,
    state: str,
) -> TrainingRun:
    return TrainingRun(
        name=run.name,
        path=run.path,
        base_model=str(run.read_state().get("base_model")),
        steps=steps,
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        train_calls=data.train_calls,
        eval_calls=data.eval_calls,
        tokens_per_s=clock.tokens_per_s,
        wall_s=clock.elapsed_s,
        eval_loss_before=eval_loss_before,
        eval_loss_after=eval_loss_after,
        data_hash=data.data_hash,
        state=state,
        max_steps=max_steps,
        method="sft",
    )


def adapter_metadata(
    run: TrainingRun,
    settings: Settings,
    folder: RunFolder,
    *,
    config: dict[str, Any],
    final_train_loss: float,
    epochs: float | None,
    truncated: int,
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``copilot_adapter.json``: enough to tell what the adapter is and to train it again.

    Both methods write it; ``metrics``, ``extra`` (top-level keys) and ``versions``
    add what only one method has (DPO's preference figures, its ``dpo`` block, trl).
    """
    import peft
    import torch
    import transformers

    recorded = folder.read_state()
    return {
        "name": run.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "author": recorded.get("author"),
        "method": run.method,
        "base_model": run.base_model,
        "data_hash": run.data_hash,
        # The whole resolved settings; the data dir is left out (see "machine").
        "config": config,
        "training": {
            **settings.training.model_dump(mode="json"),
            "max_steps": run.steps,
            "method": run.method,
        },
        **(extra or {}),
        "metrics": {
            "eval_loss_before": run.eval_loss_before,
            "eval_loss_after": run.eval_loss_after,
            "eval_perplexity_before": perplexity(run.eval_loss_before),
            "eval_perplexity_after": perplexity(run.eval_loss_after),
            **(metrics or {}),
            "final_train_loss": final_train_loss,
            "tokens_per_s": run.tokens_per_s,
            "wall_s": run.wall_s,
            "steps": run.steps,
            "epochs": epochs,
            **peak_memory(),
        },
        "train_examples": run.train_examples,
        "eval_examples": run.eval_examples,
        "truncated_examples": truncated,
        "train_calls": run.train_calls,
        "eval_calls": run.eval_calls,
        "resumes": int(recorded.get("resumes", 0)),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            **(versions or {}),
        },
        # Machine-specific, for reading only: nothing here is reused to train again.
        "machine": {
            "device": device_name(),
            "platform": platform.platform(),
            "host": recorded.get("host"),
        },
    }


def _resumable_run(
    settings: Settings, name: str | None, max_steps: int | None
) -> tuple[RunFolder, Settings]:
    """The run to resume and the settings it was started with."""
    adapters = settings.adapters_dir
    if name is None:
        status = latest_resumable(adapters)
        if status is None:
            raise StateError(
                f"no stopped or failed training run to resume in {adapters}; "
                "start one with `copilot train`"
            )
    else:
        folder = adapters / validate_adapter_name(name)
        if not RunFolder(folder).read_state():
            raise StateError(
                f"no training run named '{name}' in {adapters} (no run.json there); "
                "`copilot train --resume` without --name picks the newest resumable run"
            )
        status = RunFolder(folder).status()
        if status.state not in (STOPPED, FAILED) or RunFolder(folder).finished:
            hint = {
                RUNNING: f"it is still running (pid {status.pid}); stop it first",
                DONE: "it finished already; start a new run with `copilot train`",
            }.get(status.state, "start a new run with `copilot train`")
            raise StateError(f"training run '{name}' cannot be resumed: {hint}")

    run = RunFolder(status.path)
    recorded = run.read_state()
    if max_steps is not None and max_steps != recorded.get("max_steps"):
        raise InputError(
            f"run '{run.name}' was started with max_steps={recorded.get('max_steps')}; a resumed "
            "run keeps its step count (the schedule depends on it): drop --max-steps"
        )
    config = recorded.get("config")
    if not isinstance(config, dict):
        raise StateError(
            f"run '{run.name}' recorded no config in its run.json, so it cannot be resumed; "
            "start a new run with `copilot train`"
        )
    try:
        resumed = Settings(data_dir=settings.data_dir, **config)
    except ValidationError as exc:
        raise StateError(
            f"the config recorded by run '{run.name}' no longer validates ({exc.error_count()} "
            "problem(s), e.g. a key this version renamed); start a new run with `copilot train`"
        ) from exc
    return run, resumed


def _with_steps(config: dict[str, Any], steps: int) -> dict[str, Any]:
    return {**config, "training": {**config["training"], "max_steps": steps}}


def _new_adapter_dir(registry: AdapterRegistry, name: str | None, data_hash: str) -> Path:
    if name is not None:
        folder = registry.path_for(validate_adapter_name(name))
        if folder.exists():
            raise InputError(
                f"adapter '{name}' already exists in {registry.adapters_dir}; choose another "
                "name, leave it empty for a dated default, or pass --resume to continue it"
            )
    else:
        base = default_adapter_name(data_hash)
        folder, n = registry.path_for(base), 1
        while folder.exists():  # two runs on the same data within one second
            n += 1
            folder = registry.path_for(f"{base}-{n}")
    folder.mkdir(parents=True)
    return folder


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    """What trained: the CUDA device's name, or the CPU and its thread count."""
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {torch.get_num_threads()} threads"


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (its whole life, not just training), in MB."""
    import torch

    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 / 1024**2 if sys.platform == "darwin" else 1 / 1024
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)}
    if torch.cuda.is_available():
        peak["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    return peak


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
