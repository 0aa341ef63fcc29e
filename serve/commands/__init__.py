"""Sub-commands of `copilot`, one module per command group; serve/cli.py registers them."""

from __future__ import annotations

from types import ModuleType


def cli_module() -> ModuleType:
    """serve.cli (its ``state``, ``_emit_json``, ``_fail``), imported late to avoid a cycle.

    `python -m serve.cli` hands over to the imported module (see the end of
    serve/cli.py), so this is the copy whose global options were parsed.
    """
    import serve.cli

    return serve.cli
