"""The demo pipeline: ingest -> objections -> train -> one answer, narrated as it goes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from copilot.settings import read_recipe
from serve.service import CopilotService

logger = logging.getLogger(__name__)

DEMO_QUANTITY = 20  # units in the demo's quote: more than the sample's GTX Pro stock of 6
DEMO_OBJECTION = "Honestly this is more than I pay now, and I'm not sure I can switch this month."


def run_demo(
    service: CopilotService,
    inputs: list[Path],
    recipe: Path,
    max_steps: int | None,
    echo: Callable[[str], None],
    accounts: Path | None = None,
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
    if accounts is not None:
        _accounts_step(service, accounts, echo)
    echo(
        f"done in {time.perf_counter() - started:.0f} s; data in {service.settings.data_dir}; "
        f"`copilot status` shows what is stored"
    )


def _accounts_step(service: CopilotService, folder: Path, echo: Callable[[str], None]) -> None:
    """Import the sample accounts, then the next move and three quotes for the busiest one."""
    result = service.accounts.import_paths([folder])
    scores = service.accounts.score_all()
    echo(
        f"5. imported {result.report.records} account records; "
        f"{len(scores)} accounts scored as of {service.accounts.clock():%Y-%m-%d %H:%M} UTC"
    )
    account = max(scores, key=lambda s: (len(s.signals), s.account_id)).account_id
    for r in service.accounts.recommendations(account)[:2]:
        echo(f"   [{r.priority}] {r.action} (owner {r.owner}, due {r.due})")

    product, quantity = _product_in_play(service, account)
    if product is None:
        return
    quote = service.accounts.quote(account, [(product, quantity)])
    echo(f"6. {account}: {quantity} x {product}, three strategies:")
    for s in quote.strategies:
        echo(
            f"   {s.title}: unit {s.unit_price:,.2f} {s.currency} ({s.discount:.0%} off), "
            f"margin {s.margin:.0%}, win {s.win_likelihood:.0%}, risk {s.risk}"
        )
        for point in s.talking_points[:1]:
            cites = ", ".join(c.call_id for c in point.citations) or "no citation"
            echo(f"     say: {point.text} [{cites}]")


def _product_in_play(service: CopilotService, account: str) -> tuple[str | None, int]:
    """A product the account has an open deal or a live tender for, with a plausible quantity."""
    ctx = service.accounts.context(account)
    tendered = [p for t in ctx.tenders for p in t.product_ids if p in ctx.products]
    in_play = tendered or sorted(p for p in ctx.products_in_play() if p in ctx.products)
    return (in_play[0], DEMO_QUANTITY) if in_play else (None, 0)
