"""Live objection handling for reps: the same queue, model choice and guard as chat."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from serve.answer import prepare_objection
from serve.api import jobs
from serve.api.auth import Caller
from serve.api.deps import Service
from serve.api.routes.chat import ANSWER_RESPONSES, answer_events
from serve.api.schemas import AnswerOut, ObjectionRequest
from serve.variants import resolve_model

router = APIRouter(prefix="/v1/objections", tags=["objections"])


@router.post("/handle", response_model=AnswerOut, responses=ANSWER_RESPONSES)
async def handle_objection(
    body: ObjectionRequest, request: Request, principal: Caller, service: Service
) -> AnswerOut | Response:
    """A suggested reply to a customer objection, citing the won-call excerpts it drew on.

    With ``Accept: text/event-stream`` it streams like /v1/chat."""
    await jobs.check_account(service, principal, body.account_id)
    choice = await run_in_threadpool(resolve_model, service, body.model_name, principal)

    def prepare():
        return prepare_objection(service, body.text, body.account_id, choice, principal)

    if jobs.wants_stream(False, request):
        job = jobs.submit(service, jobs.streamed(service, prepare, principal), stream=True)
        return EventSourceResponse(answer_events(job))
    answer = await jobs.wait(jobs.submit(service, jobs.whole(service, prepare, principal)), request)
    if answer is None:
        return Response(status_code=jobs.CLIENT_GONE)
    return AnswerOut.of(answer)
