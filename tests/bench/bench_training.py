"""Training figures on the real insurance calls (`make bench ARGS="-k training"`).

All 82 calls are ingested and their objections mined once (both timed), then:

- training throughput in real (non-pad) tokens per second, and the peak memory of a
  step, for the padding-free, reply-only trainer step (``training.batching``) against a
  plain baseline in the same process, on the same base model, the same examples in the
  same batches, with the same LoRA recipe: every example padded to
  ``training.max_length``, loss on all real tokens, one padded batch per step. The steps
  of the two alternate in one process, so a change in machine load hits both alike.
  Memory is the rise of the resident set (psutil, sampled every 5 ms) during the first
  training step above its level just before it, each variant in a fresh child process
  (``python -m tests.bench.bench_training DATA_DIR ours|baseline``): in one process the
  allocator keeps what the first variant freed, and the second would show no rise at all.
- the wall time of the default recipe (`copilot train` with configs/default.yaml) on the
  82 calls, and of ingest + objections + train together.

The machine's load average is in each note: on the shared 2-core machine the
absolute figures move with it; the ratio much less.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from copilot.settings import load_settings
from tests.conftest import INSURANCE_CALLS, require_shared_data
from training.batching import ExampleOrder, accumulate_gradients, pack
from training.dataset import build_sft_data, collate

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

TIMED_STEPS = 6
WARMUP_STEPS = 1


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


@pytest.fixture(scope="module")
def insurance(tmp_path_factory, bench_report):
    """The service with all 82 calls ingested and their objections mined, and the times."""
    require_shared_data()
    from serve.service import CopilotService

    service = CopilotService(load_settings(data_dir=tmp_path_factory.mktemp("bench-train")))
    started = time.perf_counter()
    report = service.ingest([INSURANCE_CALLS])
    ingest_s = time.perf_counter() - started
    assert not report.failed, report.failed
    started = time.perf_counter()
    counts = service.mine_objections()
    mine_s = time.perf_counter() - started
    bench_report("training data: ingest of the 82 insurance calls", ingest_s, "s", note=_load())
    bench_report(
        "training data: objection mining on the 82 calls",
        mine_s,
        "s",
        note=f"{sum(counts.values())} objections with a reply; {_load()}",
    )
    return service, ingest_s + mine_s


class _PeakRss:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __init__(self, interval_s: float = 0.005):
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.start_mb = self.peak_mb = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
            time.sleep(self._interval_s)

    def __enter__(self) -> _PeakRss:
        gc.collect()
        self.start_mb = self.peak_mb = self._process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def rise_mb(self) -> float:
        return self.peak_mb - self.start_mb


def _lora_model(settings):
    import torch
    from peft import LoraConfig, get_peft_model

    from training.model import load_base

    cfg = settings.training
    model, _ = load_base(settings, fresh=True)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(
        model,
        LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(trainable, lr=cfg.learning_rate), trainable


def _padded_step(model, optimizer, trainable, rows, width: int, pad_id: int) -> int:
    """The baseline: pad every example to ``width``, loss on every real token."""
    import torch

    batch = collate(rows, pad_id)
    pad = width - batch["input_ids"].shape[1]
    input_ids = torch.nn.functional.pad(batch["input_ids"], (0, pad), value=pad_id)
    attention_mask = torch.nn.functional.pad(batch["attention_mask"], (0, pad), value=0)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return int(attention_mask.sum())


def _packed_step(model, optimizer, trainable, rows) -> int:
    """Ours: one padding-free row, loss on reply tokens only (what the trainer runs)."""
    import torch

    batch = pack(rows)
    accumulate_gradients(model, [batch])
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return batch.tokens


def _batches(settings, objections, steps: int) -> tuple[list, list[list[dict]], object]:
    """The train rows and the first ``steps`` batches in the trainer's order."""
    from training.model import load_base

    cfg = settings.training
    _, tokenizer = load_base(settings)
    rows = list(build_sft_data(objections, cfg, tokenizer).train)
    order = ExampleOrder(len(rows), cfg.seed)
    return (
        rows,
        [[rows[i] for i in order.next_batch(cfg.batch_size)] for _ in range(steps)],
        tokenizer,
    )


def _first_step_memory(data_dir: Path, variant: str) -> dict[str, float]:
    """In this (fresh) process: the RSS rise of ``variant``'s first step on the first batch."""
    from serve.service import CopilotService

    service = CopilotService(load_settings(data_dir=data_dir))
    settings = service.settings
    _, (batch,), tokenizer = _batches(settings, service.objections(), 1)
    model = _lora_model(settings)
    with _PeakRss() as rss:
        if variant == "ours":
            _packed_step(*model, batch)
        else:
            _padded_step(*model, batch, settings.training.max_length, tokenizer.pad_token_id)
    return {"rise_mb": rss.rise_mb, "start_mb": rss.start_mb}


def _memory_in_child(data_dir: Path, variant: str) -> dict[str, float]:
    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_training", str(data_dir), variant],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_padding_free_trainer_against_padded_baseline(insurance, bench_report):
    service, _ = insurance
    settings = service.settings
    cfg = settings.training
    rows, batches, tokenizer = _batches(settings, service.objections(), WARMUP_STEPS + TIMED_STEPS)

    # Peak memory of the first step, each variant in its own process
    memory = {v: _memory_in_child(settings.data_dir, v) for v in ("ours", "baseline")}

    # Throughput in this process, alternating the two step for step
    ours = _lora_model(settings)
    baseline = _lora_model(settings)
    seconds = {"ours": 0.0, "baseline": 0.0}
    tokens = {"ours": 0, "baseline": 0}
    for i, batch in enumerate(batches):
        for variant in ("baseline", "ours"):
            started = time.perf_counter()
            if variant == "ours":
                real = _packed_step(*ours, batch)
            else:
                real = _padded_step(*baseline, batch, cfg.max_length, tokenizer.pad_token_id)
            if i >= WARMUP_STEPS:
                seconds[variant] += time.perf_counter() - started
                tokens[variant] += real
    assert tokens["ours"] == tokens["baseline"]  # the same real tokens on both sides
    ours_tps = tokens["ours"] / seconds["ours"]
    baseline_tps = tokens["baseline"] / seconds["baseline"]

    import torch

    mean_len = sum(len(r["input_ids"]) for r in rows) / len(rows)
    note = (
        f"{TIMED_STEPS} steps of {cfg.batch_size} examples each, {len(rows)} train examples "
        f"from the 82 calls (mean {mean_len:.0f} tokens, baseline padded to {cfg.max_length}); "
        f"{torch.get_num_threads()} torch threads; {_load()}"
    )
    bench_report(
        "training tokens/s, padding-free reply-only (baseline: padded, loss on all tokens)",
        ours_tps,
        "tokens/s",
        baseline=baseline_tps,
        note=note,
    )
    bench_report(
        "training step peak RSS rise (baseline: padded, loss on all tokens)",
        memory["ours"]["rise_mb"],
        "MB",
        baseline=memory["baseline"]["rise_mb"],
        note=f"first step of {cfg.batch_size} examples in a fresh process, psutil RSS sampled "
        f"every 5 ms, above {memory['ours']['start_mb']:.0f} / "
        f"{memory['baseline']['start_mb']:.0f} MB at the step's start",
    )
    assert ours_tps > baseline_tps


def test_default_recipe_on_the_82_calls(insurance, bench_report):
    service, prepare_s = insurance
    started = time.perf_counter()
    run = service.train({})
    train_s = time.perf_counter() - started

    cfg = service.settings.training
    note = (
        f"{run.steps} steps x {cfg.batch_size * cfg.grad_accum_steps} examples, "
        f"{run.train_examples} train / {run.eval_examples} eval examples, "
        f"{run.tokens_per_s:.0f} tokens/s, held-out loss {run.eval_loss_before:.3f} -> "
        f"{run.eval_loss_after:.3f}; {_load()}"
    )
    bench_report("default recipe: train on the 82 calls", train_s, "s", note=note)
    bench_report(
        "default recipe: ingest + objections + train, 82 calls",
        prepare_s + train_s,
        "s",
        note=f"the one-time GGUF dequantisation (done before, by the throughput test) not "
        f"included; {_load()}",
    )
    assert run.state == "done" and run.steps == cfg.max_steps
    assert run.eval_loss_after < run.eval_loss_before


if __name__ == "__main__":
    # The memory figure's child process: DATA_DIR (ingested, objections mined) and the variant.
    print(json.dumps(_first_step_memory(Path(sys.argv[1]), sys.argv[2])))
