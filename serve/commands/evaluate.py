"""`copilot eval ADAPTER`: judge an adapter against the base model on held-out calls."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from copilot.errors import CopilotError
from serve.commands import cli_module

if TYPE_CHECKING:
    from training.judge import Evaluation
    from training.registry import AdapterInfo

logger = logging.getLogger(__name__)

SHOWN_ROWS = 3  # side-by-side examples in the readable summary


def eval_command(
    adapter: Annotated[
        str, typer.Argument(help="The adapter's name (`copilot status` lists them).")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the evaluation as one JSON document.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            min=5, help="Held-out objections to reply to (two generations each, base and adapter)."
        ),
    ] = 24,
) -> None:
    """Held-out response loss and win-likeness of replies, base model against ADAPTER.

    Saves the result as evaluation.json in the adapter's folder, where the UI reads it."""
    cli = cli_module()
    _emit_json, _fail, state = cli._emit_json, cli._fail, cli.state
    from training.judge import evaluate_adapter, save_evaluation

    try:
        service = state.service()
        info = service.registry.get(adapter)
        evaluation = evaluate_adapter(state.settings(), info, service.objections(), limit=limit)
        save_evaluation(evaluation, info)
    except CopilotError as exc:
        _fail(exc)
    if as_json:
        _emit_json(evaluation.to_dict())
    else:
        typer.echo(summary(evaluation, info))


def summary(evaluation: Evaluation, adapter: AdapterInfo) -> str:
    """The readable report: losses, win-likeness with its intervals, a few rows side by side."""
    doc = evaluation.to_dict()
    win = evaluation.win_likeness
    pct = round(100 * win.confidence)
    lines = [
        f"adapter {adapter.name} against the base model {adapter.base_model}",
        f"held-out response loss on {evaluation.eval_examples} examples: "
        f"base {evaluation.base_loss:.3f} -> adapter {evaluation.adapter_loss:.3f} nats/token "
        f"(perplexity {doc['base']['perplexity']:.1f} -> {doc['adapter']['perplexity']:.1f})",
        f"win-likeness on {win.n} held-out objections:",
        f"  mean gain {win.mean_gain:+.4f} ({pct}% CI {win.ci_low:+.4f} to {win.ci_high:+.4f}); "
        f"margin base {win.base_margin:+.4f}, adapter {win.adapter_margin:+.4f}",
        f"  adapter more won-like on {round(win.share_better * win.n)}/{win.n} "
        f"= {win.share_better:.0%} ({pct}% CI {win.share_ci_low:.0%} to {win.share_ci_high:.0%})",
        f"  {win.method}",
    ]
    for row in evaluation.rows[:SHOWN_ROWS]:
        lines += [
            "",
            f"[{row.type}] {row.call_id} ({row.outcome or 'no outcome'}): {row.objection}",
            f"  base    ({row.base_margin:+.3f}): {row.base_reply}",
            f"  adapter ({row.adapter_margin:+.3f}): {row.adapter_reply}",
        ]
        if row.won_replies:
            lines.append(f"  won call reply:  {row.won_replies[0]}")
        if row.lost_replies:
            lines.append(f"  lost call reply: {row.lost_replies[0]}")
    from training.judge import EVALUATION_FILE

    lines += ["", f"saved in {adapter.path / EVALUATION_FILE}"]
    return "\n".join(lines)
