"""The Prompt workshop tab: save, list, load and activate versions; preview replies."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd
import pytest

from copilot.prompts import SYSTEM_PROMPT
from serve.service import CopilotService
from serve.ui import workshop
from serve.ui.app import create_ui
from tests.training.conftest import make_objections

NOTES = [["Price", "Annual plans are 12% below monthly."], ["", ""], ["交期", "现货三天发货。"]]


def test_tab_builds_with_the_built_in_prompt_in_the_editor(service: CopilotService) -> None:
    demo = create_ui(service)
    found = {getattr(b, "label", None): b for b in demo.blocks.values()}
    assert isinstance(found["Prompt workshop"], gr.Tab)
    assert found["System prompt"].value == SYSTEM_PROMPT
    buttons = {b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert {"Save as new version", "Use for chat", "Preview", "Load into editor"} <= buttons


def test_save_lists_picks_and_shows_the_variant(service: CopilotService) -> None:
    active, picker, rows, snippet = workshop.open_tab(service)
    assert active == "Chat uses **the built-in prompt**."
    assert picker.choices == [] and rows == []

    workshop.save_version(service, "renewals", "Be brief.", [["", ""]], "dana")
    active, picker, rows, snippet = workshop.save_version(
        service, " renewals ", "Be brief; cite the price note.", NOTES, "dana"
    )
    assert picker.value == "renewals@2"
    assert [choice[1] for choice in picker.choices] == ["renewals@2", "renewals@1"]
    assert rows == [
        ["renewals@2", "dana", rows[0][2], "2", "", "Be brief; cite the price note."],
        ["renewals@1", "dana", rows[1][2], "0", "", "Be brief."],
    ]
    body = json.loads(snippet)
    assert body["name"] == "prompt renewals@2 vs the built-in prompt"
    assert [(v["name"], v["prompt_version"]) for v in body["variants"]] == [
        ("control", None),
        ("renewals@2", "renewals@2"),
    ]
    saved = service.prompts.get("renewals@2")
    assert saved.knowledge == ["Price: Annual plans are 12% below monthly.", "交期: 现货三天发货。"]


def test_notes_arrive_as_lists_or_a_data_frame() -> None:
    frame = pd.DataFrame(NOTES, columns=workshop.NOTE_HEADERS)
    expected = [
        {"title": "Price", "text": "Annual plans are 12% below monthly."},
        {"title": "", "text": ""},
        {"title": "交期", "text": "现货三天发货。"},
    ]
    assert workshop.note_rows(frame) == expected
    assert workshop.note_rows(NOTES) == expected
    assert workshop.note_rows([[None, "only text"]]) == [{"title": "", "text": "only text"}]
    assert workshop.note_rows(None) == []


def test_load_and_activate(service: CopilotService) -> None:
    workshop.save_version(service, "续约", "简短回答客户。", NOTES, "dana")
    name, prompt, notes = workshop.load_version(service, "续约@1")
    assert (name, prompt) == ("续约", "简短回答客户。")
    assert notes == [["Price", "Annual plans are 12% below monthly."], ["交期", "现货三天发货。"]]

    active, rows = workshop.activate_version(service, "续约@1", "dana")
    assert active == "Chat uses **续约@1** (saved by dana)."
    assert rows[0][4] == "yes"
    assert service.prompts.active().ref == "续约@1"
    assert workshop.version_picker(service).value == "续约@1"

    active, rows = workshop.use_builtin(service)
    assert active == "Chat uses **the built-in prompt**."
    assert rows[0][4] == ""
    assert service.prompts.active() is None


def test_start_an_experiment_of_a_version_against_the_active_one(
    service: CopilotService,
) -> None:
    workshop.save_version(service, "renewals", "Be brief.", [], "dana")
    workshop.save_version(service, "renewals", "Be brief; cite prices.", [], "dana")
    workshop.activate_version(service, "renewals@1", "dana")
    with pytest.raises(gr.Error, match="Chat already uses renewals@1"):
        workshop.start_experiment(service, "renewals@1", "dana")

    line = workshop.start_experiment(service, "renewals@2", "dana")
    experiment = service.experiments.running()
    assert experiment.id in line
    assert experiment.created_by == "dana"
    assert experiment.control == "control"
    # Control is pinned to the version active when the test started.
    assert [(v.name, v.prompt_version, v.weight) for v in experiment.variants] == [
        ("control", "renewals@1", 0.5),
        ("renewals@2", "renewals@2", 0.5),
    ]
    # One experiment runs at a time; the message says how to go on.
    with pytest.raises(gr.Error, match="stop it first"):
        workshop.start_experiment(service, "renewals@2", "dana")
    with pytest.raises(gr.Error, match="Save a version"):
        workshop.start_experiment(service, None, "dana")


@pytest.mark.parametrize(
    ("name", "prompt", "notes", "message"),
    [
        ("", "Be brief.", [], "Give the prompt a name"),
        ("renewals", "  ", [], "system prompt is empty"),
        ("renewals", "x" * 5000, [], "shorten it"),
        ("two words", "Be brief.", [], "no spaces"),
        ("renewals", "Be brief.", [["Price", ""]], "has no text; write it or delete the row"),
        ("renewals", "Be brief.", [["Price", "y" * 3000]], "split it into several notes"),
    ],
)
def test_bad_input_shows_a_message_that_names_the_fix(
    service: CopilotService, name: str, prompt: str, notes: list, message: str
) -> None:
    with pytest.raises(gr.Error, match=message):
        workshop.save_version(service, name, prompt, notes, "dana")
    assert service.prompts.versions() == []


def test_picking_nothing_is_a_message(service: CopilotService) -> None:
    with pytest.raises(gr.Error, match="Pick a saved version to load"):
        workshop.load_version(service, None)
    with pytest.raises(gr.Error, match="Pick a saved version to use for chat"):
        workshop.activate_version(service, "", "dana")
    with pytest.raises(gr.Error, match="Save a version"):
        workshop.preview(service, None)
    with pytest.raises(gr.Error, match="no prompt version 'gone@3'"):
        workshop.preview(service, "gone@3")


def test_author_is_the_signed_in_user() -> None:
    assert workshop.author_of(gr.Request(username="dana")) == "dana"
    assert workshop.author_of(None) == "unknown"


def test_sample_objections_come_from_the_store_one_type_first(service: CopilotService) -> None:
    assert workshop.sample_objections(service) == list(workshop.SAMPLE_OBJECTIONS)
    assert any("供应商" in text for text in workshop.SAMPLE_OBJECTIONS)

    stored = make_objections()
    service.store.replace_objections(stored)
    picked = workshop.sample_objections(service, count=4)
    assert len(picked) == 4 == len(set(picked))
    types = {o.customer_text: o.type for o in stored}
    assert len({types[text] for text in picked}) == 4  # four different types


@pytest.mark.slow
def test_preview_writes_real_replies_with_the_version(service: CopilotService) -> None:
    workshop.save_version(
        service, "renewals", "Reply in one short sentence.", [["价格", "年付九折。"]], "dana"
    )
    summary, rows = workshop.preview(service, "renewals@1", workshop.BASE)
    assert summary == "Replies from **renewals@1** with the base model."
    assert [row[0] for row in rows] == list(workshop.SAMPLE_OBJECTIONS)
    assert all(row[1].strip() and row[1] != "(no usable reply)" for row in rows)
