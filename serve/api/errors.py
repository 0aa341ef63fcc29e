"""One error shape for the whole API: ``{"error": {"code": "...", "message": "..."}}``.

The project's exceptions map to statuses here and nowhere else. An unexpected
exception becomes a 500 whose body says only where to look; its traceback goes
to the server log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from copilot.errors import (
    ConfigError,
    CopilotError,
    InputError,
    ModelMissingError,
    NotFoundError,
    StateError,
)

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; see the server log"

# Most specific first: the first matching class decides the status.
_COPILOT_STATUS: list[tuple[type[CopilotError], int]] = [
    (InputError, 400),
    (NotFoundError, 404),
    (StateError, 409),
    (ModelMissingError, 503),
    (ConfigError, 503),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error a route raises to answer with a given status, code and message."""

    def __init__(self, status_code: int, code: str, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status_code: int, code: str, message: str, headers: Any = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status_code, headers=headers)


def copilot_status(exc: CopilotError) -> int:
    for cls, status in _COPILOT_STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def describe_validation(exc: RequestValidationError) -> str:
    """``body.text: must not be empty; body.messages: ...`` from pydantic's error list."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ())) or "request"
        message = str(err.get("msg", "invalid value"))
        # A validator's ValueError arrives as "Value error, <our text>"; keep our text.
        message = message.removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems) or "invalid request"


async def _copilot_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CopilotError)
    status = copilot_status(exc)
    if status >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return error_response(status, exc.code, str(exc))


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", describe_validation(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


class InternalErrorMiddleware:
    """Turn any exception that escaped the handlers into a 500 in our shape.

    Starlette's own catch-all re-raises after answering, so the server would log
    the traceback twice; this logs it once, with the request line.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(500, "internal", INTERNAL_MESSAGE)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise into the one JSON shape."""
    app.add_exception_handler(CopilotError, _copilot_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(InternalErrorMiddleware)
