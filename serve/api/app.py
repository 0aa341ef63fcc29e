"""The FastAPI application: the reps' HTTP API, with the managers' Gradio UI at ``/ui``.

Build it around one service (``create_app(CopilotService(settings))``) and serve it
with ``serve.server.run_server``; the OpenAPI page is at ``/docs``.
"""

from __future__ import annotations

from fastapi import FastAPI

from serve.api.errors import install_error_handlers
from serve.api.limits import UploadLimitMiddleware
from serve.api.routes import (
    accounts,
    adapters,
    alerts,
    calls,
    chat,
    decisions,
    events,
    experiments,
    health,
    objections,
    openai_compat,
)
from serve.service import CopilotService

UI_PATH = "/ui"


def create_app(service: CopilotService, with_ui: bool = True) -> FastAPI:
    """The API over ``service``; ``with_ui=False`` skips the Gradio UI (and its import time)."""
    app = FastAPI(
        title="Sales copilot",
        description="Objection handling and chat grounded in your own sales calls.",
        version="0.1.0",
        docs_url="/docs",
    )
    app.state.service = service
    # The events router's lifespan starts this pipeline's worker with the server.
    app.state.events = service.events

    app.include_router(health.router)
    app.include_router(objections.router)
    app.include_router(chat.router)
    app.include_router(openai_compat.router)
    app.include_router(calls.router)
    app.include_router(accounts.router)
    app.include_router(events.router)
    app.include_router(alerts.router)
    app.include_router(experiments.router)
    app.include_router(decisions.router)
    app.include_router(adapters.router)

    max_bytes = int(service.settings.serve.max_upload_mb * 2**20)
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_bytes)
    # Installed last so its catch-all wraps every other layer.
    install_error_handlers(app)

    if with_ui:
        # Imported here: gradio takes seconds to import, and API-only use needs none of it.
        from serve.ui.app import mount_ui

        mount_ui(app, service, path=UI_PATH)
    return app
