"""LoRA fine-tuning of the generator on won-call objection replies.

    run = train_adapter(settings, objections, max_steps=40, author="maria")

One process, CPU or one GPU, a plain torch loop: AdamW, linear warmup then
linear decay, length-bucketed batches (little padding), loss on response tokens
only. The held-out response loss is measured before (the base model) and after.
Progress goes to ``<adapter>/progress.jsonl`` (one JSON object per logged step)
for the CLI and the UI to read; ``copilot_adapter.json`` is written last.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from copilot.errors import InputError
from copilot.schemas import Objection
from copilot.settings import Settings
from training.dataset import build_sft_data, collate, length_batches
from training.evaluate import perplexity, response_loss
from training.model import base_model_id, load_base
from training.registry import (
    METADATA_FILE,
    AdapterRegistry,
    default_adapter_name,
    validate_adapter_name,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"
WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0


@dataclass
class TrainingRun:
    """What one training run produced; losses are nats per response token."""

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
    eval_loss_after: float
    data_hash: str


ProgressCallback = Callable[[int, float], None]


def train_adapter(
    settings: Settings,
    objections: Sequence[Objection],
    *,
    max_steps: int | None = None,
    name: str | None = None,
    author: str | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingRun:
    """Fine-tune a LoRA adapter on ``objections`` and register it; see the module docstring."""
    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    cfg = settings.training
    steps = max_steps or cfg.max_steps
    if steps < 1:
        raise InputError(f"max_steps must be at least 1, got {steps}")
    started = time.perf_counter()
    _seed_everything(cfg.seed)

    # Data and base model (a private copy: peft injects layers into what it wraps)
    model, tokenizer = load_base(settings, fresh=True)
    data = build_sft_data(objections, cfg, tokenizer)
    registry = AdapterRegistry(settings.adapters_dir)
    adapter_dir = _new_adapter_dir(registry, name, data.data_hash)
    base_id = base_model_id(settings)

    # Evaluation of the base model
    eval_loss_before = response_loss(model, tokenizer, data.eval)
    logger.info(
        "held-out response loss before training: %.4f nats/token (perplexity %.1f)",
        eval_loss_before,
        perplexity(eval_loss_before),
    )

    # LoRA
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
        "LoRA r=%d on %s: %.2f M trainable parameters",
        cfg.lora_r,
        ",".join(cfg.target_modules),
        sum(p.numel() for p in trainable) / 1e6,
    )
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    warmup = max(1, int(steps * WARMUP_FRACTION))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup + 1)),
    )

    # Training
    rows = list(data.train)
    lengths = [r["length"] for r in rows]
    log_path = adapter_dir / PROGRESS_FILE
    model.train()
    tokens_seen, train_s, epoch, batches, last_loss = 0, 0.0, 0, [], float("nan")
    with log_path.open("w", encoding="utf-8") as log:
        for step in range(1, steps + 1):
            if not batches:
                batches = length_batches(lengths, cfg.batch_size, cfg.seed + epoch)
                epoch += 1
            batch = collate([rows[i] for i in batches.pop()], tokenizer.pad_token_id)

            step_started = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            train_s += time.perf_counter() - step_started
            tokens_seen += int(batch["attention_mask"].sum())
            last_loss = loss.item()

            if progress is not None:
                progress(step, last_loss)
            if step % cfg.log_every == 0 or step == steps:
                record = {
                    "step": step,
                    "loss": round(last_loss, 5),
                    "lr": scheduler.get_last_lr()[0],
                    "epoch": epoch,
                    "tokens_per_s": round(tokens_seen / train_s, 1),
                    "elapsed_s": round(time.perf_counter() - started, 2),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                logger.info(
                    "step %d/%d: loss %.4f, lr %.2e, %.0f tokens/s",
                    step,
                    steps,
                    last_loss,
                    record["lr"],
                    record["tokens_per_s"],
                )
    tokens_per_s = tokens_seen / train_s

    # Evaluation of the adapter
    eval_loss_after = response_loss(model, tokenizer, data.eval)
    logger.info(
        "held-out response loss after %d steps: %.4f nats/token (perplexity %.1f)",
        steps,
        eval_loss_after,
        perplexity(eval_loss_after),
    )

    # Save: adapter weights first, the registry's metadata file last
    model.save_pretrained(adapter_dir)
    wall_s = time.perf_counter() - started
    run = TrainingRun(
        name=adapter_dir.name,
        path=adapter_dir,
        base_model=base_id,
        steps=steps,
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        train_calls=data.train_calls,
        eval_calls=data.eval_calls,
        tokens_per_s=tokens_per_s,
        wall_s=wall_s,
        eval_loss_before=eval_loss_before,
        eval_loss_after=eval_loss_after,
        data_hash=data.data_hash,
    )
    metadata = {
        "name": run.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "author": author,
        "base_model": base_id,
        "data_hash": data.data_hash,
        "training": {**cfg.model_dump(), "max_steps": steps},
        "metrics": {
            "eval_loss_before": eval_loss_before,
            "eval_loss_after": eval_loss_after,
            "eval_perplexity_before": perplexity(eval_loss_before),
            "eval_perplexity_after": perplexity(eval_loss_after),
            "final_train_loss": last_loss,
            "tokens_per_s": tokens_per_s,
            "wall_s": wall_s,
            "steps": steps,
            "epochs": epoch,
        },
        "train_examples": run.train_examples,
        "eval_examples": run.eval_examples,
        "truncated_examples": data.truncated,
        "train_calls": data.train_calls,
        "eval_calls": data.eval_calls,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    write_json_atomic(adapter_dir / METADATA_FILE, metadata)
    logger.info(
        "trained adapter %s: %d steps, %d train / %d eval examples, %.0f tokens/s, "
        "%.1f s; eval loss %.3f -> %.3f",
        run.name,
        steps,
        run.train_examples,
        run.eval_examples,
        tokens_per_s,
        wall_s,
        eval_loss_before,
        eval_loss_after,
    )
    return run


def run_summary(run: TrainingRun) -> dict:
    """The run as JSON-ready values (paths as strings)."""
    summary = asdict(run)
    summary["path"] = str(run.path)
    return summary


def _new_adapter_dir(registry: AdapterRegistry, name: str | None, data_hash: str) -> Path:
    if name is not None:
        folder = registry.path_for(validate_adapter_name(name))
        if folder.exists():
            raise InputError(
                f"adapter '{name}' already exists in {registry.adapters_dir}; "
                "choose another name or leave it empty for a dated default"
            )
    else:
        base = default_adapter_name(data_hash)
        folder, n = registry.path_for(base), 1
        while folder.exists():  # two runs on the same data within one second
            n += 1
            folder = registry.path_for(f"{base}-{n}")
    folder.mkdir(parents=True)
    return folder


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
