"""The Train tab: it builds and mounts, and its callbacks drive real training processes."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from copilot.settings import Settings
from serve.api.app import create_app
from serve.service import CopilotService
from serve.ui import train
from serve.ui.app import create_ui
from tests.serve.conftest import ui_login
from tests.training.conftest import PAIRS, make_objections
from tests.training.test_jobs import end_jobs
from training.runs import RunFolder

TIMEOUT_S = 900  # model load + a few steps on 2 cores shared with other test runs
# Small enough for a few steps on CPU; the recipe is the server's own config.
QUICK = {"batch_size": 2, "max_length": 128, "log_every": 1, "eval_fraction": 0.25}


@pytest.fixture
def trainable(settings: Settings) -> Iterator[CopilotService]:
    """A service whose store holds the training fixtures' objections."""
    service = CopilotService(settings.with_training(QUICK))
    service.store.replace_objections(make_objections())
    yield service
    end_jobs(service.settings)


def labels(demo: gr.Blocks) -> dict[str, gr.components.Component]:
    return {getattr(b, "label", None): b for b in demo.blocks.values() if getattr(b, "label", None)}


def test_train_tab_builds_with_fields_named_and_filled_from_the_config(
    service: CopilotService,
) -> None:
    demo = create_ui(service)
    found = labels(demo)
    assert isinstance(found["Train"], gr.Tab)
    cfg = service.settings.training
    for key in train.HYPER_PARAMETERS:
        assert found[key].value == getattr(cfg, key), key
    for label in ("Loss curve", "Adapters", "Side by side", "Objections by type and outcome"):
        assert label in found
    buttons = {b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert {"Preview dataset", "Start", "Stop", "Evaluate", "Promote"} <= buttons


def test_train_tab_mounts_at_ui(service: CopilotService) -> None:
    with TestClient(create_app(service)) as client:
        assert client.get("/ui/").status_code == 200
        ui_login(client, service)
        config = client.get("/ui/config").json()
        shown = {c.get("props", {}).get("label") for c in config["components"]}
        assert {"Train", "max_steps", "learning_rate", "Loss curve", "Adapter"} <= shown


def test_form_values_become_training_overrides() -> None:
    overrides = train.training_overrides(
        method="dpo",
        max_steps=6.0,
        learning_rate=0.0005,
        lora_r=8.0,
        batch_size=None,
        grad_accum_steps=2.0,
    )
    assert overrides == {
        "method": "dpo",
        "max_steps": 6,
        "learning_rate": 0.0005,
        "lora_r": 8,
        "grad_accum_steps": 2,
    }
    assert isinstance(overrides["max_steps"], int)


def test_bad_hyper_parameter_is_a_message_not_a_traceback(trainable: CopilotService) -> None:
    with pytest.raises(gr.Error, match="'learning_rate'") as caught:
        train.start_run(trainable, "", "sft", 6, -1.0, 8, 2, 1)
    assert "Traceback" not in str(caught.value)
    with pytest.raises(gr.Error, match="'max_steps'"):
        train.start_run(trainable, "", "sft", 0, 0.0005, 8, 2, 1)
    with pytest.raises(gr.Error, match="not allowed"):
        train.start_run(trainable, "../escape", "sft", 6, 0.0005, 8, 2, 1)
    assert train.poll_run(trainable, None)[0] == train.NO_RUN


def test_start_without_objections_says_what_to_do(service: CopilotService) -> None:
    with pytest.raises(gr.Error, match="objections"):
        train.start_run(service, "", "sft", 6, 0.0005, 8, 2, 1)


def test_preview_counts_the_stored_objections(trainable: CopilotService) -> None:
    rows, summary = train.preview(trainable, "sft")
    polarity = {"won": "positive", "lost": "negative", "open": "unknown"}
    expected = Counter((kind, polarity[outcome]) for _, outcome, kind, _, _ in PAIRS)
    assert {kind for kind, *_ in rows} == {kind for _, _, kind, _, _ in PAIRS}
    for kind, positive, negative, unknown, total in rows:
        assert [positive, negative, unknown] == [
            expected[(kind, p)] for p in ("positive", "negative", "unknown")
        ]
        assert total == positive + negative + unknown
    assert sum(row[-1] for row in rows) == len(PAIRS)
    won_calls = len({call for call, outcome, *_ in PAIRS if outcome == "won"})
    assert f"**{len(PAIRS)}** objections from **{won_calls + 2}** calls" in summary
    assert "**sft**" in summary and "**dpo**" in summary


def test_preview_warns_about_what_blocks_training(service: CopilotService) -> None:
    won_only = [o for o in make_objections() if o.outcome == "won"]
    service.store.replace_objections(won_only)
    with pytest.warns(UserWarning, match="one class only"):
        rows, summary = train.preview(service, "sft")
    assert sum(row[-1] for row in rows) == len(won_only)
    assert "one class only" in summary
    with pytest.raises(gr.Error, match="one class only"):
        train.start_run(service, "", "sft", 4, 0.0005, 8, 2, 1)


def test_stop_and_promote_name_what_is_missing(service: CopilotService) -> None:
    with pytest.raises(gr.Error, match="Pick a training run"):
        train.stop_run(service, None)
    with pytest.raises(gr.Error, match="no training run named 'nope'"):
        train.stop_run(service, "nope")
    with pytest.raises(gr.Error, match="no adapter named 'nope'"):
        train.promote(service, "nope")
    with pytest.raises(gr.Error, match="no adapter named 'nope'"):
        train.evaluate(service, "nope")
    assert train.show_evaluation(service, None)[0] == train.NO_EVALUATION


def test_evaluation_results_show_losses_interval_and_side_by_side() -> None:
    from training.jobs import EvaluationStatus
    from training.judge import Evaluation, SideBySide, WinLikeness

    row = SideBySide(
        call_id="won-fir",
        type="price",
        objection="The implementation fee seems steep.",
        base_reply="I understand.",
        adapter_reply="We can waive half of the fee if you sign this quarter.",
        won_replies=["I can offer ten percent off.", "Let's split it into quarterly payments."],
        lost_replies=["That's our price, take it or leave it."],
        base_margin=0.01,
        adapter_margin=0.12,
    )
    win = WinLikeness(
        mean_gain=0.11,
        ci_low=0.04,
        ci_high=0.18,
        confidence=0.95,
        share_better=0.8,
        share_ci_low=0.49,
        share_ci_high=0.94,
        n=5,
        base_margin=0.01,
        adapter_margin=0.12,
        method="all-MiniLM-L6-v2",
    )
    document = Evaluation("four-steps", 3.25, 2.9, win, [row], "2026-01-01T00:00:00").to_dict()

    text = train.evaluation_summary(EvaluationStatus("four-steps", "done", document))
    assert "base **3.250** → adapter **2.900**" in text
    assert "**+0.110** (95% interval +0.040 … +0.180)" in text
    assert "**80%** of objections (95% interval 49% … 94%), n = 5" in text
    assert "reliably more like won-call replies" in text
    assert train.side_by_side_rows(document) == [
        [
            "won-fir",
            "price",
            "The implementation fee seems steep.",
            "I understand.",
            "We can waive half of the fee if you sign this quarter.",
            "I can offer ten percent off.  (+1 more)",
            "That's our price, take it or leave it.",
        ]
    ]
    assert len(train.SIDE_BY_SIDE_HEADERS) == 7
    failed = EvaluationStatus("x", "failed", None, "no adapter named 'x'", "error: no adapter")
    assert "failed:** no adapter named 'x'" in train.evaluation_summary(failed)


def poll_until(service: CopilotService, name: str, done) -> tuple:
    """Tick like the browser's timer until ``done(text, frame, timer)``; the last tick's outputs."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        outputs = train.poll_run(service, name)
        if done(*outputs[:3]):
            return outputs
        assert time.monotonic() < deadline, f"run {name}: {outputs[0]}"
        time.sleep(1.0)


def ended(text, frame, timer) -> bool:
    return not timer.active  # the tick switches its timer off once the run has ended


@pytest.mark.slow
def test_start_watch_and_promote_through_the_tab(trainable: CopilotService) -> None:
    picker, text, timer = train.start_run(trainable, "ui-four", "sft", 4, 0.0005, 8, 2, 1)
    assert picker.value == "ui-four" and timer.active
    assert "ui-four" in text
    with pytest.raises(gr.Error, match="'ui-four' is still running"):
        train.start_run(trainable, "", "sft", 4, 0.0005, 8, 2, 1)

    text, frame, _, rows, adapter_picker = poll_until(trainable, "ui-four", ended)
    assert "**done**" in text, text
    assert "step 4/4" in text

    # The plotted training losses are the losses the trainer logged.
    logged = RunFolder(trainable.settings.adapters_dir / "ui-four").progress()
    steps = [(r["step"], r["loss"]) for r in logged if r.get("event") == "step"]
    curve = frame[frame["series"] == "train"]
    assert list(zip(curve["step"], curve["loss"], strict=True)) == steps
    held_out = frame[frame["series"] == "held-out"]["loss"].tolist()
    assert len(held_out) == 2 and all(math.isfinite(x) for x in held_out)

    # The finished run appears in the adapters table with its losses, and can be promoted.
    info = trainable.registry.get("ui-four")
    before, after = info.metrics["eval_loss_before"], info.metrics["eval_loss_after"]
    assert rows[0][:3] == ["ui-four", info.created_at, ""]
    assert rows[0][-1] == f"{before:.3f} → {after:.3f}"
    assert adapter_picker.value == "ui-four"
    rows, adapter_picker = train.promote(trainable, "ui-four")
    assert rows[0][2] == "yes" and trainable.registry.promoted().name == "ui-four"


@pytest.mark.slow
def test_stop_button_ends_a_run_stopped(trainable: CopilotService) -> None:
    train.start_run(trainable, "ui-stop", "sft", 400, 0.0005, 8, 2, 1)
    running = poll_until(
        trainable, "ui-stop", lambda text, frame, _: "running" in text and len(frame)
    )
    assert running[2].active and "step" in running[0]

    text = train.stop_run(trainable, "ui-stop")
    assert "**stopping**" in text
    text, frame, _, _, _ = poll_until(trainable, "ui-stop", ended)
    assert "**stopped**" in text, text
    status = RunFolder(trainable.settings.adapters_dir / "ui-stop").status()
    assert status.state == "stopped" and status.resumable
    with pytest.raises(gr.Error, match="not running"):
        train.stop_run(trainable, "ui-stop")
