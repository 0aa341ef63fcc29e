"""The Gradio UI: it builds, mounts at /ui, and its callbacks call the facade."""

from __future__ import annotations

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from copilot.schemas import Citation
from serve.api.app import create_app
from serve.service import Answer, CopilotService
from serve.ui.app import create_ui
from serve.ui.calls import EMPTY_TRANSCRIPT, refresh_calls, render_transcript
from serve.ui.format import clock, md_escape
from serve.ui.playground import CITATION_HEADERS, suggest_reply
from tests.serve.conftest import store_call, ui_login


class CannedAnswers(CopilotService):
    """The real service with ``ask`` answered from a fixed reply (no model loaded)."""

    def ask(self, text: str, account_id: str | None = None, adapter: str | None = None) -> Answer:
        self.asked = (text, account_id, adapter)
        excerpt = "It is too expensive. / We include cover."
        citation = Citation("call-a", 4.0, 71.0, excerpt, 0.8, "won")
        reply = "Our plan includes cover, so the total is lower."
        return Answer(reply, adapter or "base", [citation])


def test_create_ui_builds_with_analytics_off(service: CopilotService) -> None:
    demo = create_ui(service)
    assert isinstance(demo, gr.Blocks)
    assert demo.analytics_enabled is False
    assert demo.title == "Sales copilot"


def test_mounted_ui_answers_html(service: CopilotService) -> None:
    with TestClient(create_app(service)) as client:
        response = client.get("/ui/")
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]
        assert "<html" in response.text.lower()
        ui_login(client, service)
        config = client.get("/ui/config").json()
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert {"Call", "Customer says", "Suggested reply", "Adapter used"} <= labels
        # The API still answers beside the mounted UI, in its own error shape.
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/v1/nope").json()["error"]["code"] == "not_found"


def test_playground_callback_output(settings) -> None:
    service = CannedAnswers(settings)
    reply, adapter, rows = suggest_reply(service, "Too expensive.", "  ", " acct-1 ")
    assert service.asked == ("Too expensive.", "acct-1", None)
    assert reply == "Our plan includes cover, so the total is lower."
    assert adapter == "base"
    assert len(CITATION_HEADERS) == 5
    assert rows == [["call-a", "0:04", "1:11", "won", "It is too expensive. / We include cover."]]


def test_playground_empty_text_warns(service: CopilotService) -> None:
    with pytest.raises(gr.Error, match="Type what the customer said"):
        suggest_reply(service, "   ", "", "")


def test_playground_shows_copilot_errors_as_messages(service: CopilotService) -> None:
    with pytest.raises(gr.Error, match="no-such-adapter"):
        suggest_reply(service, "Too expensive.", "no-such-adapter", "")


def test_calls_tab_lists_and_renders(service: CopilotService) -> None:
    store_call(service)
    dropdown, rows = refresh_calls(service)
    assert rows == [["call-a", "won", "acct-1", "0:10", "transcript"]]
    assert dropdown.choices == [("call-a · won", "call-a")]

    markdown = render_transcript(service, "call-a")
    assert "### call-a" in markdown
    assert "outcome: **won**" in markdown
    assert "`0:00–0:04` **rep**: Thanks for your time." in markdown
    assert "`0:04–0:10` **customer**: It is too expensive." in markdown
    assert render_transcript(service, None) == EMPTY_TRANSCRIPT
    with pytest.raises(gr.Error, match="no-such-call"):
        render_transcript(service, "no-such-call")


def test_format_helpers() -> None:
    assert clock(0) == "0:00"
    assert clock(71.4) == "1:11"
    assert clock(3725) == "1:02:05"
    assert clock(None) == ""
    assert md_escape("**bold** <a>") == r"\*\*bold\*\* \<a\>"


@pytest.mark.slow
def test_playground_with_real_models(service: CopilotService, transcript_file) -> None:
    report = service.ingest([transcript_file], outcome="won")
    assert report.stored == ["northwind-renewal"]
    reply, adapter, rows = suggest_reply(service, "It's too expensive.", "", "")
    assert reply.strip()
    assert adapter == "base"
    assert rows and all(row[0] == "northwind-renewal" for row in rows)
