"""Prompt workshop: edit the system prompt and knowledge notes, save versions, preview replies.

Every version is immutable (``copilot/prompt_library.py``); a manager previews one
against a few real objections, then either makes it the one chat uses or tests
it against the current prompt as an experiment variant (``prompt_version``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from copilot.errors import CopilotError
from copilot.prompt_library import PromptVersion
from copilot.prompts import SYSTEM_PROMPT
from serve.service import CopilotService
from serve.ui.format import md_escape

logger = logging.getLogger(__name__)

NOTE_HEADERS = ["title", "text"]
VERSION_HEADERS = ["version", "author", "created", "notes", "chat uses it", "system prompt"]
PREVIEW_HEADERS = ["customer says", "reply"]
SERVED, BASE = "served", "base"
MODEL_CHOICES = [("the model chat serves (promoted adapter)", SERVED), ("the base model", BASE)]
PREVIEW_COUNT = 3
# Used only when no objections are mined yet: a price, a timing and a status-quo
# objection, in the two languages the copilot's users sell in.
SAMPLE_OBJECTIONS = (
    "Your price is about 20% higher than what we pay today.",
    "我们已经有合作的供应商了，暂时不考虑更换。",
    "Send me something by email and we'll look at it next quarter.",
)
NO_PREVIEW = "Pick a saved version and press Preview to read its replies to sample objections."


def _message(exc: CopilotError) -> gr.Error:
    # Our messages name the problem and the fix; a traceback is no use to a manager.
    return gr.Error(str(exc))


def author_of(request: gr.Request | None) -> str:
    """The logged-in user (the key's name, see serve/ui/login.py)."""
    return (getattr(request, "username", None) or "unknown") if request else "unknown"


# --- versions --------------------------------------------------------------------


def active_line(service: CopilotService) -> str:
    active = service.prompts.active()
    if active is None:
        return "Chat uses **the built-in prompt**."
    return f"Chat uses **{md_escape(active.ref)}** (saved by {md_escape(active.author)})."


def version_rows(service: CopilotService) -> list[list[str]]:
    """Every saved version, newest first within each name."""
    active = service.prompts.active()
    rows = []
    for v in sorted(service.prompts.versions(), key=lambda v: (v.name, -v.version)):
        uses = "yes" if active is not None and active.ref == v.ref else ""
        start = v.system_prompt if len(v.system_prompt) <= 80 else v.system_prompt[:79] + "…"
        rows.append([v.ref, v.author, v.created_at, str(len(v.notes)), uses, start])
    return rows


def default_ref(service: CopilotService, selected: str | None = None) -> str | None:
    """``selected`` if saved, else the active version, else the newest-listed one."""
    refs = [row[0] for row in version_rows(service)]
    if selected in refs:
        return selected
    active = service.prompts.active()
    return active.ref if active else (refs[0] if refs else None)


def version_picker(service: CopilotService, selected: str | None = None) -> Any:
    refs = [row[0] for row in version_rows(service)]
    return gr.Dropdown(choices=refs, value=default_ref(service, selected))


def experiment_body(service: CopilotService, ref: str | None) -> dict[str, Any]:
    """An A/B test of ``ref`` against the prompt chat uses now, as ``POST /v1/experiments``
    takes it. Control names the active version (pinned, so activating another version
    mid-test does not change the control arm); null means the built-in prompt."""
    ref = ref or "NAME@N"
    active = service.prompts.active()
    control = active.ref if active else None
    return {
        "name": f"prompt {ref} vs {control or 'the built-in prompt'}",
        "variants": [
            {"name": "control", "adapter": None, "prompt_version": control, "weight": 1},
            {"name": ref, "adapter": None, "prompt_version": ref, "weight": 1},
        ],
        "control": "control",
    }


def variant_snippet(service: CopilotService, ref: str | None) -> str:
    return json.dumps(experiment_body(service, ref), ensure_ascii=False, indent=2)


def start_experiment(service: CopilotService, ref: str | None, author: str) -> str:
    """Start the A/B test that ``experiment_body`` describes; a confirmation line."""
    if not ref:
        raise gr.Error("Save a version (or pick one) before testing it in an experiment.")
    active = service.prompts.active()
    if active is not None and active.ref == ref:
        raise gr.Error(
            f"Chat already uses {ref}; pick another version to test against it, "
            "or press 'Use the built-in prompt' first."
        )
    body = experiment_body(service, ref)
    try:
        service.prompts.get(ref)
        experiment = service.experiments.create(
            body["name"], body["variants"], control=body["control"], created_by=author
        )
    except CopilotError as exc:
        raise _message(exc) from exc
    gr.Info(f"Experiment {experiment.id} started; follow it on the A/B dashboard tab.")
    return (
        f"Started experiment **{md_escape(experiment.id)}**: half of the reps get replies "
        f"written with {md_escape(ref)}. Follow it on the A/B dashboard tab."
    )


def note_rows(notes: Any) -> list[dict[str, str]]:
    """The notes table's rows (lists or a DataFrame) as ``{"title", "text"}`` mappings."""
    if notes is None:
        return []
    if hasattr(notes, "values") and hasattr(notes, "columns"):  # a pandas DataFrame
        notes = notes.values.tolist()
    rows = []
    for row in notes:
        cells = [("" if cell is None else str(cell)) for cell in list(row)[:2]]
        cells += [""] * (2 - len(cells))
        rows.append({"title": cells[0], "text": cells[1]})
    return rows


def open_tab(service: CopilotService) -> tuple[str, Any, list[list[str]], str]:
    """On page load: (active line, version picker, versions table, variant snippet)."""
    # Inside an event a component update carries no readable value, so the ref is kept apart.
    ref = default_ref(service)
    return (
        active_line(service),
        version_picker(service, ref),
        version_rows(service),
        variant_snippet(service, ref),
    )


def save_version(
    service: CopilotService, name: str, system_prompt: str, notes: Any, author: str
) -> tuple[str, Any, list[list[str]], str]:
    """Store the editor's text as the next version of ``name``; it becomes the picked one."""
    if not (name or "").strip():
        raise gr.Error("Give the prompt a name first, e.g. 'renewals' (versions are numbered).")
    try:
        saved = service.prompts.save(name, system_prompt, note_rows(notes), author=author)
    except CopilotError as exc:
        raise _message(exc) from exc
    gr.Info(f"Saved {saved.ref}. Preview it, then use it for chat or in an experiment.")
    return (
        active_line(service),
        version_picker(service, saved.ref),
        version_rows(service),
        variant_snippet(service, saved.ref),
    )


def load_version(service: CopilotService, ref: str | None) -> tuple[str, str, list[list[str]]]:
    """(name, system prompt, notes rows) of ``ref`` into the editor."""
    if not ref:
        raise gr.Error("Pick a saved version to load.")
    try:
        version = service.prompts.get(ref)
    except CopilotError as exc:
        raise _message(exc) from exc
    rows = [[n.title, n.text] for n in version.notes] or [["", ""]]
    return version.name, version.system_prompt, rows


def activate_version(
    service: CopilotService, ref: str | None, author: str
) -> tuple[str, list[list[str]]]:
    if not ref:
        raise gr.Error("Pick a saved version to use for chat.")
    try:
        version = service.prompts.activate(ref, by=author)
    except CopilotError as exc:
        raise _message(exc) from exc
    gr.Info(f"Chat uses {version.ref} from the next request on.")
    return active_line(service), version_rows(service)


def use_builtin(service: CopilotService) -> tuple[str, list[list[str]]]:
    service.prompts.deactivate()
    gr.Info("Chat uses the built-in prompt from the next request on.")
    return active_line(service), version_rows(service)


# --- preview ---------------------------------------------------------------------


@dataclass
class Preview:
    ref: str
    model: str  # adapter name, or "base"
    replies: list[tuple[str, str]]  # (objection, reply)


def sample_objections(service: CopilotService, count: int = PREVIEW_COUNT) -> list[str]:
    """Up to ``count`` stored objections, one per type first; the built-in samples if none."""
    picked: list[str] = []
    seen_types: set[str] = set()
    objections = service.objections()
    for first_pass in (True, False):
        for o in objections:
            text = o.customer_text.strip()
            if len(picked) == count:
                return picked
            if not text or text in picked or (first_pass and o.type in seen_types):
                continue
            seen_types.add(o.type)
            picked.append(text)
    return picked or list(SAMPLE_OBJECTIONS[:count])


def preview_replies(
    service: CopilotService, version: PromptVersion, objections: list[str], model: str = SERVED
) -> Preview:
    """The replies a rep would get to ``objections`` under ``version``: the same grounding,
    prompt, output guard and adapter choice as ``CopilotService.ask`` (serve/answer.py)."""
    from serve.answer import generate_answer, prepare_objection
    from serve.variants import BASE_MODEL, DEFAULT_MODEL, ModelChoice

    adapter = None
    if model == SERVED:
        adapter = service.registry.resolve(None, expected_base=service.generator.base_model)
    choice = ModelChoice(
        model=DEFAULT_MODEL if model == SERVED else BASE_MODEL,
        adapter=adapter,
        system_prompt=version.system_prompt,
        knowledge=version.knowledge,
        prompt_version=version.ref,
    )
    replies = []
    for text in objections:
        answer = generate_answer(service, prepare_objection(service, text, None, choice))
        replies.append((text, answer.reply))
    logger.info(
        "previewed %s with %s on %d objections", version.ref, choice.adapter_name, len(objections)
    )
    return Preview(version.ref, choice.adapter_name, replies)


def preview(
    service: CopilotService, ref: str | None, model: str = SERVED
) -> tuple[str, list[list[str]]]:
    """(summary Markdown, [objection, reply] rows) for the picked version."""
    if not ref:
        raise gr.Error("Save a version (or pick one) before previewing it.")
    try:
        version = service.prompts.get(ref)
        result = preview_replies(service, version, sample_objections(service), model)
    except CopilotError as exc:
        raise _message(exc) from exc
    model_name = "the base model" if result.model == "base" else f"adapter **{result.model}**"
    summary = f"Replies from **{md_escape(result.ref)}** with {md_escape(model_name)}."
    rows = [[objection, reply or "(no usable reply)"] for objection, reply in result.replies]
    return summary, rows


# --- layout ----------------------------------------------------------------------


def create_workshop_tab(demo: gr.Blocks, service: CopilotService) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``; loads on page open."""
    # elem_ids name what the browser test (tests/serve/test_browser.py) reads and types into.
    active = gr.Markdown(elem_id="workshop-active")

    # Editor
    with gr.Row():
        name = gr.Textbox(
            label="Prompt name", placeholder="e.g. renewals", scale=2, elem_id="workshop-name"
        )
        picker = gr.Dropdown(label="Saved version", choices=[], scale=2)
        load = gr.Button("Load into editor", scale=1)
    system_prompt = gr.Textbox(
        label="System prompt",
        value=SYSTEM_PROMPT,
        lines=6,
        max_lines=20,
        elem_id="workshop-prompt",
    )
    notes = gr.Dataframe(
        value=[["", ""]],
        headers=NOTE_HEADERS,
        column_count=2,
        type="array",
        interactive=True,
        wrap=True,
        label="Knowledge notes (playbooks, price notes the copilot may cite)",
    )
    with gr.Row():
        save = gr.Button("Save as new version", variant="primary", elem_id="workshop-save")
        activate = gr.Button("Use for chat")
        builtin = gr.Button("Use the built-in prompt")
    versions = gr.Dataframe(
        headers=VERSION_HEADERS,
        label="Saved versions",
        interactive=False,
        wrap=True,
        elem_id="workshop-versions",
    )

    # Preview
    gr.Markdown("### Preview")
    with gr.Row():
        model = gr.Radio(MODEL_CHOICES, value=SERVED, label="Model", scale=3)
        run_preview = gr.Button(
            "Preview", variant="primary", scale=1, elem_id="workshop-preview-run"
        )
    summary = gr.Markdown(NO_PREVIEW, elem_id="workshop-preview-summary")
    replies = gr.Dataframe(
        headers=PREVIEW_HEADERS,
        label="Preview replies",
        interactive=False,
        wrap=True,
        elem_id="workshop-preview",
    )

    # Experiments
    gr.Markdown(
        "### Test it in an experiment\n"
        "An experiment variant names a version in `prompt_version`; reps in that variant get "
        "replies written with it (null = the prompt chat uses by default). The button starts "
        "this A/B test; the same body works with `POST /v1/experiments`."
    )
    with gr.Row():
        start = gr.Button("Start an A/B test of this version", scale=1)
        started = gr.Markdown()
    snippet = gr.Code(
        variant_snippet(service, None), language="json", label="Experiment (POST /v1/experiments)"
    )

    # Events: closures, so gradio sees the gr.Request parameter and passes the session.
    def on_save(name_: str, prompt_: str, notes_: Any, request: gr.Request):
        return save_version(service, name_, prompt_, notes_, author_of(request))

    def on_activate(ref: str | None, request: gr.Request):
        return activate_version(service, ref, author_of(request))

    def on_start(ref: str | None, request: gr.Request):
        return start_experiment(service, ref, author_of(request))

    demo.load(lambda: open_tab(service), outputs=[active, picker, versions, snippet])
    save.click(
        on_save, inputs=[name, system_prompt, notes], outputs=[active, picker, versions, snippet]
    )
    load.click(
        lambda ref: load_version(service, ref), inputs=picker, outputs=[name, system_prompt, notes]
    )
    picker.change(lambda ref: variant_snippet(service, ref), inputs=picker, outputs=snippet)
    activate.click(on_activate, inputs=picker, outputs=[active, versions]).then(
        lambda ref: variant_snippet(service, ref), inputs=picker, outputs=snippet
    )
    builtin.click(lambda: use_builtin(service), outputs=[active, versions]).then(
        lambda ref: variant_snippet(service, ref), inputs=picker, outputs=snippet
    )
    start.click(on_start, inputs=picker, outputs=started)
    run_preview.click(
        lambda ref, m: preview(service, ref, m), inputs=[picker, model], outputs=[summary, replies]
    )
