"""Request-body limits enforced while the body streams in, before it reaches disk.

Starlette spools a multipart upload to a temporary file before the route runs,
so a size check inside the route alone would let a client fill the disk first.
This middleware counts the bytes as they arrive and stops at the limit.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.api.errors import error_response

# Multipart boundaries, part headers and the small form fields ride on top of
# the file itself; the route enforces the exact limit on the file's own bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class UploadTooLarge(HTTPException):
    """413; an HTTPException because FastAPI's body parsing lets only those through unchanged."""

    def __init__(self, max_bytes: int):
        super().__init__(
            413,
            f"upload exceeds the limit of {max_bytes / 2**20:g} MB (serve.max_upload_mb); "
            "split the recording or raise serve.max_upload_mb in the config",
        )


class UploadLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` on the upload paths, in our error shape."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = ("/v1/calls",)):
        self.app = app
        self.max_bytes = max_bytes
        self.limit = max_bytes + MULTIPART_OVERHEAD_BYTES
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_upload = scope.get("method") == "POST" and scope.get("path") in self.paths
        if scope["type"] != "http" or not is_upload:
            await self.app(scope, receive, send)
            return

        # An honest Content-Length lets us refuse before reading a byte.
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = UploadTooLarge(self.max_bytes)
            response = error_response(413, "too_large", error.detail)
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the form parser; FastAPI lets it through to our handlers.
                    raise UploadTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
