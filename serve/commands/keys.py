"""`copilot keys create|list|revoke`: the API keys that reps, managers and admins use.

A key is printed once, by ``create``, as the last word of its output, so a script
can take it with ``| awk '{print $NF}'``; only its hash is stored. The commands
work on the data directory's database directly, so a running server sees a new or
revoked key on its next request.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from copilot.errors import CopilotError
from copilot.keys import ROLES, KeyStore
from serve.commands import cli_module

keys_app = typer.Typer(
    help="Create, list and revoke API keys (roles rep, manager, admin; reps belong to a team).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _store() -> KeyStore:
    return KeyStore(cli_module().state.settings().db_path)


@keys_app.command("create")
def create_command(
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")],
    team: Annotated[
        str | None,
        typer.Option(
            "--team", help="The team whose accounts the key sees (required for a rep key)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Who holds the key: the rep id experiments assign by (default: its id)."
        ),
    ] = None,
) -> None:
    """Make a key and print it once, as the last word of the output."""
    cli = cli_module()
    try:
        key = _store().create(role, team=team, name=name)
    except CopilotError as exc:
        cli._fail(exc)
    scope = f" for team {team}" if team else ""
    typer.echo(f"{role} key{scope} (shown once, store it now): {key}")


@keys_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every key's id, holder, role, team and state (never the key itself)."""
    cli = cli_module()
    keys = _store().list()
    if as_json:
        cli._emit_json([asdict(k) for k in keys])
        return
    if not keys:
        typer.echo("no keys yet; `copilot keys create --role admin` makes the first")
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        typer.echo(f"{k.key_id}  {k.role:<7} {k.team or '-':<12} {k.name}  {state}")


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `copilot keys list`.")],
) -> None:
    """Revoke a key; requests with it are refused from the next one on."""
    cli = cli_module()
    try:
        _store().revoke(key_id)
    except CopilotError as exc:
        cli._fail(exc)
    typer.echo(f"revoked {key_id}")
