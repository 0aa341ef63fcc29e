"""OpenAI-compatible endpoints, so existing clients work: ``/v1/chat/completions``, ``/v1/models``.

    client = openai.OpenAI(base_url="http://HOST:8000/v1", api_key=COPILOT_KEY)
    client.chat.completions.create(model="copilot", messages=[...],
                                   extra_body={"account_id": "acct-1"})

The answer is the same as ``POST /v1/chat`` (same queue, model names, grounding and
guard) in OpenAI's shapes: ``chat.completion``, or ``chat.completion.chunk`` events
ending with ``data: [DONE]``. The cited call excerpts ride along as an extra
``citations`` field (on the first chunk when streaming). Fields OpenAI defines
that do not apply here (tools, n, logprobs, ...) are accepted and ignored;
``max_tokens`` can only lower the server's limit and ``temperature`` is accepted
but the server's setting applies (greedy by default, so A/B variants compare
like for like). When the guard replaces a reply that was already streaming, the
last chunk has ``finish_reason: "content_filter"`` and the replacement as ``reply``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from serve.answer import Answer, prepare_chat
from serve.api import jobs
from serve.api.auth import Caller
from serve.api.deps import Service
from serve.api.routes.chat import ANSWER_RESPONSES
from serve.api.schemas import MAX_MESSAGE_CHARS, MAX_MESSAGES, AccountId, CitationOut
from serve.generation import Job
from serve.variants import DEFAULT_MODEL, list_models, resolve_model

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai"])


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...: ignored

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(None, max_length=MAX_MESSAGE_CHARS)

    @field_validator("content")
    @classmethod
    def _not_too_long(cls, content: str | list[TextPart] | None) -> str | list[TextPart] | None:
        if isinstance(content, list):
            length = sum(len(p.text or "") for p in content)
            if length > MAX_MESSAGE_CHARS:
                raise ValueError(
                    f"the text parts hold {length} characters; the limit is "
                    f"{MAX_MESSAGE_CHARS} per message: send a shorter message"
                )
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    """OpenAI's chat completion request; unknown fields are ignored, not refused."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(DEFAULT_MODEL, max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    account_id: AccountId | None = Field(None, description="Extra field: the account to ground in.")

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("must include at least one non-empty message with role 'user'")
        return messages


@router.get("/models")
async def list_model_names(principal: Caller, service: Service) -> dict[str, Any]:
    """The model names /v1/chat, /v1/objections/handle and /v1/chat/completions accept."""
    entries = await run_in_threadpool(list_models, service)
    return {
        "object": "list",
        "data": [
            {"id": e.id, "object": "model", "created": e.created, "owned_by": e.owned_by}
            for e in entries
        ],
    }


@router.post("/chat/completions", responses=ANSWER_RESPONSES)
async def chat_completions(
    body: CompletionRequest, request: Request, principal: Caller, service: Service
) -> Any:
    """An OpenAI ``chat.completion`` (or a stream of ``chat.completion.chunk``)."""
    if body.model_extra:
        logger.debug("chat/completions: ignoring fields %s", sorted(body.model_extra))
    # OpenAI's "developer" role is its system role; both are dropped by prepare_chat.
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body.messages
        if m.role != "tool"
    ]
    await jobs.check_account(service, principal, body.account_id)
    choice = await run_in_threadpool(resolve_model, service, body.model, principal)
    limit = body.max_completion_tokens or body.max_tokens

    def prepare():
        prepared = prepare_chat(service, messages, body.account_id, choice, principal)
        prepared.max_new_tokens = limit
        return prepared

    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        job = jobs.submit(service, jobs.streamed(service, prepare, principal), stream=True)
        return EventSourceResponse(_chunks(job, completion_id, created, body.model))
    answer = await jobs.wait(jobs.submit(service, jobs.whole(service, prepare, principal)), request)
    if answer is None:
        return Response(status_code=jobs.CLIENT_GONE)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.reply},
                "finish_reason": "stop",
            }
        ],
        "usage": None,
        **_extras(answer),
    }


def _extras(answer: Answer) -> dict[str, Any]:
    return {
        "citations": [CitationOut.of(c).model_dump() for c in answer.citations],
        "adapter": answer.adapter,
        "guarded": answer.guarded,
        "suggestion_id": answer.suggestion_id,
    }


async def _chunks(
    job: Job[Answer], completion_id: str, created: int, model: str
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return jobs.sse_data(payload)

    try:
        async for kind, payload in job.items():
            if kind == "citations":
                cited = [CitationOut.of(c).model_dump() for c in payload]
                yield chunk({"role": "assistant", "content": ""}, citations=cited)
            else:
                yield chunk({"content": payload})
        answer = await job.result()
        if answer.guarded:
            yield chunk({}, "content_filter", reply=answer.reply, **_extras(answer))
        else:
            yield chunk({}, "stop", **_extras(answer))
        yield format_sse_event(data_str="[DONE]")
    except Exception as exc:  # the status line is sent: OpenAI clients read an error object
        yield jobs.sse_data({"error": {**jobs.error_fields(exc), "type": "server_error"}})
    finally:
        if not job.future.done():
            job.cancel()
