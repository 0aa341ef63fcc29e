"""Calls browser: every stored call with its outcome; pick one to read the transcript.

An upload here goes through the same background job as ``POST /v1/calls``
(serve/jobs.py): the callback only stores the file and queues it, and a timer
polls the job, so a recording's minutes of transcription never hold up chat,
the API or another manager's page.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from copilot.errors import CopilotError
from copilot.exports import write_csv
from serve.jobs import UploadJob, account_teams
from serve.service import CopilotService
from serve.ui.format import clock, md_escape

CALL_HEADERS = ["call", "outcome", "account", "duration", "source"]
EMPTY_TRANSCRIPT = "Pick a call to read its transcript."
POLL_INTERVAL_S = 2.0


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


def export_calls_csv(service: CopilotService) -> str:
    """The calls table as a CSV file for a spreadsheet; returns its path.

    Written by copilot.exports, so a call id or an outcome that starts like a formula
    stays text; UTF-8 with a byte-order mark, so Excel shows Chinese names as written.
    """
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8-sig", newline="", prefix="calls-", suffix=".csv", delete=False
    ) as out:
        write_csv(call_rows(service), CALL_HEADERS, out)
    return out.name


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


def start_upload(
    service: CopilotService, file_path: str | None, outcome: str | None, account_id: str | None
) -> tuple[str, str, Any]:
    """Store the file and queue its ingest; (job id, status line, poll timer on)."""
    if not file_path:
        raise gr.Error("Pick a recording or a transcript to upload first.")
    account_id = (account_id or "").strip() or None
    try:
        team = account_teams(service).get(account_id) if account_id else None
        with Path(file_path).open("rb") as source:
            job = service.call_jobs.accept(
                source, Path(file_path).name, (outcome or "").strip() or None, account_id, team
            )
    except CopilotError as exc:
        raise gr.Error(str(exc)) from exc
    gr.Info(f"{job.input_name} is queued; it is ingested in the background.")
    return job.job_id, job_line(service, job), gr.Timer(active=True)


def poll_upload(service: CopilotService, job_id: str | None) -> tuple[str, Any, Any, Any]:
    """One timer tick: (status line, timer, call picker, calls table).

    The timer stops once the job has finished, and only then is the calls list
    refreshed (so a selection is not reset every two seconds).
    """
    if not job_id:
        return "", gr.Timer(active=False), gr.skip(), gr.skip()
    try:
        job = service.call_jobs.get(job_id)
    except CopilotError as exc:
        return str(exc), gr.Timer(active=False), gr.skip(), gr.skip()
    if not job.finished:
        return job_line(service, job), gr.Timer(active=True), gr.skip(), gr.skip()
    picker, rows = refresh_calls(service)
    return job_line(service, job), gr.Timer(active=False), picker, rows


def job_line(service: CopilotService, job: UploadJob) -> str:
    """``**running** · call.wav · 0:42 so far``: where an upload stands, as Markdown."""
    name = md_escape(job.input_name)
    if job.status == "queued":
        ahead = service.call_jobs.ahead_of(job)
        waiting = f"{ahead} upload{'s' if ahead != 1 else ''} ahead" if ahead else "next"
        return f"**queued** · {name} · {waiting}"
    if job.status == "running":
        elapsed = time.time() - datetime.fromisoformat(job.started_at or job.created_at).timestamp()
        return (
            f"**running** · {name} · {clock(max(elapsed, 0.0))} so far "
            "(a recording takes a while to transcribe; chat stays available)"
        )
    if job.status == "failed":
        return f"**failed** · {md_escape(job.error or 'see the server log')}"
    stored = ", ".join(md_escape(c) for c in job.stored) or "none"
    unchanged = ", ".join(md_escape(c) for c in job.unchanged)
    return f"**done** · {name} · stored: {stored}" + (
        f" · unchanged: {unchanged}" if unchanged else ""
    )


def create_calls_tab(demo: gr.Blocks, service: CopilotService) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``; loads on page open."""
    with gr.Row():
        picker = gr.Dropdown(label="Call", choices=[], scale=4)
        refresh = gr.Button("Refresh", scale=1)
    table = gr.Dataframe(headers=CALL_HEADERS, label="Stored calls", interactive=False)
    with gr.Row():
        export = gr.Button("Export CSV", scale=1)
        export_file = gr.File(label="Calls as CSV", interactive=False, scale=4)
    transcript = gr.Markdown(EMPTY_TRANSCRIPT)

    with gr.Accordion("Upload a call", open=False):
        with gr.Row():
            upload_file = gr.File(label="Recording or transcript", type="filepath", scale=3)
            with gr.Column(scale=2):
                outcome = gr.Textbox(label="Outcome (optional)", placeholder="won, lost, open")
                account = gr.Textbox(label="Account id (optional)")
                upload_button = gr.Button("Upload", variant="primary")
        job_status = gr.Markdown()
    job_id = gr.State(None)
    job_timer = gr.Timer(POLL_INTERVAL_S, active=False)

    load = partial(refresh_calls, service)
    demo.load(load, outputs=[picker, table])
    refresh.click(load, outputs=[picker, table])
    picker.change(partial(render_transcript, service), inputs=picker, outputs=transcript)
    export.click(partial(export_calls_csv, service), outputs=export_file)
    upload_button.click(
        partial(start_upload, service),
        inputs=[upload_file, outcome, account],
        outputs=[job_id, job_status, job_timer],
    )
    # A table read per tick, so many managers may poll at once.
    job_timer.tick(
        partial(poll_upload, service),
        inputs=job_id,
        outputs=[job_status, job_timer, picker, table],
        show_progress="hidden",
        concurrency_limit=None,
    )
