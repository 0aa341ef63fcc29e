"""A real server for the stream and webhook tests: uvicorn on 127.0.0.1 in a thread, an SSE
reader, and a tiny webhook receiver whose answers the test scripts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from copilot.keys import Principal
from serve.api.auth import authenticate
from serve.api.errors import install_error_handlers
from serve.api.routes import alerts, events
from serve.events import EventPipeline


def events_app(pipeline: EventPipeline) -> FastAPI:
    """Only the event and alert routes, the way serve/api/app.py wires them.

    Every request acts as an admin: these tests are about events, and tests/serve/test_auth.py
    checks the keys on the full app. An admin sees every team, so no account is looked up
    and the app needs no service.
    """
    app = FastAPI()
    app.state.events = pipeline
    app.state.service = None
    app.dependency_overrides[authenticate] = lambda: Principal("test", "test-admin", "admin", None)
    app.include_router(events.router)
    app.include_router(alerts.router)
    install_error_handlers(app)
    return app


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass
class SseEvent:
    event: str
    data: Any
    id: str | None = None


def sse_events(response: httpx.Response) -> Iterator[SseEvent]:
    """Parse a text/event-stream response into events (comments, e.g. pings, are skipped)."""
    fields: dict[str, list[str]] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields or "event" in fields:
                data = "\n".join(fields.get("data", []))
                yield SseEvent(
                    event=(fields.get("event") or ["message"])[0],
                    data=json.loads(data) if data else None,
                    id=(fields.get("id") or [None])[0],
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


def next_event(events_iter: Iterator[SseEvent], kind: str = "alert") -> SseEvent:
    """The next event of ``kind``; others before it (ready, gap) are returned only if asked."""
    for item in events_iter:
        if item.event == kind:
            return item
    raise AssertionError(f"the stream ended before an '{kind}' event")


@dataclass
class Receiver:
    """What the webhook receiver got: one (headers, body) per request, and its answers."""

    statuses: list[int]  # answered in turn; the last one repeats
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def wait_for(self, count: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(self.requests)} of {count} requests")
            time.sleep(0.02)


@contextmanager
def webhook_receiver(statuses: list[int]) -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 answering POSTs with ``statuses`` in turn."""
    receiver = Receiver(statuses=list(statuses))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            length = int(self.headers.get("Content-Length", 0))
            receiver.requests.append((dict(self.headers), self.rfile.read(length)))
            index = min(len(receiver.requests), len(receiver.statuses)) - 1
            self.send_response(receiver.statuses[index])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
