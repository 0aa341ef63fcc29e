"""`copilot adapters list|promote|rollback|delete|export`: manage the adapter registry.

A running server picks up a promotion, rollback or deletion on its next request;
nothing needs a restart. Every command takes ``--json`` and then prints exactly one
JSON document on stdout; a refused request exits 1 with the reason on stderr.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from copilot.errors import CopilotError
from serve.commands import cli_module

logger = logging.getLogger(__name__)

adapters_app = typer.Typer(
    help="List, promote, roll back, delete and export fine-tuned LoRA adapters.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@adapters_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Adapters oldest first (* marks the promoted one), then unfinished training runs."""
    cli = cli_module()
    from training.runs import list_runs

    settings = cli.state.settings()
    registry = _registry(settings)
    base = _current_base(settings)
    adapters = registry.list()
    adapter_names = {a.name for a in adapters}
    runs = [r for r in list_runs(settings.adapters_dir) if r.name not in adapter_names]
    promoted = next((a.name for a in adapters if a.promoted), None)

    if as_json:
        cli._emit_json(
            {
                "base_model": base,
                "promoted": promoted,
                "adapters": [_adapter_doc(a, base) for a in adapters],
                "runs": [asdict(r) for r in runs],
                "history": [asdict(p) for p in registry.history()],
            }
        )
        return

    typer.echo(f"base model: {base or 'not available'}")
    if not adapters:
        typer.echo("no adapters yet; `copilot train` makes one")
    for a in adapters:
        other_base = "" if base is None or a.base_model == base else f"  [base {a.base_model}]"
        typer.echo(
            f"{'*' if a.promoted else ' '} {a.name:<28} {a.created_at[:16].replace('T', ' ')}  "
            f"{a.author or '-':<10} {a.method:<4} {_loss_summary(a.metrics)}{other_base}"
        )
    if promoted is None and adapters:
        typer.echo("none promoted: requests without an adapter name get the newest one")
    if runs:
        typer.echo("\nunfinished training runs:")
        for r in runs:
            typer.echo(f"  {r.name:<28} {r.state:<8} step {r.step}/{r.max_steps}")


@adapters_app.command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="The adapter to serve by default.")],
    as_json: JsonOption = False,
) -> None:
    """Serve NAME for every request that names no adapter, from the next request on."""
    cli = cli_module()
    settings = cli.state.settings()
    try:
        registry = _registry(settings)
        info = registry.promote(name, expected_base=_required_base(settings))
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json({"promoted": info.name, "history": _history(registry)})
        return
    typer.echo(f"promoted {info.name}; a running server serves it from its next request")


@adapters_app.command("rollback")
def rollback_command(as_json: JsonOption = False) -> None:
    """Promote again the adapter that was promoted before the current one."""
    cli = cli_module()
    settings = cli.state.settings()
    try:
        registry = _registry(settings)
        result = registry.rollback(expected_base=_required_base(settings))
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json(
            {
                "promoted": result.current.name,
                "rolled_back_from": result.rolled_back_from,
                "skipped": result.skipped,
                "history": _history(registry),
            }
        )
        return
    typer.echo(f"rolled back from {result.rolled_back_from} to {result.current.name}")
    if result.skipped:
        typer.echo(f"passed over: {', '.join(result.skipped)}")


@adapters_app.command("delete")
def delete_command(
    name: Annotated[str, typer.Argument(help="The adapter (or stopped training run) to remove.")],
    force: Annotated[
        bool, typer.Option("--force", help="Delete even the promoted adapter (rolls back first).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove an adapter, or the folder of a stopped or failed training run, from disk."""
    cli = cli_module()
    settings = cli.state.settings()
    try:
        registry = _registry(settings)
        deletion = registry.delete(name, force=force, expected_base=_current_base(settings))
    except CopilotError as exc:
        cli._fail(exc)
    if as_json:
        cli._emit_json({**asdict(deletion), "history": _history(registry)})
        return
    typer.echo(f"deleted {deletion.kind} {deletion.name}")
    if deletion.was_promoted:
        typer.echo(
            f"promoted now: {deletion.promoted}"
            if deletion.promoted
            else "nothing is promoted now: requests get the newest adapter"
        )


@adapters_app.command("export")
def export_command(
    name: Annotated[str, typer.Argument(help="The adapter to merge into the base model.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the merged model to.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier export in --out.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Merge NAME into the base model and save a plain transformers folder (no peft needed)."""
    cli = cli_module()
    from training.export import export_merged

    settings = cli.state.settings()
    try:
        info = _registry(settings).get(name)
        path = export_merged(settings, info, out, force=force)
    except CopilotError as exc:
        cli._fail(exc)
    files = sorted(p.name for p in path.iterdir())
    if as_json:
        cli._emit_json(
            {"adapter": info.name, "base_model": info.base_model, "path": path, "files": files}
        )
        return
    typer.echo(f"merged {info.name} into {info.base_model}: {path}")


# --- helpers ------------------------------------------------------------------------


def _registry(settings: Any):
    from training.registry import AdapterRegistry

    return AdapterRegistry(settings.adapters_dir)


def _required_base(settings: Any) -> str:
    from training.model import base_model_id

    return base_model_id(settings)


def _current_base(settings: Any) -> str | None:
    """The configured base model's id, or None where its files are missing (list still works)."""
    try:
        return _required_base(settings)
    except CopilotError as exc:
        logger.warning("base model unavailable: %s", exc)
        return None


def _adapter_doc(info: Any, base: str | None) -> dict[str, Any]:
    doc = asdict(info)
    doc["path"] = str(info.path)
    doc["compatible"] = None if base is None else info.base_model == base
    return doc


def _history(registry: Any) -> list[dict[str, Any]]:
    return [asdict(p) for p in registry.history()]


def _loss_summary(metrics: dict[str, Any]) -> str:
    before, after = metrics.get("eval_loss_before"), metrics.get("eval_loss_after")
    steps = metrics.get("steps")
    parts = [f"{steps} steps" if steps is not None else ""]
    if before is not None and after is not None:
        parts.append(f"eval loss {before:.3f} -> {after:.3f}")
    elif after is not None:
        parts.append(f"eval loss {after:.3f}")
    return ", ".join(p for p in parts if p) or "no metrics"
