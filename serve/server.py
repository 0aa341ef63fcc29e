"""Run the API and the UI in one uvicorn process (``copilot serve``)."""

from __future__ import annotations

import logging

import uvicorn

from copilot.settings import Settings
from serve.api.app import create_app
from serve.service import CopilotService

logger = logging.getLogger(__name__)


def run_server(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    service: CopilotService | None = None,
) -> None:
    """Serve until interrupted; ``host``/``port`` default to ``serve.host``/``serve.port``.

    Pass ``service`` to reuse one whose models are already loaded (the demo does).
    """
    host = host or settings.serve.host
    port = port or settings.serve.port
    app = create_app(service or CopilotService(settings))
    logger.info("serving on http://%s:%d (API docs at /docs, UI at /ui)", host, port)
    # A request still generating when the server is asked to stop gets a few seconds, not forever.
    uvicorn.run(
        app, host=host, port=port, log_level="info", reload=False, timeout_graceful_shutdown=5
    )
