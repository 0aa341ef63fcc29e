"""The `copilot` command line.

Exit codes: 0 done; 1 the input or the stored state was wrong (the message names
it); 2 a usage error. With ``--json`` stdout holds exactly one JSON document;
logs always go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from copilot.errors import CopilotError
from copilot.settings import REPO_ROOT, Settings, load_settings, read_recipe
from serve.commands.accounts import accounts_app, quote_command, recommend_command
from serve.commands.adapters import adapters_app
from serve.commands.dataset import dataset_app
from serve.commands.evaluate import eval_command
from serve.commands.keys import keys_app

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Self-hosted AI sales copilot: ingest calls, mine objections, fine-tune, score accounts, recommend, quote, serve, manage API keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SAMPLE_DIR = REPO_ROOT / "data" / "sample"
QUICK_RECIPE = REPO_ROOT / "configs" / "train-quick.yaml"
DEMO_KEY_NAME = "demo-manager"


class _State:
    data_dir: Path | None = None
    config: Path | None = None
    _settings: Settings | None = None
    _service = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, self.data_dir)
        return self._settings

    def service(self):
        if self._service is None:
            from serve.service import CopilotService

            self._service = CopilotService(self.settings())
        return self._service


state = _State()


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "chromadb", "urllib3", "sentence_transformers", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _offline_defaults() -> None:
    # Nothing is ever fetched from a model hub unless the user configured one.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@app.callback()
def main(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where all state lives (else $COPILOT_DATA_DIR, else ~/.local/share/sales-copilot).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="A YAML file overriding configs/default.yaml (else $COPILOT_CONFIG)."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")
    ] = False,
) -> None:
    _offline_defaults()
    _configure_logging(verbose)
    state.data_dir = data_dir
    state.config = config


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _emit_json(document: Any) -> None:
    typer.echo(json.dumps(document, default=_plain, ensure_ascii=False, indent=2))


def _fail(exc: CopilotError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


# --- commands -------------------------------------------------------------------


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Audio files, transcripts, or folders of them (a folder with messages.csv is a CSV export)."
        ),
    ],
    outcome: Annotated[
        str | None,
        typer.Option(help="Outcome label for every call ingested (overrides the source's)."),
    ] = None,
    account: Annotated[str | None, typer.Option(help="Account id for every call ingested.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Transcribe, redact, store and index calls. Re-ingesting the same input changes nothing;
    re-running a killed ingest continues where it stopped.

    Exits 0 when every input was stored (or already was), 1 when some failed (each is named
    with its reason on stderr; the rest are stored)."""
    try:
        report = state.service().ingest(
            paths, outcome=outcome, account_id=account, show_progress=not as_json
        )
    except CopilotError as exc:
        _fail(exc)
    for path, reason in report.failed:
        typer.echo(f"failed: {path}: {reason}", err=True)
    if as_json:
        _emit_json(
            {
                **asdict(report),
                "errors": [{"path": p, "reason": r} for p, r in report.failed],
            }
        )
    else:
        typer.echo(report.summary())
    if report.failed:
        raise typer.Exit(1)


@app.command()
def objections(
    as_json: Annotated[bool, typer.Option("--json", help="Print every objection as JSON.")] = False,
) -> None:
    """Detect customer objections in the stored calls, pair each with the rep's reply, store them."""
    service = state.service()
    try:
        counts = service.mine_objections()
    except CopilotError as exc:
        _fail(exc)
    if as_json:
        _emit_json({"counts": counts, "objections": [asdict(o) for o in service.objections()]})
        return
    total = sum(counts.values())
    typer.echo(f"{total} objections with a rep reply:")
    for type_, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {type_:<15} {n}")


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option("--config", help="A training recipe YAML (keys of `training:`).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override one `training:` key, KEY=VALUE, repeatable and applied after --config, "
            "e.g. --set learning_rate=0.0005 --set lora_r=8 --set batch_size=2 "
            "--set grad_accum_steps=2 --set method=dpo. Checked like the config file "
            "(unknown keys and bad values are refused).",
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many optimiser steps.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Name of the adapter (run folder); default <date>-<data hash>. "
            "With --resume: the run to continue."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the newest stopped or failed run (or --name NAME) from its last "
            "checkpoint, with the config it started with, to the same step count.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run's results as JSON.")
    ] = False,
) -> None:
    """LoRA fine-tune the base model on objection replies from positive-outcome calls.

    Progress is logged to <data dir>/adapters/NAME/progress.jsonl (the bar reads it);
    touching NAME/STOP checkpoints and stops the run after its current step."""
    import threading

    import yaml
    from tqdm import tqdm

    from training.runs import RunFolder, run_of_process
    from training.trainer import run_summary

    recipe: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            recipe[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            recipe[key.strip()] = value
    try:
        recipe = {**(read_recipe(config) if config else {}), **recipe}
        settings = state.settings()
        steps = max_steps or settings.with_training(recipe).training.max_steps

        # The bar follows the run's progress.jsonl, the same log the UI reads; the run
        # is found by this process's id in its run.json once the trainer has written it.
        done = threading.Event()
        with tqdm(total=steps, desc="train", unit="step", disable=as_json, file=sys.stderr) as bar:

            def follow() -> None:
                folder: RunFolder | None = None
                while True:
                    finished = done.wait(0.5)
                    folder = folder or run_of_process(settings.adapters_dir, os.getpid())
                    records = list(folder.progress()) if folder else []
                    last = next((r for r in reversed(records) if r.get("event") == "step"), None)
                    if last is not None:
                        bar.total = last["max_steps"]
                        bar.n = last["step"]
                        bar.set_postfix(loss=f"{last['loss']:.3f}", eta=f"{last['eta_s']:.0f}s")
                        bar.refresh()
                    if finished:
                        return

            follower = threading.Thread(target=follow, name="train-progress", daemon=True)
            follower.start()
            try:
                run = state.service().train(recipe, max_steps=max_steps, name=name, resume=resume)
            finally:
                done.set()
                follower.join(timeout=5)
    except CopilotError as exc:
        _fail(exc)
    if as_json:
        _emit_json(run_summary(run))
        return
    if run.state != "done":
        typer.echo(
            f"run {run.name} {run.state} at step {run.steps}/{run.max_steps}; "
            f"`copilot train --resume --name {run.name}` continues it"
        )
        return
    typer.echo(
        f"adapter {run.name}: {run.steps} steps on {run.train_examples} examples, {run.tokens_per_s:.0f} tokens/s; "
        f"held-out loss {run.eval_loss_before:.3f} -> {run.eval_loss_after:.3f}\nsaved in {run.path}"
    )


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="The customer's objection.")],
    account: Annotated[str | None, typer.Option(help="Only draw on this account's calls.")] = None,
    adapter: Annotated[
        str | None, typer.Option(help="Adapter name (default: promoted, else newest, else base).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Suggest a reply to a customer objection and show the calls it drew on."""
    try:
        answer = state.service().ask(text, account_id=account, adapter=adapter)
    except CopilotError as exc:
        _fail(exc)
    if as_json:
        _emit_json(answer)
        return
    typer.echo(
        f"[{'adapter ' + answer.adapter if answer.adapter != 'base' else 'base model, no adapter'}]"
    )
    typer.echo(answer.reply)
    if answer.citations:
        typer.echo("\ndrawn from:")
        for c in answer.citations:
            typer.echo(f"  {c.call_id} {c.start:.1f}-{c.end:.1f} s ({c.outcome or 'no outcome'})")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in any words.")],
    outcome: Annotated[str | None, typer.Option(help="Only calls with this outcome label.")] = None,
    objection: Annotated[
        str | None, typer.Option(help="Only chunks with this objection type.")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="How many hits.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
) -> None:
    """Search the indexed calls: BM25 and vector hits fused by reciprocal rank.

    Each hit: fused score (0..1, 1 = first on both sides), call id, start-end seconds,
    the speaker of the utterance the excerpt is anchored on, and the excerpt."""
    try:
        hits = state.service().search(query, k=k, outcome=outcome, objection=objection)
    except CopilotError as exc:
        _fail(exc)
    if as_json:
        _emit_json([asdict(h) for h in hits])
        return
    for h in hits:
        typer.echo(
            f"{h.score:.3f} {h.call_id} {h.start:.1f}-{h.end:.1f} s {h.speaker}\n    "
            + h.text.replace("\n", "\n    ")
        )


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Counts of calls, turns, chunks, objections and adapters, and the models in use."""
    try:
        info = state.service().status()
    except CopilotError as exc:
        _fail(exc)
    if as_json:
        _emit_json(info)
        return
    typer.echo(f"data dir:   {info['data_dir']}")
    typer.echo(
        f"calls:      {info['calls']} ({info['minutes']:.1f} min), turns: {info['turns']}, chunks: {info['chunks']}"
    )
    typer.echo(
        "objections: "
        + (", ".join(f"{k} {v}" for k, v in info["objections"].items()) or "none mined")
    )
    typer.echo(
        "adapters:   "
        + (", ".join(info["adapters"]) or "none")
        + (f" (promoted: {info['promoted_adapter']})" if info["promoted_adapter"] else "")
    )
    for role, model in info["models"].items():
        typer.echo(f"{role + ':':<12}{model}")


@app.command()
def transcript(
    call_id: Annotated[
        str, typer.Argument(help="The call's id (see `copilot status` / GET /v1/calls).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """A call's turns with speaker, times and text."""
    try:
        call = state.service().transcript(call_id)
    except CopilotError as exc:
        _fail(exc)
    turns = [
        {"speaker": t.speaker, "start": t.start, "end": t.end, "text": t.text} for t in call.turns
    ]
    if as_json:
        _emit_json({"call_id": call.call_id, "outcome": call.outcome, "turns": turns})
        return
    for t in turns:
        typer.echo(f"[{t['start']:7.1f}-{t['end']:7.1f}] {t['speaker']:>8}: {t['text']}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default from config: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default from config: 8000).")
    ] = None,
) -> None:
    """Run the HTTP API (/v1, /docs) with the manager UI at /ui; requests need an API key."""
    from copilot.keys import KeyStore
    from serve.server import run_server

    settings = state.settings()
    if not KeyStore(settings.db_path).list():
        logger.warning(
            "no API keys yet: every /v1 request will be refused; "
            "`copilot keys create --role admin` makes the first"
        )
    run_server(settings, host or settings.serve.host, port or settings.serve.port)


@app.command()
def demo(
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Inputs to ingest (default: the repo's sample)."),
    ] = None,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Stop after the pipeline instead of serving.")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default: configs/train-quick.yaml).")
    ] = None,
) -> None:
    """Ingest -> mine objections -> train a quick adapter -> answer one objection -> import
    the sample accounts, recommend and quote -> serve."""
    from serve.demo import run_demo

    try:
        run_demo(
            state.service(),
            data or [SAMPLE_DIR],
            QUICK_RECIPE,
            max_steps=max_steps,
            echo=typer.echo,
            accounts=SAMPLE_DIR / "accounts",
        )
    except CopilotError as exc:
        _fail(exc)
    if not no_serve:
        settings = state.settings()
        # A fresh key each run, so the demo's UI login and API calls work at once; the
        # previous run's key is revoked (a live key's name is unique).
        keys = state.service().keys
        previous = keys.active(DEMO_KEY_NAME)
        if previous is not None:
            keys.revoke(previous.key_id)
        key = keys.create("manager", name=DEMO_KEY_NAME)
        typer.echo(
            f"serving on http://{settings.serve.host}:{settings.serve.port} (API docs /docs, UI /ui); Ctrl-C stops\n"
            f"   demo manager key (UI username {DEMO_KEY_NAME}, password the key; API 'Authorization: Bearer KEY'): {key}"
        )
        from serve.server import run_server

        run_server(settings, settings.serve.host, settings.serve.port, service=state.service())


app.command("eval")(eval_command)
app.add_typer(adapters_app, name="adapters")
app.add_typer(dataset_app, name="dataset")
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.command("recommend")(recommend_command)
app.command("quote")(quote_command)


def run() -> None:
    try:
        app()
    except CopilotError as exc:  # config errors raised before a command's own handler
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    # `python -m serve.cli` (how the UI starts training): run the imported module, not
    # this __main__ copy, so sub-commands that import serve.cli see the parsed options.
    import serve.cli

    serve.cli.run()
