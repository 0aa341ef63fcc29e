"""Calls browser: every stored call with its outcome; pick one to read the transcript."""

from __future__ import annotations

from functools import partial
from typing import Any

import gradio as gr

from copilot.errors import CopilotError
from serve.service import CopilotService
from serve.ui.format import clock, md_escape

CALL_HEADERS = ["call", "outcome", "account", "duration", "source"]
EMPTY_TRANSCRIPT = "Pick a call to read its transcript."


def call_rows(service: CopilotService) -> list[list[str]]:
    return [
        [r.call_id, r.outcome or "", r.account_id or "", clock(r.duration_s), r.source_kind]
        for r in service.list_calls()
    ]


def refresh_calls(service: CopilotService) -> tuple[Any, list[list[str]]]:
    """(dropdown update, table rows) from the stored calls."""
    rows = call_rows(service)
    choices = [(f"{row[0]} · {row[1] or 'no outcome'}", row[0]) for row in rows]
    return gr.Dropdown(choices=choices, value=None), rows


def render_transcript(service: CopilotService, call_id: str | None) -> str:
    """The call's metadata and its turns as Markdown, one ``**speaker**`` line per turn."""
    if not call_id:
        return EMPTY_TRANSCRIPT
    try:
        record = service.transcript(call_id)
    except CopilotError as exc:
        raise gr.Error(str(exc)) from exc

    facts = [
        f"outcome: **{md_escape(record.outcome or 'none')}**",
        f"account: {md_escape(record.account_id or '-')}",
        f"duration: {clock(record.duration_s) or '-'}",
        f"source: {record.source_kind}",
    ]
    lines = [f"### {md_escape(record.call_id)}", " · ".join(facts), ""]
    lines += [
        f"`{clock(t.start)}–{clock(t.end)}` **{t.speaker}**: {md_escape(t.text)}  "
        for t in record.turns
    ]
    if not record.turns:
        lines.append("_This call has no turns._")
    return "\n".join(lines)


def create_calls_tab(demo: gr.Blocks, service: CopilotService) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``; loads on page open."""
    with gr.Row():
        picker = gr.Dropdown(label="Call", choices=[], scale=4)
        refresh = gr.Button("Refresh", scale=1)
    table = gr.Dataframe(headers=CALL_HEADERS, label="Stored calls", interactive=False)
    transcript = gr.Markdown(EMPTY_TRANSCRIPT)

    load = partial(refresh_calls, service)
    demo.load(load, outputs=[picker, table])
    refresh.click(load, outputs=[picker, table])
    picker.change(partial(render_transcript, service), inputs=picker, outputs=transcript)
