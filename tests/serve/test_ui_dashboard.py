"""The A/B dashboard tab: picks an experiment, shows warnings first, then the numbers."""

from __future__ import annotations

import gradio as gr
import pytest

from serve.service import CopilotService
from serve.ui import dashboard
from serve.ui.app import create_ui
from tests.copilot.test_experiments import damage_weights

DAY_1, DAY_2 = "2026-03-02T10:00:00+00:00", "2026-03-03T10:00:00+00:00"


def expose(service: CopilotService, experiment_id: str, rows: list[tuple]) -> None:
    """Log exposures: (rep, variant, time, feedback action or None)."""
    log = service.decisions
    for rep, variant, at, action in rows:
        sid = log.record_suggestion(
            "objection",
            rep_id=rep,
            team="Central",
            account_id="acct-1",
            model=variant,
            input_text="太贵了",
            proposed="我们的年付方案更划算。",
            experiment_id=experiment_id,
            variant=variant,
            at=at,
        )
        if action:
            extra = {"edited": {"text": "年付更划算。"}, "rejected": {"reason": "语气太生硬"}}
            log.record_feedback(sid, action, by_rep=rep, **extra.get(action, {}))


@pytest.fixture
def experiment(service: CopilotService):
    service.prompts.save("renewals", "Be brief.", [], "dana")
    return service.experiments.create(
        "价格回复 test",
        [
            {"name": "control", "adapter": "base"},
            {"name": "renewals@1", "prompt_version": "renewals@1"},
        ],
        created_by="dana",
    )


def test_tab_builds(service: CopilotService) -> None:
    demo = create_ui(service)
    found = {getattr(b, "label", None): b for b in demo.blocks.values()}
    assert isinstance(found["A/B dashboard"], gr.Tab)
    assert isinstance(found["Conversion over time"], gr.LinePlot)
    assert found["Variant statistics"].headers == dashboard.STAT_HEADERS


def test_no_experiment_yet(service: CopilotService) -> None:
    picker, description, warnings, series, rows, srm, methods = dashboard.refresh(service, None)
    assert picker.choices == [] and picker.value is None
    assert description == dashboard.NO_EXPERIMENT
    assert series.empty and list(series.columns) == dashboard.SERIES_COLUMNS
    assert rows == [] and warnings == srm == methods == ""


def test_running_experiment_is_picked_with_warnings_first(
    service: CopilotService, experiment
) -> None:
    expose(
        service,
        experiment.id,
        [
            ("rep-a", "control", DAY_1, "accepted"),
            ("rep-a", "control", DAY_2, "rejected"),
            ("rep-b", "renewals@1", DAY_1, "edited"),
            ("rep-b", "renewals@1", DAY_2, "accepted"),
            ("rep-b", "renewals@1", DAY_2, None),
        ],
    )
    picker, description, warnings, series, rows, srm, methods = dashboard.refresh(service, None)

    assert picker.value == experiment.id
    assert picker.choices == [(f"价格回复 test · running · {experiment.id}", experiment.id)]
    assert "### 价格回复 test" in description
    assert "**control** (control): 50% of reps · model `base` · prompt `the active prompt`" in (
        description
    )
    assert "prompt `renewals@1`" in description

    assert warnings.startswith("### ⚠ Read before deciding")
    warnings = warnings.replace("\\", "")  # as rendered: Markdown escapes dropped
    assert "too little data in variant 'control': 2 exposures (fewer than 100)" in warnings
    assert "too little data in variant 'renewals@1'" in warnings

    control, challenger = rows
    assert control[:7] == [
        "control (control)",
        "50%",
        "1",
        "2",
        "1 / 0 / 1 / 0",
        "50.0%",
        control[6],
    ]
    assert challenger[:6] == ["renewals@1", "50%", "1", "3", "1 / 1 / 0 / 1", "66.7%"]
    assert challenger[7] == "+33.3%"  # lift: 2/3 over 1/2
    assert challenger[9].endswith("(fisher)")  # cells this small get the exact test
    low, high = (float(x.rstrip("%")) / 100 for x in challenger[6].split(" – "))
    assert low < 2 / 3 < high

    # Cumulative conversion per day and variant, a temporal x axis for the plot.
    assert str(series["date"].dtype) == "datetime64[ns]"
    by_variant = {v: list(frame["conversion"].round(3)) for v, frame in series.groupby("variant")}
    assert by_variant == {"control": [1.0, 0.5], "renewals@1": [1.0, 0.667]}
    assert "reps per variant" in srm and "no mismatch" in srm
    assert "Wilson" in methods


def test_pick_a_stopped_experiment(service: CopilotService, experiment) -> None:
    service.experiments.stop(experiment.id)
    picker, description, *_ = dashboard.refresh(service, experiment.id)
    assert picker.value == experiment.id
    assert "**stopped (since " in description
    _, warnings, _, rows, srm, _ = dashboard.show_experiment(service, experiment.id)
    assert "no exposures yet" in warnings
    assert [row[3] for row in rows] == ["0", "0"]
    assert srm == "Sample ratio: no reps exposed yet."


def test_unknown_experiment_is_a_message(service: CopilotService) -> None:
    with pytest.raises(gr.Error, match="no experiment 'nope'"):
        dashboard.show_experiment(service, "nope")


def test_stored_zero_weights_are_a_warning_not_an_error(
    service: CopilotService, experiment
) -> None:
    damage_weights(service.experiments, experiment.id, [0.0, 0.0])
    expose(service, experiment.id, [("rep-a", "control", DAY_1, "accepted")])

    _, warnings, _, rows, srm, _ = dashboard.show_experiment(service, experiment.id)
    assert "the stored weights (control 0, renewals@1 0) are unusable" in warnings.replace("\\", "")
    assert [row[1] for row in rows] == ["0%", "0%"]
    assert srm.startswith("Sample ratio: **not checked**: the weights give no expected counts")


def test_an_unexpected_failure_is_a_message(
    service: CopilotService, experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr("copilot.abstats.experiment_results", broken)
    with pytest.raises(gr.Error, match=rf"results of experiment '{experiment.id}' could not be "):
        dashboard.show_experiment(service, experiment.id)
