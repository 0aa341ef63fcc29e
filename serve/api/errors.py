"""One error shape for the whole API: ``{"error": {"code": "...", "message": "..."}}``.

The project's exceptions map to statuses here and nowhere else. An unexpected
exception becomes a 500 whose body says only where to look; its traceback goes
to the server log, never to the client.

Messages quote what the client sent (ids, paths), which can be any length, so
``error_body`` shortens every quoted value over ``MAX_VALUE_CHARS`` and caps the
whole message at ``MAX_MESSAGE_CHARS``: a 3,000-character id is named by its start.
"""

from __future__ import annotations

import logging
import re
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
MAX_VALUE_CHARS = 80  # of one quoted value in a message
MAX_MESSAGE_CHARS = 2000
ELLIPSIS = "…"
SEND_JSON = "send a JSON object with the header Content-Type: application/json"

# A long value quoted in a message: '...', "..." or `...` on one line, the quotes not inside
# a word, so the apostrophe of "account's" or "华信医疗's" never opens one.
_LONG = f"{{{MAX_VALUE_CHARS + 1},}}"  # {81,}
_QUOTED = re.compile(
    r"(?<!\w)(?:" + "|".join(f"{q}[^{q}\\n]{_LONG}{q}" for q in "'\"`") + r")(?!\w)"
)

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

    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers  # e.g. Retry-After on a 429


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": shorten_message(message)}}


def shorten_message(message: str) -> str:
    """``message`` with each quoted value over MAX_VALUE_CHARS cut to its start and "…",
    then cut to MAX_MESSAGE_CHARS in all."""
    message = _QUOTED.sub(
        lambda m: m[0][: MAX_VALUE_CHARS + 1] + ELLIPSIS + m[0][-1],
        message,
    )
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - len(ELLIPSIS)] + ELLIPSIS
    return message


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
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            # loc is ("body", position); pydantic's "JSON decode error" names no fix.
            reason = (err.get("ctx") or {}).get("error", "")
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            problems.append(f"body: not valid JSON ({reason}{at}); {SEND_JSON}")
            continue
        if loc == ("body",) and isinstance(err.get("input"), bytes):
            # Sent without a JSON content type, the body arrives as bytes, not as an object.
            problems.append(f"body: not read as JSON; {SEND_JSON}")
            continue
        where = ".".join(str(part) for part in loc) or "request"
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
    return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", describe_validation(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} '{request.url.path}'; see /docs for the API"
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
