"""`copilot accounts import|score|model`, `copilot recommend` and `copilot quote`.

Each prints a readable summary, or with ``--json`` exactly one JSON document on
stdout; a wrong input or state exits 1 with the reason on stderr.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from copilot.context import as_utc
from copilot.errors import CopilotError, InputError
from serve.commands import cli_module

if TYPE_CHECKING:
    from serve.accounts import AccountsService

logger = logging.getLogger(__name__)

accounts_app = typer.Typer(
    help="Account context: import the CRM, score every account, read the win model.",
    no_args_is_help=True,
)

SHOWN_SIGNALS = 4  # per account in the readable score table

AsOf = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Compute at this ISO 8601 time (default: settings accounts.clock, the latest "
        "stored account fact).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _accounts() -> AccountsService:
    return cli_module().state.service().accounts


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = as_utc(text)
    if not isinstance(value, datetime):
        raise InputError(
            f"--as-of {text!r} is not an ISO 8601 date or time; write e.g. 2018-01-08 or "
            "2018-01-08T09:00:00Z"
        )
    return value


@accounts_app.command("import")
def import_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="CRM folders or files: the Maven CRM layout (sales_pipeline.csv, accounts.csv, "
            "products.csv, sales_teams.csv) and/or files named by kind (contacts.csv, "
            "tenders.json, stock.csv, ...)."
        ),
    ],
    as_json: AsJson = False,
) -> None:
    """Import account context, then refit the win model on the stored history.

    Re-importing the same files changes nothing; a file with a bad row stores nothing."""
    cli = cli_module()
    try:
        result = _accounts().import_paths(paths)
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json(
            {
                "import": result.report.to_dict(),
                "model": result.model.to_dict() if result.model else None,
                "model_skipped": result.model_skipped,
            }
        )
        return
    typer.echo(result.report.summary())
    if result.model is not None:
        typer.echo(result.model.summary())
    else:
        typer.echo(f"win model not refitted: {result.model_skipped}")


@accounts_app.command("score")
def score_command(as_json: AsJson = False, as_of: AsOf = None) -> None:
    """Every account's win likelihood (calibrated, 0-1) with the signals behind it."""
    cli = cli_module()
    try:
        scores = _accounts().score_all(_as_of(as_of))
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json({"accounts": [s.to_dict() for s in scores]})
        return
    typer.echo(f"{len(scores)} accounts, most likely to win first:")
    for s in scores:
        shown = ", ".join(sig.type for sig in s.signals[:SHOWN_SIGNALS])
        more = f" +{len(s.signals) - SHOWN_SIGNALS}" if len(s.signals) > SHOWN_SIGNALS else ""
        typer.echo(f"  {s.win.win_likelihood:5.1%}  {s.account_id:<28} {shown}{more}")


@accounts_app.command("model")
def model_command(
    as_json: AsJson = False,
    refit: Annotated[
        bool, typer.Option("--refit", help="Fit the model again on the stored history first.")
    ] = False,
) -> None:
    """The win model's time split and its AUC and Brier score on the later period, against
    a stage-only baseline and the account's own win history."""
    cli = cli_module()
    try:
        accounts = _accounts()
        report = accounts.train_model() if refit else accounts.model.report
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json(report.to_dict())
    else:
        typer.echo(report.summary())


def recommend_command(
    account: Annotated[str, typer.Argument(help="The account id (its name in the CRM).")],
    as_json: AsJson = False,
    as_of: AsOf = None,
) -> None:
    """What to do next at ACCOUNT: each rule that fires, with its priority, owner, due time,
    action and the signals behind it (rules: configs/rules.yaml, re-read when it changes)."""
    cli = cli_module()
    try:
        accounts = _accounts()
        at = _as_of(as_of)
        recommendations = accounts.recommendations(account, at)
        signals = accounts.signals(account, at)
        rules_error = accounts.rulebook.last_error
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json(
            {
                "account_id": account,
                "recommendations": [r.to_dict() for r in recommendations],
                "signals": [s.to_dict() for s in signals],
                "rules_error": rules_error and str(rules_error),
            }
        )
        return
    if rules_error:
        typer.echo(f"warning: {rules_error}", err=True)
    if not recommendations:
        typer.echo(f"no rule fires for {account} ({len(signals)} signals)")
    for r in recommendations:
        typer.echo(f"[{r.priority}] {r.action}\n  owner {r.owner}, due {r.due}; {r.why}")


def quote_command(
    account: Annotated[str, typer.Argument(help="The account id (its name in the CRM).")],
    products: Annotated[
        list[str],
        typer.Option("--product", help="A product id from the price list; repeat for several."),
    ],
    quantities: Annotated[
        list[int],
        typer.Option("--quantity", help="Units of each --product, in the same order."),
    ],
    as_json: AsJson = False,
    as_of: AsOf = None,
    talking_points: Annotated[
        bool,
        typer.Option(
            "--talking-points/--no-talking-points",
            help="Ask the language model for talking points citing won calls (slower).",
        ),
    ] = True,
) -> None:
    """Three quote strategies that differ in kind, each within the margin floor, the stock
    plus lead time and the known budget, with its win likelihood and risk."""
    cli = cli_module()
    try:
        if len(products) != len(quantities):
            raise InputError(
                f"{len(products)} --product but {len(quantities)} --quantity; give one "
                "--quantity per --product, in the same order"
            )
        result = _accounts().quote(
            account,
            list(zip(products, quantities, strict=True)),
            _as_of(as_of),
            with_talking_points=talking_points,
        )
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json(result.to_dict())
        return
    typer.echo(f"{account}: base win likelihood {result.win.win_likelihood:.1%}")
    for s in result.strategies:
        budget = (
            ""
            if s.within_budget is None
            else (" within budget" if s.within_budget else " OVER BUDGET")
        )
        typer.echo(
            f"\n{s.title}: {s.total:,.2f} {s.currency}, unit {s.unit_price:,.2f} "
            f"(discount {s.discount:.1%}), margin {s.margin:.1%}, win {s.win_likelihood:.1%}, "
            f"risk {s.risk}{budget}\n  {s.rationale}"
        )
        for term in s.terms:
            typer.echo(f"  - {term}")
        for reason in s.risk_reasons:
            typer.echo(f"  risk: {reason}")
        for point in s.talking_points:
            cites = ", ".join(f"{c.call_id}@{c.start:.0f}s" for c in point.citations)
            typer.echo(f"  say: {point.text}" + (f" [{cites}]" if cites else ""))
