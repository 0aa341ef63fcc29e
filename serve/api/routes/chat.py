"""Chat about an account, grounded in its calls and signals; JSON or server-sent events.

The handler is ``async``: it waits for the generation queue (serve/generation.py),
so the event loop stays free while the model works. As a stream the answer is::

    event: citations   {"citations": [{call_id, start, end, text, outcome, score}, ...]}
    event: token       {"text": "..."}          (repeated as the model writes)
    event: done        the JSON answer (reply, model, adapter, citations, ...)
    event: error       {"code", "message"}      (instead of done, when it failed)

``done.reply`` is the final text: when the output guard replaces a reply part-way,
it differs from the joined tokens and ``done.guarded`` says why.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from serve.answer import Answer, prepare_chat
from serve.api import jobs
from serve.api.auth import Caller
from serve.api.deps import Service
from serve.api.schemas import AnswerOut, ChatRequest, CitationOut
from serve.generation import Job
from serve.variants import resolve_model

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["chat"])

ANSWER_RESPONSES = {
    200: {
        "description": "The answer as JSON, or as server-sent events when streamed.",
        "content": {"text/event-stream": {}},
    },
    403: {"description": "The account belongs to another team."},
    404: {"description": "Unknown account or model."},
    429: {"description": "Too many answers waiting; retry after the Retry-After seconds."},
}


@router.post("/chat", response_model=AnswerOut, responses=ANSWER_RESPONSES)
async def chat(
    body: ChatRequest, request: Request, principal: Caller, service: Service
) -> AnswerOut | Response:
    """The copilot's next message, with the call excerpts it cites."""
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    await jobs.check_account(service, principal, body.account_id)
    choice = await run_in_threadpool(resolve_model, service, body.model, principal)

    def prepare():
        return prepare_chat(service, messages, body.account_id, choice, principal)

    if jobs.wants_stream(body.stream, request):
        job = jobs.submit(service, jobs.streamed(service, prepare, principal), stream=True)
        return EventSourceResponse(answer_events(job))
    answer = await jobs.wait(jobs.submit(service, jobs.whole(service, prepare, principal)), request)
    if answer is None:
        return Response(status_code=jobs.CLIENT_GONE)
    return AnswerOut.of(answer)


async def answer_events(job: Job[Answer]) -> AsyncIterator[bytes]:
    """A streaming job as ``citations``, ``token``... and ``done`` (or ``error``) events."""
    try:
        async for kind, payload in job.items():
            if kind == "citations":
                cited = [CitationOut.of(c).model_dump() for c in payload]
                yield jobs.sse("citations", {"citations": cited})
            else:
                yield jobs.sse("token", {"text": payload})
        answer = await job.result()
        yield jobs.sse("done", AnswerOut.of(answer).model_dump())
    except Exception as exc:  # the status line is sent: the error travels as an event
        yield jobs.sse("error", jobs.error_fields(exc))
    finally:
        if not job.future.done():
            job.cancel()  # the client left: drop the job or stop its generation
