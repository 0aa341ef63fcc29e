"""`copilot dataset preview`: what the stored objections would train on, before training.

With ``--json`` stdout holds exactly one JSON document (``DatasetPreview.to_dict()``);
otherwise a readable summary. Exits 1 with the reason on stderr when the store holds
no objections; a dataset that cannot train with some method is still previewed, with
its problems listed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from copilot.errors import CopilotError, StateError
from serve.commands import cli_module

if TYPE_CHECKING:  # training.preview is imported when the command runs, not at start-up
    from training.preview import DatasetPreview

logger = logging.getLogger(__name__)

dataset_app = typer.Typer(
    help="Look at the training data: counts by type and outcome, splits, examples, problems.",
    no_args_is_help=True,
)


@dataset_app.command()
def preview(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the preview as one JSON document.")
    ] = False,
) -> None:
    """Objections by type and outcome, the SFT examples and preference pairs the current
    training config would make, the held-out split by call, a few examples, and what
    would block training."""
    cli = cli_module()
    from training.preview import preview_dataset

    try:
        settings = cli.state.settings()
        objections = cli.state.service().objections()
        if not objections:
            raise StateError(
                f"no objections are stored in {settings.data_dir}: run `copilot ingest PATH` "
                "and then `copilot objections`"
            )
        result = preview_dataset(objections, settings)
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json(result.to_dict())
        return
    for line in _summary(result):
        typer.echo(line)


def _summary(p: DatasetPreview) -> list[str]:
    """The preview as lines of text: tables first, then the splits, examples and problems."""
    lines = [
        f"{p.objections} objections from {p.calls} calls "
        f"(training.method {p.method}, seed {p.seed}, eval_fraction {p.eval_fraction})",
        "",
        f"{'type':<16}{'positive':>9}{'negative':>9}{'unknown':>9}",
    ]
    for kind, counts in p.by_type.items():
        lines.append(
            f"{kind:<16}{counts['positive']:>9}{counts['negative']:>9}{counts['unknown']:>9}"
        )
    width = max([len("outcome")] + [len(o) for o in p.by_outcome])
    lines += ["", f"{'outcome':<{width}}  {'calls':>6}  {'objections':>10}"]
    for outcome, n in p.by_outcome.items():
        lines.append(f"{outcome:<{width}}  {p.calls_by_outcome.get(outcome, 0):>6}  {n:>10}")

    lines.append("")
    if p.short_replies:
        lines.append(
            f"left out: {p.short_replies} {'reply' if p.short_replies == 1 else 'replies'} "
            f"shorter than {p.min_reply_chars} characters (training.min_reply_chars)"
        )
    for label, section, unit in (("SFT", p.sft, "examples"), ("DPO", p.dpo, "pairs")):
        if section.problems:
            lines.append(f"{label}: cannot train")
        else:
            lines.append(
                f"{label}: {section.total} {unit} ({section.train} train / {section.eval} "
                f"held out) from {section.train_calls + section.eval_calls} calls "
                f"({section.train_calls} train / {section.eval_calls} held out)"
            )

    for side in ("positive", "negative"):
        if p.examples[side]:
            lines += ["", f"examples from {side}-outcome calls:"]
        for e in p.examples[side]:
            lines.append(f"  [{e.type}] {e.call_id} ({e.outcome}): {e.objection}")
            lines.append(f"      -> {e.reply}")

    problems = [
        (label, text) for label, s in (("sft", p.sft), ("dpo", p.dpo)) for text in s.problems
    ]
    if problems:
        lines += ["", "problems:"]
        for label, text in problems:
            marker = " (configured method)" if label == p.method else ""
            lines.append(f"  - {label}{marker}: {text}")
    return lines
