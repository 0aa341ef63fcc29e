"""Train tab: preview the data, fine-tune in a background process, watch the loss, evaluate, promote.

Every callback is a module-level function of the service and the field values,
so tests call them directly. They only spawn processes and read files
(``training.jobs``, ``training.registry``, ``training.preview``): a training run
or an evaluation never runs inside the server, so chat stays responsive for
everyone while a manager trains.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from copilot.errors import CopilotError
from serve.service import CopilotService
from serve.ui.format import clock, md_escape
from training import jobs

if TYPE_CHECKING:
    from training.preview import DatasetPreview

logger = logging.getLogger(__name__)

METHODS = ("sft", "dpo")
# UI field name = config key under `training:`, in the order the fields are shown.
HYPER_PARAMETERS = (
    "method",
    "max_steps",
    "learning_rate",
    "lora_r",
    "batch_size",
    "grad_accum_steps",
)
POLL_INTERVAL_S = 2.0
OUTCOME_COLUMNS = ("positive", "negative", "unknown")  # training.preview.POLARITY_NAMES
ADAPTER_HEADERS = [
    "adapter",
    "created",
    "promoted",
    "method",
    "author",
    "held-out loss before → after",
]
SIDE_BY_SIDE_HEADERS = [
    "call",
    "type",
    "objection",
    "base reply",
    "adapter reply",
    "won-call reply",
    "lost-call reply",
]
LOSS_COLUMNS = ["step", "loss", "series"]
NO_RUN = "No training run yet: preview the dataset, then press Start."
NO_EVALUATION = "Not evaluated yet: pick an adapter and press Evaluate."


def _message(exc: CopilotError) -> gr.Error:
    # Our messages name the problem and the fix; a traceback is no use to a manager.
    return gr.Error(str(exc))


# --- dataset preview ------------------------------------------------------------


def preview(service: CopilotService, method: str | None = None) -> tuple[list[list[Any]], str]:
    """(type x outcome count rows, summary Markdown); what blocks ``method`` also shows as warnings."""
    from training.preview import preview_dataset

    try:
        found = preview_dataset(service.objections(), service.settings)
        problems = found.blockers(method or found.method)
    except CopilotError as exc:
        raise _message(exc) from exc
    for problem in problems:
        gr.Warning(problem)
    return count_rows(found), preview_summary(found, problems)


def count_rows(found: DatasetPreview) -> list[list[Any]]:
    """One row per objection type: ``[type, positive, negative, unknown, total]``, largest first."""
    rows = [
        [kind, *(counts.get(p, 0) for p in OUTCOME_COLUMNS), sum(counts.values())]
        for kind, counts in found.by_type.items()
    ]
    return sorted(rows, key=lambda r: (-r[-1], r[0]))


def preview_summary(found: DatasetPreview, problems: list[str]) -> str:
    sft, dpo = found.sft, found.dpo
    by_outcome = ", ".join(f"{label}: {n}" for label, n in found.calls_by_outcome.items())
    lines = [
        f"**{found.objections}** objections from **{found.calls}** calls"
        + (f" (calls by outcome: {by_outcome})" if by_outcome else ""),
        f"- **sft**: {sft.total} examples (won-call replies): {sft.train} to train on from "
        f"{sft.train_calls} calls, {sft.eval} held out from {sft.eval_calls} calls",
        f"- **dpo**: {dpo.total} preference pairs (won vs lost replies): {dpo.train} to train "
        f"on, {dpo.eval} held out",
    ]
    if found.short_replies:
        lines.append(
            f"- {found.short_replies} replies shorter than {found.min_reply_chars} characters "
            "are left out (training.min_reply_chars)"
        )
    lines += [f"- ⚠ {p}" for p in problems]
    for side, pairs in found.examples.items():
        for pair in pairs[:2]:
            lines.append(
                f"> *{side}, {pair.type}, {pair.call_id}* — **customer:** {md_escape(pair.objection)}"
                f" **rep:** {md_escape(pair.reply)}"
            )
    return "\n\n".join(lines)


# --- start, stop, watch -----------------------------------------------------------


def training_overrides(**values: Any) -> dict[str, Any]:
    """The form's values as ``training:`` overrides (blank fields keep the config default)."""
    overrides = {}
    for key in HYPER_PARAMETERS:
        value = values.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, float) and value.is_integer() and key != "learning_rate":
            value = int(value)  # gr.Number hands over floats
        overrides[key] = value
    return overrides


def start_run(
    service: CopilotService,
    name: str,
    method: str,
    max_steps: float | None,
    learning_rate: float | None,
    lora_r: float | None,
    batch_size: float | None,
    grad_accum_steps: float | None,
) -> tuple[Any, str, Any]:
    """Check the dataset, spawn the run; (run picker, status line, poll timer on)."""
    from training.preview import preview_dataset, require_trainable

    overrides = training_overrides(
        method=method,
        max_steps=max_steps,
        learning_rate=learning_rate,
        lora_r=lora_r,
        batch_size=batch_size,
        grad_accum_steps=grad_accum_steps,
    )
    try:
        settings = service.settings.with_training(overrides)
        found = preview_dataset(service.objections(), settings)
        require_trainable(found, settings.training.method)
        job = jobs.start_training(
            service.settings, name=(name or "").strip() or None, overrides=overrides
        )
        status = jobs.training_status(service.settings, job.name)
    except CopilotError as exc:
        raise _message(exc) from exc
    gr.Info(f"Training run {job.name} started; it runs in the background.")
    return run_picker(service, job.name), status_line(status), gr.Timer(active=True)


def stop_run(service: CopilotService, name: str | None) -> str:
    """Ask the selected run to stop after its current step; the new status line."""
    if not name:
        raise gr.Error("Pick a training run to stop.")
    try:
        status = jobs.stop_training(service.settings, name)
    except CopilotError as exc:
        raise _message(exc) from exc
    gr.Info(f"Asked {name} to stop after its current step; it stays resumable.")
    return status_line(status, stopping=status.state == jobs.RUNNING)


def poll_run(service: CopilotService, name: str | None) -> tuple[str, pd.DataFrame, Any, Any, Any]:
    """One timer tick: (status line, loss curve, timer, adapters table, adapter picker).

    The timer switches itself off once the run has ended, and only then are the
    adapter table and picker refreshed (so a manager's selection is not reset
    every two seconds).
    """
    if not name:
        return NO_RUN, loss_frame(None), gr.Timer(active=False), gr.skip(), gr.skip()
    try:
        status = jobs.training_status(service.settings, name)
    except CopilotError as exc:
        return str(exc), loss_frame(None), gr.Timer(active=False), gr.skip(), gr.skip()
    if status.active:
        return status_line(status), loss_frame(status), gr.Timer(active=True), gr.skip(), gr.skip()
    rows = adapter_rows(service)
    return (
        status_line(status),
        loss_frame(status),
        gr.Timer(active=False),
        rows,
        adapter_picker(service),
    )


def status_line(status: jobs.TrainingStatus, stopping: bool = False) -> str:
    """``**running** · sft · step 12/120 · 231 tokens/s · eta 1:05``, plus the message."""
    parts = [f"**{status.name}**: **{'stopping' if stopping else status.state}**"]
    if status.method:
        parts.append(status.method)
    if status.max_steps:
        parts.append(f"step {status.step}/{status.max_steps}")
    if status.tokens_per_s:
        parts.append(f"{status.tokens_per_s:.0f} tokens/s")
    if status.eta_s is not None and status.active:
        parts.append(f"eta {clock(status.eta_s)}")
    if status.eval_loss_before is not None and status.eval_loss_after is not None:
        before, after = status.eval_loss_before, status.eval_loss_after
        parts.append(f"held-out loss {before:.3f} → {after:.3f}")
    line = " · ".join(parts)
    if status.message:
        line += f"\n\n{status.message}"
    if status.log_tail:
        line += f"\n\n```\n{status.log_tail}\n```"
    return line


def loss_frame(status: jobs.TrainingStatus | None) -> pd.DataFrame:
    """The curve's points: each logged training loss, and the held-out loss before and after."""
    rows: list[tuple[int, float, str]] = []
    if status is not None:
        rows = [(p.step, p.loss, "train") for p in status.losses if math.isfinite(p.loss)]
        if status.eval_loss_before is not None:
            rows.append((0, status.eval_loss_before, "held-out"))
        if status.eval_loss_after is not None:
            last = status.losses[-1].step if status.losses else status.step
            rows.append((last, status.eval_loss_after, "held-out"))
    # Typed columns even when empty: the plot reads quantitative axes from the dtypes.
    return pd.DataFrame(rows, columns=LOSS_COLUMNS).astype(
        {"step": "int64", "loss": "float64", "series": "string"}
    )


def run_picker(service: CopilotService, selected: str | None = None) -> Any:
    names = jobs.list_training_runs(service.settings)
    chosen = selected or jobs.active_training(service.settings) or (names[-1] if names else None)
    return gr.Dropdown(choices=list(reversed(names)), value=chosen)


def open_tab(service: CopilotService) -> tuple[Any, Any, list[list[str]], Any]:
    """On page load: (run picker, poll timer, adapters table, adapter picker)."""
    picker = run_picker(service)
    running = jobs.active_training(service.settings) is not None
    return picker, gr.Timer(active=running), adapter_rows(service), adapter_picker(service)


# --- adapters: list, evaluate, promote ---------------------------------------------


def adapter_rows(service: CopilotService) -> list[list[str]]:
    rows = []
    for a in reversed(service.registry.list()):  # newest first
        before, after = a.metrics.get("eval_loss_before"), a.metrics.get("eval_loss_after")
        losses = f"{before:.3f} → {after:.3f}" if before is not None and after is not None else ""
        promoted = "yes" if a.promoted else ""
        rows.append([a.name, a.created_at, promoted, a.method, a.author or "", losses])
    return rows


def adapter_picker(service: CopilotService, selected: str | None = None) -> Any:
    adapters = list(reversed(service.registry.list()))
    names = [a.name for a in adapters]
    if selected not in names:
        selected = names[0] if names else None
    return gr.Dropdown(choices=names, value=selected)


def promote(service: CopilotService, name: str | None) -> tuple[list[list[str]], Any]:
    """Serve ``name`` by default from now on (promoting an older one is the rollback)."""
    if not name:
        raise gr.Error("Pick an adapter to promote.")
    from training.model import base_model_id

    try:
        # An adapter trained on another base model would fail on the first request.
        info = service.registry.promote(name, expected_base=base_model_id(service.settings))
    except CopilotError as exc:
        raise _message(exc) from exc
    gr.Info(f"{info.name} now answers by default; no restart needed.")
    return adapter_rows(service), adapter_picker(service, info.name)


def evaluate(service: CopilotService, name: str | None) -> tuple[str, Any]:
    """Spawn the evaluation of ``name``; (results text, evaluation timer on)."""
    if not name:
        raise gr.Error("Pick an adapter to evaluate.")
    try:
        jobs.start_evaluation(service.settings, name)
        status = jobs.evaluation_status(service.settings, name)
    except CopilotError as exc:
        raise _message(exc) from exc
    return evaluation_summary(status), gr.Timer(active=True)


def show_evaluation(service: CopilotService, name: str | None) -> tuple[str, list[list[str]], Any]:
    """(results Markdown, side-by-side rows, evaluation timer): on pick and on each tick."""
    if not name:
        return NO_EVALUATION, [], gr.Timer(active=False)
    try:
        status = jobs.evaluation_status(service.settings, name)
    except CopilotError as exc:
        return str(exc), [], gr.Timer(active=False)
    running = status.state == jobs.RUNNING
    rows = side_by_side_rows(status.evaluation) if status.evaluation else []
    return evaluation_summary(status), rows, gr.Timer(active=running)


def evaluation_summary(status: jobs.EvaluationStatus) -> str:
    """Losses and win-likeness with its interval, as Markdown."""
    lines = []
    if status.state == jobs.RUNNING:
        lines.append(
            f"**Evaluating {status.name}…** (runs in the background; this can take minutes)"
        )
    elif status.state == jobs.FAILED:
        lines.append(f"**Evaluation of {status.name} failed:** {status.message}")
        if status.log_tail:
            lines.append(f"```\n{status.log_tail}\n```")
    evaluation = status.evaluation
    if not evaluation:
        return "\n\n".join(lines) or NO_EVALUATION

    base = (evaluation.get("base") or {}).get("loss")
    tuned = (evaluation.get("adapter") or {}).get("loss")
    if base is not None and tuned is not None:
        lines.append(f"held-out loss: base **{base:.3f}** → adapter **{tuned:.3f}**")
    win = evaluation.get("win_likeness") or {}
    if win:
        level = f"{win['confidence']:.0%} interval" if win.get("confidence") else "interval"
        lines.append(
            f"win-likeness gain (adapter margin − base margin): **{win['mean_gain']:+.3f}** "
            f"({level} {win['ci_low']:+.3f} … {win['ci_high']:+.3f}); the adapter's reply is "
            f"more like won-call replies on **{win['share_better']:.0%}** of objections "
            f"({level} {win['share_ci_low']:.0%} … {win['share_ci_high']:.0%}), n = {win['n']}"
        )
        if win["ci_low"] > 0:
            lines.append("The adapter's replies are reliably more like won-call replies.")
        elif win["ci_high"] < 0:
            lines.append("The adapter's replies are reliably *less* like won-call replies.")
        else:
            lines.append("The interval includes 0: no reliable difference from the base model.")
    return "\n\n".join(lines)


def side_by_side_rows(evaluation: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in evaluation.get("rows") or []:
        rows.append(
            [
                str(row.get("call_id", "")),
                str(row.get("type", "")),
                str(row.get("objection", "")),
                str(row.get("base_reply", "")),
                str(row.get("adapter_reply", "")),
                _first(row.get("won_replies")),
                _first(row.get("lost_replies")),
            ]
        )
    return rows


def _first(replies: Any) -> str:
    if isinstance(replies, str):
        return replies
    replies = [str(r) for r in replies or []]
    if not replies:
        return ""
    return replies[0] + (f"  (+{len(replies) - 1} more)" if len(replies) > 1 else "")


# --- layout -------------------------------------------------------------------------


def _hyper_parameter_fields(service: CopilotService) -> list[Any]:
    """One field per HYPER_PARAMETERS key, defaulting to the configured value."""
    cfg = service.settings.training
    return [
        gr.Radio(list(METHODS), value=cfg.method, label="method"),
        gr.Number(value=cfg.max_steps, label="max_steps", precision=0, minimum=1),
        gr.Number(value=cfg.learning_rate, label="learning_rate", minimum=0),
        gr.Number(value=cfg.lora_r, label="lora_r", precision=0, minimum=1),
        gr.Number(value=cfg.batch_size, label="batch_size", precision=0, minimum=1),
        gr.Number(value=cfg.grad_accum_steps, label="grad_accum_steps", precision=0, minimum=1),
    ]


def create_train_tab(demo: gr.Blocks, service: CopilotService) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``; loads on page open."""
    # Dataset
    with gr.Accordion("Dataset", open=True):
        preview_button = gr.Button("Preview dataset")
        preview_text = gr.Markdown()
        counts = gr.Dataframe(
            headers=["type", *OUTCOME_COLUMNS, "total"],
            label="Objections by type and outcome",
            interactive=False,
        )

    # Training
    gr.Markdown("### Train an adapter")
    with gr.Row():
        fields = _hyper_parameter_fields(service)
    with gr.Row():
        run_name = gr.Textbox(label="Run name (optional)", placeholder="blank = dated default")
        start = gr.Button("Start", variant="primary")
        stop = gr.Button("Stop", variant="stop")
    run = gr.Dropdown(label="Training run", choices=[])
    status = gr.Markdown(NO_RUN)
    curve = gr.LinePlot(
        loss_frame(None),
        x="step",
        y="loss",
        color="series",
        title="Loss (nats per token)",
        label="Loss curve",
    )
    run_timer = gr.Timer(POLL_INTERVAL_S, active=False)

    # Adapters
    gr.Markdown("### Adapters")
    adapters = gr.Dataframe(headers=ADAPTER_HEADERS, label="Adapters", interactive=False)
    with gr.Row():
        adapter = gr.Dropdown(label="Adapter", choices=[], scale=3)
        evaluate_button = gr.Button("Evaluate", scale=1)
        promote_button = gr.Button("Promote", variant="primary", scale=1)
    results = gr.Markdown(NO_EVALUATION)
    side_by_side = gr.Dataframe(
        headers=SIDE_BY_SIDE_HEADERS, label="Side by side", interactive=False, wrap=True
    )
    eval_timer = gr.Timer(POLL_INTERVAL_S, active=False)

    # Events
    demo.load(partial(open_tab, service), outputs=[run, run_timer, adapters, adapter])
    preview_button.click(
        partial(preview, service), inputs=fields[0], outputs=[counts, preview_text]
    )
    start.click(
        partial(start_run, service), inputs=[run_name, *fields], outputs=[run, status, run_timer]
    )
    stop.click(partial(stop_run, service), inputs=run, outputs=status)
    watch = partial(poll_run, service)
    watch_outputs = [status, curve, run_timer, adapters, adapter]
    run.change(watch, inputs=run, outputs=watch_outputs, show_progress="hidden")
    # File reads only, so many managers may poll at once.
    run_timer.tick(
        watch, inputs=run, outputs=watch_outputs, show_progress="hidden", concurrency_limit=None
    )

    show = partial(show_evaluation, service)
    adapter.change(show, inputs=adapter, outputs=[results, side_by_side, eval_timer])
    eval_timer.tick(
        show,
        inputs=adapter,
        outputs=[results, side_by_side, eval_timer],
        show_progress="hidden",
        concurrency_limit=None,
    )
    evaluate_button.click(partial(evaluate, service), inputs=adapter, outputs=[results, eval_timer])
    promote_button.click(partial(promote, service), inputs=adapter, outputs=[adapters, adapter])
