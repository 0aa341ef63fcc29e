"""Events: ``POST /v1/events`` stores one and answers 202; ``GET /v1/events/{id}`` shows its chain."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from copilot.errors import InputError, NotFoundError
from copilot.event_store import EventInfo
from copilot.events import EventIn
from serve.api.auth import Caller, Manager, check_account, may_see_account
from serve.api.deps import Service
from serve.api.errors import ApiError
from serve.events import EventPipeline, events_lifespan

# The lifespan starts the pipeline's worker with the server and stops it on shutdown.
router = APIRouter(prefix="/v1/events", tags=["events"], lifespan=events_lifespan)

MAX_EVENT_BYTES = 256 * 1024


def get_pipeline(request: Request) -> EventPipeline:
    pipeline = getattr(request.app.state, "events", None)
    if pipeline is None:
        raise ApiError(
            503,
            "unavailable",
            "events are not enabled on this server (no event pipeline is attached); "
            "start it with `copilot serve`",
        )
    return pipeline


Pipeline = Annotated[EventPipeline, Depends(get_pipeline)]

_EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EventIn.model_json_schema()}},
    }
}


@router.post(
    "",
    status_code=202,
    response_model=EventInfo,
    openapi_extra=_EVENT_BODY,
    responses={
        200: {"description": "The key was seen before with this body: the first result."},
        400: {"description": "The event is malformed; the message names the field."},
        404: {"description": "The account is not known."},
        409: {"description": "The key was used before for another body."},
    },
)
async def post_event(
    request: Request, response: Response, pipeline: Pipeline, service: Service, caller: Manager
) -> EventInfo:
    """Store one event and answer at once; the alerts it leads to follow on /v1/alerts/stream.

    Events come from integrations (CRM, ERP, tender feeds), so they need a manager or
    admin key; a manager limited to a team may post only for that team's accounts."""
    raw = await request.body()
    if len(raw) > MAX_EVENT_BYTES:
        raise ApiError(
            413,
            "too_large",
            f"the event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES} (send one fact per event)",
        )
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"the body is not JSON ({exc}); send the event as a JSON object") from exc
    if not caller.all_teams:
        account_id = body.get("account_id") if isinstance(body, dict) else None
        # An event without an account (a policy, a price list) touches every team's accounts.
        if not isinstance(account_id, str):
            raise ApiError(
                403,
                "forbidden",
                "an event without an account_id concerns every team; send it with an "
                "admin key or a manager key without a team",
            )
        await run_in_threadpool(check_account, caller, service, account_id)
    info = await run_in_threadpool(pipeline.submit, body)
    if info.duplicate:
        response.status_code = 200
    return info


@router.get("/{event_id}", response_model=EventInfo)
def read_event(event_id: str, pipeline: Pipeline, service: Service, caller: Caller) -> EventInfo:
    """The event, its status, and the signals, recommendations and alerts it led to."""
    info = pipeline.event(event_id)
    if not may_see_account(caller, service, info.account_id):
        # The same 404 as for a missing event: an id tells another team nothing.
        raise NotFoundError(
            f"event '{event_id}' is not stored; use the event_id that POST /v1/events returned"
        )
    return info
