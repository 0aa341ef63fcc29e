"""Route helpers for answers that wait in the generation queue (serve/generation.py).

``submit`` turns a full queue into a 429 with ``Retry-After``; ``wait`` awaits a job
while watching for the client to leave (a job whose client left is dropped before it
starts, or stopped mid-generation); ``error_fields`` gives an error in the API's
shape for an SSE ``error`` event, since a stream that has started cannot change its
status any more; ``check_account`` enforces the caller's team on ``account_id``
(serve/api/auth.py's rule, plus a 404 for an unknown account where that reveals nothing).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.sse import format_sse_event
from starlette.concurrency import run_in_threadpool

from copilot.errors import CopilotError
from copilot.keys import Principal
from serve.answer import Answer, Prepared, account_team, generate_answer, stream_answer
from serve.api import auth
from serve.api.errors import INTERNAL_MESSAGE, ApiError, shorten_message
from serve.generation import Job, QueueFull
from serve.service import CopilotService
from serve.suggestions import log_suggestion
from serve.variants import DEFAULT_MODEL

logger = logging.getLogger(__name__)

T = TypeVar("T")

DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there
CLIENT_GONE = 499  # nginx's status for "client closed the request"; no client reads it


def submit(service: CopilotService, work: Callable[[Job[T]], T], *, stream: bool = False) -> Job[T]:
    """Queue ``work``, or answer 429 with Retry-After when every waiting place is taken."""
    try:
        return service.generation.submit(work, stream=stream)
    except QueueFull as exc:
        logger.info("generation queue full (%d waiting): 429", exc.waiting)
        raise ApiError(
            429,
            "too_many_requests",
            f"the copilot is busy: {exc.waiting} answers are already waiting for the model; "
            f"retry after {exc.retry_after_s} s",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None


async def wait(job: Job[T], request: Request) -> T | None:
    """The job's result; None (and the job dropped or stopped) when the client left first."""
    future = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
        if done:
            return future.result()
        if await request.is_disconnected():
            logger.info("client left while its answer was %s", _phase(job))
            job.cancel()
            return None


def _phase(job: Job[Any]) -> str:
    return "being generated" if job.started.is_set() else "waiting; dropped"


def error_fields(exc: BaseException) -> dict[str, str]:
    """``{"code", "message"}`` for an error raised inside a job, in the API's error shape."""
    if isinstance(exc, CopilotError):
        return {"code": exc.code, "message": shorten_message(str(exc))}
    if isinstance(exc, ApiError):
        return {"code": exc.code, "message": shorten_message(exc.message)}
    logger.error("answer failed", exc_info=exc)
    return {"code": "internal", "message": INTERNAL_MESSAGE}


async def check_account(
    service: CopilotService, principal: Principal, account_id: str | None
) -> None:
    """403 for another team's account (and, for a key limited to a team, for an unknown
    one: it cannot probe which accounts exist); 404 for an unknown account otherwise."""
    if account_id is None:
        return
    await run_in_threadpool(_check_account, service, principal, account_id)


def _check_account(service: CopilotService, principal: Principal, account_id: str) -> None:
    auth.check_account(principal, service, account_id)
    if principal.all_teams:
        account_team(service, account_id)  # NotFoundError -> 404 for a typo


def streamed(
    service: CopilotService, prepare: Callable[[], Prepared], principal: Principal
) -> Callable[[Job], Answer]:
    """Work for a streaming job: emits ``("citations", [Citation])`` once the grounding is
    retrieved, then ``("token", text)`` pieces; returns the final Answer, logged."""

    def work(job: Job) -> Answer:
        prepared = prepare()
        job.emit(("citations", prepared.citations))
        final: Answer | None = None
        for item in stream_answer(service, prepared, stop=job.cancelled):
            if isinstance(item, str):
                job.emit(("token", item))
            else:
                final = item
        assert final is not None  # stream_answer always ends with the Answer
        return _logged(service, principal, prepared, final, job)

    return work


def whole(
    service: CopilotService, prepare: Callable[[], Prepared], principal: Principal
) -> Callable[[Job], Answer]:
    """Work for a job answered in one piece; the answer is logged."""

    def work(job: Job) -> Answer:
        prepared = prepare()
        answer = generate_answer(service, prepared, stop=job.cancelled)
        return _logged(service, principal, prepared, answer, job)

    return work


def _logged(
    service: CopilotService, principal: Principal, prepared: Prepared, answer: Answer, job: Job
) -> Answer:
    """``answer`` with its decision-log id: a suggestion, and with a variant an exposure.

    An answer whose client left before it was complete was never shown, so it is not
    logged: it would count as an exposure that no rep saw."""
    if job.cancelled.is_set():
        return answer
    # Only an assigned variant is an exposure. A client that names EXPERIMENT/VARIANT
    # chose it, and counting that choice would bias the comparison.
    assigned = answer.model == DEFAULT_MODEL
    answer.suggestion_id = log_suggestion(
        service,
        principal,
        prepared.kind,
        account_id=prepared.account_id,
        model=answer.model,
        input_text=prepared.question,
        proposed=answer.reply,
        citations=[c.call_id for c in answer.citations],
        experiment_id=answer.experiment_id if assigned else None,
        variant=answer.variant if assigned else None,
        prompt_version=answer.prompt_version,
    )
    return answer


def sse(event: str, data: Any) -> bytes:
    """One server-sent event with a JSON ``data`` line."""
    return format_sse_event(event=event, data_str=json.dumps(data, ensure_ascii=False))


def sse_data(data: Any) -> bytes:
    """One unnamed server-sent event (OpenAI's stream format) with a JSON ``data`` line."""
    return format_sse_event(data_str=json.dumps(data, ensure_ascii=False))


def wants_stream(flag: bool | None, request: Request) -> bool:
    return bool(flag) or "text/event-stream" in request.headers.get("accept", "")
