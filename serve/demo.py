"""The demo pipeline: ingest -> objections -> train -> one answer, narrated as it goes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from copilot.settings import read_recipe
from serve.service import CopilotService

logger = logging.getLogger(__name__)

DEMO_OBJECTION = "Honestly this is more than I pay now, and I'm not sure I can switch this month."


def run_demo(
    service: CopilotService,
    inputs: list[Path],
    recipe: Path,
    max_steps: int | None,
    echo: Callable[[str], None],
) -> None:
    started = time.perf_counter()

    # Ingest
    report = service.ingest(inputs, show_progress=True)
    echo(
        f"1. ingested {len(report.stored)} new calls ({len(report.unchanged)} already stored, "
        f"{len(report.failed)} failed), {report.audio_minutes:.1f} min of audio, {report.wall_s:.0f} s"
    )
    for path, reason in report.failed:
        echo(f"   failed: {path}: {reason}")

    # Mine objections
    counts = service.mine_objections()
    echo(
        f"2. mined {sum(counts.values())} objections: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )

    # Train
    run = service.train(read_recipe(recipe), max_steps=max_steps)
    echo(
        f"3. trained adapter {run.name}: {run.steps} steps, {run.tokens_per_s:.0f} tokens/s, held-out loss "
        f"{run.eval_loss_before:.3f} -> {run.eval_loss_after:.3f} ({run.wall_s:.0f} s)"
    )

    # Answer
    answer = service.ask(DEMO_OBJECTION, adapter=run.name)
    echo(f"4. customer: {DEMO_OBJECTION}\n   copilot ({answer.adapter}): {answer.reply}")
    for c in answer.citations[:3]:
        echo(f"   cites {c.call_id} {c.start:.1f}-{c.end:.1f} s")
    echo(
        f"done in {time.perf_counter() - started:.0f} s; data in {service.settings.data_dir}; "
        f"`copilot status` shows what is stored"
    )
