"""Objection playground: type what a customer said, read the suggested reply and its sources."""

from __future__ import annotations

from functools import partial

import gradio as gr

from copilot.errors import CopilotError
from serve.service import CopilotService
from serve.ui.format import clock

CITATION_HEADERS = ["call", "from", "to", "outcome", "excerpt"]


def suggest_reply(
    service: CopilotService, text: str, adapter: str = "", account_id: str = ""
) -> tuple[str, str, list[list[str]]]:
    """(reply, adapter used, citation rows) for the playground's outputs."""
    if not (text or "").strip():
        raise gr.Error("Type what the customer said first.")
    try:
        answer = service.ask(
            text,
            account_id=(account_id or "").strip() or None,
            adapter=(adapter or "").strip() or None,
        )
    except CopilotError as exc:
        # The message names the problem and the fix; the traceback is no use to a manager.
        raise gr.Error(str(exc)) from exc
    rows = [
        [c.call_id, clock(c.start), clock(c.end), c.outcome or "", c.text] for c in answer.citations
    ]
    return answer.reply, answer.adapter, rows


def create_playground_tab(service: CopilotService) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``."""
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(
                label="Customer says",
                lines=3,
                placeholder="e.g. Your price is 20% higher than what we pay today.",
            )
        with gr.Column(scale=1):
            adapter = gr.Textbox(label="Adapter (optional)", placeholder="blank = promoted model")
            account_id = gr.Textbox(label="Account (optional)")
    ask = gr.Button("Suggest a reply", variant="primary")
    reply = gr.Textbox(label="Suggested reply", lines=4, interactive=False)
    used = gr.Textbox(label="Adapter used", interactive=False)
    citations = gr.Dataframe(
        headers=CITATION_HEADERS, label="Drawn from these calls", interactive=False, wrap=True
    )

    outputs = [reply, used, citations]
    handler = partial(suggest_reply, service)
    ask.click(handler, inputs=[text, adapter, account_id], outputs=outputs)
    text.submit(handler, inputs=[text, adapter, account_id], outputs=outputs)
