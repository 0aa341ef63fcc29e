"""A/B dashboard: pick an experiment, read its warnings first, then conversion and the statistics.

The numbers come from ``copilot.abstats.experiment_results`` (the same function the
API's results route calls); this tab only lays them out. The guard warnings
(too little data, sample-ratio mismatch, uncorrected comparisons) are shown above
the numbers, because a manager who reads a p-value first tends to stop there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from copilot.errors import CopilotError
from serve.service import CopilotService
from serve.ui.format import md_escape

if TYPE_CHECKING:
    from copilot.abstats import Results, VariantStats
    from copilot.experiments import Experiment

logger = logging.getLogger(__name__)

STAT_HEADERS = [
    "variant",
    "share",
    "reps",
    "exposures",
    "accepted / edited / rejected / none",
    "conversion",
    "95% interval",
    "lift vs control",
    "P(beats control)",
    "p-value (test)",
    "deals won / lost",
    "win rate (95% interval)",
]
SERIES_COLUMNS = ["date", "conversion", "variant"]
NO_EXPERIMENT = (
    "No experiment yet. Create one with `POST /v1/experiments` (a manager key); a variant "
    "names an adapter and a prompt version from the Prompt workshop."
)
NO_WARNINGS = "✅ No warnings: enough data in every variant and the split matches the weights."


def _percent(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}%}"


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"{ci[0]:.1%} – {ci[1]:.1%}"


def default_experiment(experiments: list[Experiment], selected: str | None) -> str | None:
    """``selected`` if it exists, else the running experiment, else the newest."""
    ids = [e.id for e in experiments]
    if selected in ids:
        return selected
    running = next((e.id for e in experiments if e.status == "running"), None)
    return running or (ids[0] if ids else None)


def refresh(service: CopilotService, selected: str | None) -> tuple[Any, ...]:
    """(picker, then ``show_experiment``'s outputs) for the picked or default experiment."""
    experiments = service.experiments.list()
    chosen = default_experiment(experiments, selected)
    choices = [(f"{e.name} · {e.status} · {e.id}", e.id) for e in experiments]
    return (gr.Dropdown(choices=choices, value=chosen), *show_experiment(service, chosen))


def describe(experiment: Experiment) -> str:
    """Who started it, when, and what each variant serves, as Markdown."""
    status = experiment.status
    if experiment.stopped_at:
        status += f" (since {experiment.stopped_at})"
    lines = [
        f"### {md_escape(experiment.name)}",
        f"`{experiment.id}` · **{status}** · started by {md_escape(experiment.created_by)} "
        f"at {experiment.created_at}",
        "",
    ]
    for v in experiment.variants:
        role = " (control)" if v.name == experiment.control else ""
        adapter = v.adapter or "the promoted adapter"
        prompt = v.prompt_version or "the active prompt"
        lines.append(
            f"- **{md_escape(v.name)}**{role}: {v.weight:.0%} of reps · model "
            f"`{md_escape(adapter)}` · prompt `{md_escape(prompt)}`"
        )
    return "\n".join(lines)


def warning_markdown(results: Results) -> str:
    if not results.warnings:
        return NO_WARNINGS
    items = "\n".join(f"- ⚠ {md_escape(w)}" for w in results.warnings)
    return f"### ⚠ Read before deciding ({len(results.warnings)})\n\n{items}"


def stat_rows(results: Results) -> list[list[str]]:
    return [_stat_row(v) for v in results.variants]


def _stat_row(v: VariantStats) -> list[str]:
    name = f"{v.name} (control)" if v.is_control else v.name
    lift = "" if v.lift is None else f"{v.lift:+.1%}"
    p_value = "" if v.p_value is None else f"{v.p_value:.3g} ({v.test})"
    win = _percent(v.win_rate)
    if v.win_rate_ci is not None:
        win += f" ({_interval(v.win_rate_ci)})"
    return [
        name,
        f"{v.weight:.0%}",
        str(v.reps),
        str(v.exposures),
        f"{v.accepted} / {v.edited} / {v.rejected} / {v.no_feedback}",
        _percent(v.conversion_rate),
        _interval(v.conversion_ci),
        lift,
        _percent(v.prob_beats_control),
        p_value,
        f"{v.deals_won} / {v.deals_lost}",
        win,
    ]


def srm_line(results: Results) -> str:
    srm = results.srm
    if srm is None and any(v.reps for v in results.variants):
        return (
            "Sample ratio: **not checked**: the weights give no expected counts (see the warnings)."
        )
    if srm is None:
        return "Sample ratio: no reps exposed yet."
    observed = ", ".join(f"{md_escape(n)} {c}" for n, c in srm.observed.items())
    expected = ", ".join(f"{md_escape(n)} {c:.1f}" for n, c in srm.expected.items())
    verdict = "**mismatch**" if srm.mismatch else "no mismatch"
    return (
        f"Sample ratio ({srm.unit} per variant): {observed}; expected {expected}; "
        f"chi-square p = {srm.p_value:.3g}: {verdict}."
    )


def series_frame(results: Results | None) -> pd.DataFrame:
    """Cumulative conversion per variant and day (days without exposures yet are left out)."""
    rows = []
    if results is not None:
        rows = [
            (pd.Timestamp(p.date), p.cumulative_rate, p.variant)
            for p in results.daily
            if p.cumulative_rate is not None
        ]
    # Typed columns even when empty: the plot reads a temporal x axis from the dtype.
    return pd.DataFrame(rows, columns=SERIES_COLUMNS).astype(
        {"date": "datetime64[ns]", "conversion": "float64", "variant": "string"}
    )


def methods_markdown(results: Results) -> str:
    return "\n".join(f"- **{k}**: {md_escape(v)}" for k, v in results.methods.items())


def show_experiment(
    service: CopilotService, experiment_id: str | None
) -> tuple[str, str, pd.DataFrame, list[list[str]], str, str]:
    """(description, warnings, conversion series, statistics rows, SRM line, methods)."""
    from copilot.abstats import experiment_results

    if not experiment_id:
        return NO_EXPERIMENT, "", series_frame(None), [], "", ""
    try:
        results = experiment_results(service.experiments, service.decisions, experiment_id)
    except CopilotError as exc:
        # The message names the problem and the fix; a traceback is no use to a manager.
        raise gr.Error(str(exc)) from exc
    except Exception as exc:
        # Stored data the statistics cannot read must still answer with words, not a bare
        # "Error" badge; the traceback goes to the server log.
        logger.exception("results of experiment %s failed", experiment_id)
        raise gr.Error(
            f"the results of experiment '{experiment_id}' could not be computed "
            f"({type(exc).__name__}); see the server log, and stop the experiment "
            "and start a new one if its stored data is damaged"
        ) from exc
    return (
        describe(results.experiment),
        warning_markdown(results),
        series_frame(results),
        stat_rows(results),
        srm_line(results),
        methods_markdown(results),
    )


def create_dashboard_tab(demo: gr.Blocks, service: CopilotService) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``; loads on page open."""
    with gr.Row():
        picker = gr.Dropdown(label="Experiment", choices=[], scale=4)
        reload = gr.Button("Refresh", scale=1)
    # elem_ids name what the browser test (tests/serve/test_browser.py) reads.
    description = gr.Markdown(NO_EXPERIMENT, elem_id="ab-experiment")
    warnings = gr.Markdown(elem_id="ab-warnings")
    curve = gr.LinePlot(
        series_frame(None),
        x="date",
        y="conversion",
        color="variant",
        title="Conversion (accepted or edited / exposures), cumulative",
        y_lim=[0, 1],
        label="Conversion over time",
        elem_id="ab-plot",
    )
    table = gr.Dataframe(
        headers=STAT_HEADERS,
        label="Variant statistics",
        interactive=False,
        wrap=True,
        elem_id="ab-stats",
    )
    srm = gr.Markdown()
    with gr.Accordion("How these are computed", open=False):
        methods = gr.Markdown()

    shown = [description, warnings, curve, table, srm, methods]

    def on_refresh(selected: str | None):
        return refresh(service, selected)

    def on_pick(experiment_id: str | None):
        return show_experiment(service, experiment_id)

    demo.load(on_refresh, inputs=picker, outputs=[picker, *shown])
    reload.click(on_refresh, inputs=picker, outputs=[picker, *shown])
    picker.input(on_pick, inputs=picker, outputs=shown)
