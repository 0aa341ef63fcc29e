"""The managers' Gradio UI, mounted into the FastAPI app at ``/ui``."""

from __future__ import annotations

import os

# Some of gradio's telemetry calls read only this variable, not the Blocks flag,
# so it is set before gradio is imported. A self-hosted copilot phones no one.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from serve.service import CopilotService  # noqa: E402
from serve.ui.calls import create_calls_tab  # noqa: E402
from serve.ui.dashboard import create_dashboard_tab  # noqa: E402
from serve.ui.login import LOGIN_MESSAGE, end_sessions_of_revoked_keys, manager_login  # noqa: E402
from serve.ui.playground import create_playground_tab  # noqa: E402
from serve.ui.train import create_train_tab  # noqa: E402
from serve.ui.workshop import create_workshop_tab  # noqa: E402


def create_ui(service: CopilotService) -> gr.Blocks:
    """The UI's tabs over ``service``; every callback calls the facade."""
    with gr.Blocks(title="Sales copilot", analytics_enabled=False) as demo:
        gr.Markdown("# Sales copilot")
        with gr.Tabs():
            with gr.Tab("Calls"):
                create_calls_tab(demo, service)
            with gr.Tab("Objection playground"):
                create_playground_tab(service)
            with gr.Tab("Train"):
                create_train_tab(demo, service)
            with gr.Tab("Prompt workshop"):
                create_workshop_tab(demo, service)
            with gr.Tab("A/B dashboard"):
                create_dashboard_tab(demo, service)
    return demo


def mount_ui(app: FastAPI, service: CopilotService, path: str = "/ui") -> FastAPI:
    """Mount the UI into ``app`` at ``path`` behind a manager login (SSR and MCP off)."""
    gr.mount_gradio_app(
        app,
        create_ui(service),
        path=path,
        ssr_mode=False,
        mcp_server=False,
        # gradio's own login page; the password is a manager or admin API key.
        auth=manager_login(service),
        auth_message=LOGIN_MESSAGE,
        # Only gr.Error messages (ours, written for people) reach the browser.
        show_error=False,
        footer_links=["api"],
        max_file_size=f"{int(service.settings.serve.max_upload_mb)}mb",
    )
    end_sessions_of_revoked_keys(app, path, service)
    return app
