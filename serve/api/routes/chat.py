"""Chat about an account, grounded in retrieved call excerpts."""

from __future__ import annotations

from fastapi import APIRouter

from serve.api.deps import Service
from serve.api.schemas import AnswerOut, ChatRequest

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat", response_model=AnswerOut)
def chat(body: ChatRequest, service: Service) -> AnswerOut:
    """The copilot's next message, with the call excerpts it cites."""
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    return AnswerOut.of(service.chat(messages, account_id=body.account_id))
