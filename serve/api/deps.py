"""Request dependencies: the one service instance the app was built with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serve.service import CopilotService


def get_service(request: Request) -> CopilotService:
    return request.app.state.service


Service = Annotated[CopilotService, Depends(get_service)]
