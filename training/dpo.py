"""DPO training of a LoRA adapter on the preference pairs of ``training.preference``.

    run = train_preference_adapter(settings, objections, max_steps=40, author="maria")

m is scored in evaluation.

Training. trl's ``DPOTrainer`` (sigmoid DPO loss, ``beta``) on a LoRA from the
training settings; with peft and no ``ref_model`` trl scores the reference with the
adapter disabled, i.e. the base model. trl renders each reply as the chat
template's assistant turn (for SmolLM2 the reply, ``<|im_end|>`` and a newline):
SFT's target plus one newline token. The held-out figures (``preference_metrics``)
are computed here, on SFT-tokenised sequences. The run folder follows
``training.runs``: run.json states, progress.jsonl records, STOP,
``checkpoints/step-<N>/`` (trl/HF checkpoints, renamed) and ``copilot_adapter.json``
once the run finished.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from copilot.errors import InputError, StateError
from copilot.schemas import Objection
from copilot.settings import Settings
from training.checkpoint import KEEP as KEEP_CHECKPOINTS
from training.checkpoint import remove_checkpoints
from training.dataset import IGNORE_INDEX, SftExample, collate, tokenize_example
from training.evaluate import perplexity, response_loss
from training.export import make_adapter_portable
from training.model import base_model_id, load_base
from training.preference import (
    Embed,
    PreferenceData,
    PreferencePair,
    build_preference_pairs,
)
from training.registry import (
    METADATA_FILE,
    AdapterRegistry,
    default_adapter_name,
    validate_adapter_name,
    write_json_atomic,
)
from training.runs import DONE, FAILED, RUNNING, STOPPED, RunFolder, list_runs

# One copy of the trainer's metadata helpers keeps both methods' adapters alike.
from training.trainer import TrainingRun, adapter_metadata, resolved_config

logger = logging.getLogger(__name__)

METHOD = "dpo"
DEFAULT_BETA = 0.1  # trl's default, for runs recorded before dpo_beta was a setting
WARMUP_FRACTION = 0.1  # as in SFT
EVAL_BATCH_SIZE = 4

ProgressCallback = Callable[[int, float], None]


# --- held-out evaluation -----------------------------------------------------------


@dataclass(frozen=True)
class PairScores:
    """Summed log-probabilities (nats) of each pair's chosen and rejected reply, and lengths."""

    chosen: list[float]
    rejected: list[float]
    chosen_tokens: list[int]
    rejected_tokens: list[int]


def score_pairs(
    model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int
) -> PairScores:
    """Log-probability of every chosen and rejected reply given its pair's prompt.

    Tokenised exactly like SFT examples (``tokenize_example``: chat prompt, reply, eos).
    """
    rows = []
    for p in pairs:
        for reply in (p.chosen, p.rejected):
            example = SftExample(p.chosen_call_id, p.type, p.objection, reply)
            rows.append(tokenize_example(example, tokenizer, max_length))
    sums, counts = _response_logps(model, tokenizer, rows)
    return PairScores(sums[0::2], sums[1::2], counts[0::2], counts[1::2])


def preference_metrics(policy: PairScores, reference: PairScores, beta: float) -> dict[str, float]:
    """Held-out DPO figures of the adapter (``policy``) against the base (``reference``).

    ``preference_accuracy``: share of pairs whose chosen-vs-rejected log-ratio margin
    ``(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))`` is positive, i.e. the
    adapter moved towards the won reply more than towards the lost one. ``dpo_loss``
    is ln 2 for the base model itself. ``chosen_preferred``: share of pairs where the
    model gives the won reply a higher mean per-token log-probability than the lost
    one, for the base (``_before``) and the adapter (``_after``).
    """
    margins = [
        (pc - rc) - (pr - rr)
        for pc, pr, rc, rr in zip(
            policy.chosen, policy.rejected, reference.chosen, reference.rejected, strict=True
        )
    ]
    n = len(margins)

    def prefers(scores: PairScores) -> float:
        return (
            sum(
                c / max(nc, 1) > r / max(nr, 1)
                for c, r, nc, nr in zip(
                    scores.chosen,
                    scores.rejected,
                    scores.chosen_tokens,
                    scores.rejected_tokens,
                    strict=True,
                )
            )
            / n
        )

    return {
        "eval_preference_accuracy": sum(m > 0 for m in margins) / n,
        "eval_reward_margin": beta * sum(margins) / n,
        "eval_dpo_loss": sum(_softplus(-beta * m) for m in margins) / n,
        "eval_chosen_preferred_before": prefers(reference),
        "eval_chosen_preferred_after": prefers(policy),
    }


def _softplus(x: float) -> float:
    # -log(sigmoid(-x)), stable for large |x|
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _response_logps(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]]
) -> tuple[list[float], list[int]]:
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    device = model.get_input_embeddings().weight.device
    sums: list[float] = []
    counts: list[int] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), EVAL_BATCH_SIZE):
                batch = {
                    key: tensor.to(device)
                    for key, tensor in collate(
                        rows[start : start + EVAL_BATCH_SIZE], tokenizer.pad_token_id
                    ).items()
                }
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                # Token t predicts token t+1.
                logits = logits[:, :-1].float()
                labels = batch["labels"][:, 1:]
                nll = F.cross_entropy(
                    logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
                )
                sums.extend((-nll.sum(dim=1)).tolist())
                counts.extend((labels != IGNORE_INDEX).sum(dim=1).tolist())
    finally:
        model.train(was_training)
    return sums, counts


def _chosen_rows(pairs: Sequence[PreferencePair], tokenizer: Any, max_length: int) -> list[dict]:
    """The held-out chosen replies as SFT rows, each (call, objection) once."""
    seen, rows = set(), []
    for p in pairs:
        key = (p.chosen_call_id, p.objection, p.chosen)
        if key in seen:
            continue
        seen.add(key)
        row = tokenize_example(
            SftExample(p.chosen_call_id, p.type, p.objection, p.chosen), tokenizer, max_length
        )
        if row["response_tokens"] > 0:
            rows.append(row)
    if not rows:
        raise StateError(
            f"every held-out chosen reply was cut away by training.max_length={max_length} "
            "tokens; raise max_length"
        )
    return rows


def _truncated_pairs(pairs: Sequence[PreferencePair], tokenizer: Any, max_length: int) -> int:
    """Pairs whose chosen or rejected sequence (prompt + reply + eos) exceeds ``max_length``."""
    return sum(
        any(
            tokenize_example(
                SftExample(p.chosen_call_id, p.type, p.objection, reply), tokenizer, max_length
            )["truncated"]
            for reply in (p.chosen, p.rejected)
        )
        for p in pairs
    )


# --- training --------------------------------------------------------------------


def train_preference_adapter(
    settings: Settings,
    objections: Sequence[Objection],
    *,
    max_steps: int | None = None,
    name: str | None = None,
    author: str | None = None,
    resume: bool = False,
    embed: Embed | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingRun:
    """DPO-train a LoRA adapter on won-vs-lost pairs and register it; see the module docstring.

    ``resume=True`` continues DPO run ``name`` (else the newest stopped or failed
    one) from its newest checkpoint, with the config recorded when it started and
    to the same step count. A run ended by a STOP request returns ``state="stopped"``
    with ``eval_loss_after`` None and no ``copilot_adapter.json``. ``embed`` turns on
    similarity pairing; a resume must pair the way its run started (the data hash
    says so). ``progress(step, loss)`` is called after every optimiser step.
    """
    if max_steps is not None and max_steps < 1:
        raise InputError(f"max_steps must be at least 1, got {max_steps}")
    started = time.perf_counter()

    # The run: the stopped/failed one with its recorded config, or a new folder
    resumed = _resumable_run(settings, name, max_steps) if resume else None
    if resumed is not None:
        run, settings, steps = resumed
        beta = float(run.read_state().get("dpo", {}).get("beta", DEFAULT_BETA))
    else:
        steps = max_steps or settings.training.max_steps
        beta = settings.training.dpo_beta
    data = build_preference_pairs(objections, settings.training, embed)
    base_id = base_model_id(settings)

    if resumed is not None:
        recorded = run.read_state()
        if recorded.get("base_model") != base_id:
            raise StateError(
                f"run '{run.name}' was started on base model '{recorded.get('base_model')}', but "
                f"this machine's base model is '{base_id}'; resume it where that model is "
                "installed, or start a new run"
            )
        if recorded.get("data_hash") != data.data_hash:
            raise StateError(
                f"the preference data changed since run '{run.name}' started (data hash "
                f"{str(recorded.get('data_hash'))[:12]} with {recorded.get('dpo', {}).get('pairing')} "
                f"pairing then, {data.data_hash[:12]} with {data.pairing} pairing now: calls were "
                "ingested, objections re-mined or the embedder changed), so its checkpoints no "
                "longer fit; start a new run (without --resume)"
            )
        run.clear_stop()
        run.write_state(RUNNING, message=None, resumes=int(recorded.get("resumes", 0)) + 1)
    else:
        run = RunFolder(_new_run_dir(AdapterRegistry(settings.adapters_dir), name, data.data_hash))
        run.write_state(
            RUNNING,
            name=run.name,
            method=METHOD,
            max_steps=steps,
            author=author,
            base_model=base_id,
            data_hash=data.data_hash,
            config=_recorded_config(settings, steps),
            dpo={
                "beta": beta,
                "pairing": data.pairing,
                "train_pairs": len(data.train_pairs),
                "eval_pairs": len(data.eval_pairs),
            },
        )

    try:
        return _train(settings, data, run, steps, beta, started, progress, resumed is not None)
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        run.write_state(FAILED, message=message)
        run.log({"event": "end", "state": FAILED, "message": message})
        logger.error("DPO run %s failed: %s", run.name, message)
        raise


def _train(
    settings: Settings,
    data: PreferenceData,
    run: RunFolder,
    steps: int,
    beta: float,
    started: float,
    progress: ProgressCallback | None,
    resuming: bool,
) -> TrainingRun:
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    cfg = settings.training
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    earlier = list(run.progress()) if resuming else []
    checkpoint = _newest_checkpoint(run) if resuming else None
    if resuming:
        resumed_at = int(checkpoint.name[5:]) if checkpoint is not None else 0
        run.log({"event": "resume", "step": resumed_at})
        logger.info("resuming DPO run %s from step %d", run.name, resumed_at)

    # The base model: the held-out baseline, and the reference scores of the eval pairs
    model, tokenizer = load_base(settings, fresh=True)
    chosen_rows = _chosen_rows(data.eval_pairs, tokenizer, cfg.max_length)
    truncated = _truncated_pairs(data.train_pairs, tokenizer, cfg.max_length)
    if truncated:
        logger.warning(
            "%d of %d train pairs are longer than training.max_length=%d tokens and will be cut "
            "(trl drops a pair only when its prompt alone fills max_length); raise max_length "
            "to keep them whole",
            truncated,
            len(data.train_pairs),
            cfg.max_length,
        )
    before = [r for r in earlier if r.get("event") == "eval" and r.get("phase") == "before"]
    if before:  # a resume reuses the first session's figure
        eval_loss_before = float(before[-1]["loss"])
    else:
        eval_loss_before = response_loss(model, tokenizer, chosen_rows)
        run.log({"event": "eval", "phase": "before", "loss": round(eval_loss_before, 5)})
        logger.info(
            "held-out response loss of the base model on %d chosen replies: %.4f nats/token "
            "(perplexity %.1f)",
            len(chosen_rows),
            eval_loss_before,
            perplexity(eval_loss_before),
        )
    reference = score_pairs(model, tokenizer, data.eval_pairs, cfg.max_length)

    # DPO on a LoRA; with peft and no ref_model, trl scores the reference with the
    # adapter disabled, which is the base model
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    args = DPOConfig(
        output_dir=str(run.checkpoints_dir),
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, int(steps * WARMUP_FRACTION)),
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=beta,
        max_length=cfg.max_length,
        seed=cfg.seed,
        data_seed=cfg.seed,
        # A log per step, so the progress callback sees every loss; progress.jsonl
        # still gets a record every training.log_every steps.
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.checkpoint_every,
        # float32 throughout, as SFT; activation checkpointing trades ~20% time for
        # memory that a 135M model does not need.
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    previous_elapsed = max(
        (float(r.get("elapsed_s", 0.0)) for r in earlier if r.get("event") == "step"),
        default=0.0,
    )
    callback = _run_callback(run, steps, cfg.log_every, progress, previous_elapsed)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log to stdout, which --json owns

    # Training, from the newest checkpoint when resuming
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    done_steps = trainer.state.global_step
    policy = trainer.model

    if done_steps < steps:
        message = (
            f"stopped at step {done_steps}/{steps} on request; "
            f"`copilot train --resume --name {run.name}` continues it"
        )
        run.clear_stop()
        run.write_state(STOPPED, message=message)
        run.log({"event": "end", "state": STOPPED, "message": message})
        logger.info("DPO run %s %s", run.name, message)
        return _result(run, data, done_steps, steps, eval_loss_before, None, callback, STOPPED)

    # Evaluation of the adapter against the base model
    eval_loss_after = response_loss(policy, tokenizer, chosen_rows)
    metrics = preference_metrics(
        score_pairs(policy, tokenizer, data.eval_pairs, cfg.max_length), reference, beta
    )
    run.log(
        {
            "event": "eval",
            "phase": "after",
            "loss": round(eval_loss_after, 5),
            "preference_accuracy": round(metrics["eval_preference_accuracy"], 4),
            "reward_margin": round(metrics["eval_reward_margin"], 5),
        }
    )
    logger.info(
        "held-out after %d DPO steps: response loss %.4f -> %.4f nats/token, preference "
        "accuracy %.2f, reward margin %.3f, won reply preferred %.2f -> %.2f",
        steps,
        eval_loss_before,
        eval_loss_after,
        metrics["eval_preference_accuracy"],
        metrics["eval_reward_margin"],
        metrics["eval_chosen_preferred_before"],
        metrics["eval_chosen_preferred_after"],
    )

    # Save: adapter weights first, the registry's metadata file, then the final state
    policy.save_pretrained(run.path)
    make_adapter_portable(run.path, base_model_id(settings))
    result = _result(run, data, steps, steps, eval_loss_before, eval_loss_after, callback, DONE)
    write_json_atomic(
        run.path / METADATA_FILE,
        adapter_metadata(
            result,
            settings,
            run,
            config=_recorded_config(settings, steps),
            final_train_loss=callback.last_loss,
            epochs=trainer.state.epoch,
            truncated=truncated,  # train pairs cut to training.max_length
            metrics=metrics,
            extra={"dpo": run.read_state().get("dpo", {})},
            versions={"trl": _trl_version()},
        ),
    )
    run.write_state(DONE, message=None)
    run.log({"event": "end", "state": DONE, "message": None})
    remove_checkpoints(run)
    run.clear_stop()  # a request that came during the last step has nothing left to stop
    logger.info(
        "trained DPO adapter %s: %d steps, %d train / %d eval pairs, %.0f tokens/s, %.1f s in "
        "all; held-out preference accuracy %.2f",
        result.name,
        steps,
        result.train_examples,
        result.eval_examples,
        result.tokens_per_s,
        result.wall_s,
        metrics["eval_preference_accuracy"],
    )
    return result


def _result(
    run: RunFolder,
    data: PreferenceData,
    steps: int,
    max_steps: int,
    eval_loss_before: float,
    eval_loss_after: float | None,
    callback: Any,
    state: str,
) -> TrainingRun:
    return TrainingRun(
        name=run.name,
        path=run.path,
        base_model=str(run.read_state().get("base_model")),
        steps=steps,
        train_examples=len(data.train_pairs),
        eval_examples=len(data.eval_pairs),
        train_calls=data.train_calls,
        eval_calls=data.eval_calls,
        tokens_per_s=callback.tokens_per_s,
        wall_s=callback.elapsed_s,
        eval_loss_before=eval_loss_before,
        eval_loss_after=eval_loss_after,
        data_hash=data.data_hash,
        state=state,
        max_steps=max_steps,
        method=METHOD,
    )


def _recorded_config(settings: Settings, steps: int) -> dict[str, Any]:
    """The resolved settings as run.json records them, so a resume rebuilds a DPO run."""
    config = resolved_config(settings)
    return {**config, "training": {**config["training"], "max_steps": steps, "method": METHOD}}


def _run_callback(
    run: RunFolder,
    steps: int,
    log_every: int,
    progress: ProgressCallback | None,
    previous_elapsed: float,
) -> Any:
    """A TrainerCallback that writes progress.jsonl, honours STOP and names checkpoints step-N."""
    from transformers import TrainerCallback

    class RunCallback(TrainerCallback):
        def __init__(self) -> None:
            self.session_started = time.perf_counter()
            self.train_started = self.session_started
            self.first_step = 0
            self.stop_seen = False
            self.tokens_per_s = 0.0
            self.last_loss = math.nan

        @property
        def elapsed_s(self) -> float:
            """Wall time of the run over all its sessions."""
            return previous_elapsed + time.perf_counter() - self.session_started

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = state.global_step  # > 0 after a resume
            self.train_started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= steps:
                control.should_save = False  # the adapter is saved whole, not as a checkpoint
            elif run.stop_requested():
                self.stop_seen = True
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, lr_scheduler=None, **kwargs):
            if not logs or "loss" not in logs:
                return  # the end-of-training summary
            step = state.global_step
            self.last_loss = float(logs["loss"])
            train_s = max(time.perf_counter() - self.train_started, 1e-9)
            # trl counts this session's tokens, chosen and rejected sequences both.
            self.tokens_per_s = float(logs.get("num_tokens", 0.0)) / train_s
            if progress is not None:
                progress(step, self.last_loss)
            if step % log_every and step != steps and not self.stop_seen:
                return
            per_step = train_s / max(step - self.first_step, 1)
            lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None
            run.log(
                {
                    "event": "step",
                    "step": step,
                    "max_steps": steps,
                    "loss": round(self.last_loss, 5),
                    "lr": lr if lr is not None else logs.get("learning_rate"),
                    "tokens_per_s": round(self.tokens_per_s, 1),
                    "eta_s": round(per_step * (steps - step), 1),
                    "elapsed_s": round(self.elapsed_s, 2),
                    "epoch": round(float(state.epoch or 0.0), 3),
                }
            )
            logger.info(
                "DPO step %d/%d: loss %.4f, %.0f tokens/s", step, steps, self.last_loss,
                self.tokens_per_s,
            )  # fmt: skip

        def on_save(self, args, state, control, **kwargs):
            # HF names its checkpoints checkpoint-<N>; the run folder contract says step-<N>.
            source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            target = run.checkpoints_dir / f"step-{state.global_step}"
            if source.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                os.replace(source, target)
            for old in _checkpoints(run)[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)

    return RunCallback()


def _checkpoints(run: RunFolder) -> list[Path]:
    """HF-format ``step-<N>`` checkpoints, oldest first."""
    if not run.checkpoints_dir.is_dir():
        return []
    found = [
        p
        for p in run.checkpoints_dir.iterdir()
        if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _newest_checkpoint(run: RunFolder) -> Path | None:
    # HF writes trainer_state.json last, and the rename to step-<N> follows it.
    complete = [p for p in _checkpoints(run) if (p / "trainer_state.json").is_file()]
    return complete[-1] if complete else None


def _resumable_run(
    settings: Settings, name: str | None, max_steps: int | None
) -> tuple[RunFolder, Settings, int]:
    """The DPO run to resume, the settings it started with, and its step count."""
    adapters = settings.adapters_dir
    if name is None:
        candidates = [r for r in list_runs(adapters) if r.resumable and r.method == METHOD]
        if not candidates:
            raise StateError(
                f"no stopped or failed DPO training run to resume in {adapters}; start one "
                "with `copilot train --set method=dpo`"
            )
        run = RunFolder(candidates[-1].path)
    else:
        run = RunFolder(adapters / validate_adapter_name(name))
        if not run.read_state():
            raise StateError(
                f"no training run named '{name}' in {adapters} (no run.json there); "
                "`copilot train --resume` without --name picks the newest resumable run"
            )
    status = run.status()
    if status.method != METHOD:
        raise InputError(
            f"run '{run.name}' was trained with method {status.method}, not {METHOD}; "
            "resume it with `copilot train --resume`, which picks its method"
        )
    if status.state not in (STOPPED, FAILED) or run.finished:
        raise StateError(
            f"training run '{run.name}' is {status.state} and cannot be resumed; only a stopped "
            "or failed run can, so start a new one"
        )
    recorded = run.read_state()
    steps = int(recorded.get("max_steps") or 0)
    if max_steps is not None and max_steps != steps:
        raise InputError(
            f"run '{run.name}' was started with max_steps={steps}; a resumed run keeps its step "
            "count (the schedule depends on it): drop --max-steps"
        )
    config = recorded.get("config")
    if not isinstance(config, dict) or steps < 1:
        raise StateError(
            f"run '{run.name}' recorded no config or step count in its run.json, so it cannot "
            "be resumed; start a new run"
        )
    try:
        resumed = Settings(data_dir=settings.data_dir, **config)
    except ValidationError as exc:
        raise StateError(
            f"the config recorded by run '{run.name}' no longer validates ({exc.error_count()} "
            "problem(s), e.g. a key this version renamed); start a new run"
        ) from exc
    return run, resumed, steps


def _new_run_dir(registry: AdapterRegistry, name: str | None, data_hash: str) -> Path:
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


def _trl_version() -> str:
    import trl

    return trl.__version__
