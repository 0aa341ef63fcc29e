"""Alerts: the live stream (server-sent events), the stored alerts with their chain, rep actions,
and webhook subscriptions.

An ``account_id`` filter must name an account that is stored or was sent as an account
event (404 otherwise, as on the other routes), so a typo never subscribes to silence.
Subscribing the same URL for the same account again answers the existing subscription
(200) instead of a second one that would deliver every alert twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints

from copilot.errors import NotFoundError
from copilot.event_store import ActionInfo, AlertChain, AlertInfo, WebhookTarget
from serve.api.auth import Caller, Manager, check_account, may_see_account
from serve.api.deps import Service
from serve.api.errors import ApiError
from serve.api.routes.events import Pipeline

router = APIRouter(prefix="/v1", tags=["alerts"])

MAX_URL_CHARS = 2048  # the usual practical limit of a URL; longer is a mistake or abuse


def _account_filter(
    pipeline: Pipeline,
    service: Service,
    caller: Caller,
    account_id: Annotated[str | None, Query(description="Only this account's alerts.")] = None,
) -> str | None:
    # A dependency, so that the stream answers 401/403/404 before it starts sending events.
    if account_id is None and not caller.all_teams:
        raise ApiError(
            400,
            "bad_request",
            f"your key is for team '{caller.team}': pass account_id= one of its accounts "
            "to read alerts",
        )
    check_account(caller, service, account_id)
    return pipeline.require_account(account_id)


AccountFilter = Annotated[str | None, Depends(_account_filter)]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["accepted", "edited", "rejected", "done"]
    actor: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Who acted; omitted = the key's name. A rep can only act as themself.",
    )
    note: str | None = Field(None, max_length=4000, description="Why, or what was changed.")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[AnyHttpUrl, UrlConstraints(max_length=MAX_URL_CHARS)] = Field(
        description=f"Receives each alert as a JSON POST (at most {MAX_URL_CHARS} characters)."
    )
    account_id: str | None = Field(None, description="Only this account's alerts; omit for all.")
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=200,
        description="Signs each call: X-Copilot-Signature = sha256=HMAC(secret, timestamp.body).",
    )


class WebhookOut(BaseModel):
    webhook_id: str | None
    url: str
    account_id: str | None
    signed: bool
    created_at: str | None

    @classmethod
    def of(cls, hook: WebhookTarget) -> WebhookOut:
        return cls(
            webhook_id=hook.webhook_id,
            url=hook.url,
            account_id=hook.account_id,
            signed=bool(hook.secret),
            created_at=hook.created_at,
        )


def _visible_chain(alert_id: str, pipeline: Pipeline, service, caller) -> AlertChain:
    """The alert's chain; another team's alert is the same 404 as a missing one, so an
    alert id tells a key limited to a team nothing about other teams' accounts."""
    chain = pipeline.chain(alert_id)
    if not may_see_account(caller, service, chain.alert.account_id):
        raise NotFoundError(
            f"alert '{alert_id}' is not stored; list the alerts with GET /v1/alerts"
        )
    return chain


@router.get("/alerts/stream", response_class=EventSourceResponse)
async def stream_alerts(
    pipeline: Pipeline,
    account_id: AccountFilter,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this alert.")
    ] = None,
) -> AsyncIterable[ServerSentEvent]:
    """New alerts as server-sent events (``event: alert``, ``id`` = alert_id), after a ``ready``.

    A reconnecting client sends ``Last-Event-ID`` and first gets the stored alerts after it.
    ``event: gap`` says alerts were skipped (the reader fell behind), naming them.
    """
    async for item in pipeline.hub.stream(account_id, last_event_id):
        yield item


@router.get("/alerts", response_model=list[AlertInfo])
def list_alerts(
    pipeline: Pipeline,
    account_id: AccountFilter,
    after: Annotated[
        str | None, Query(description="An alert_id: the alerts after it, oldest first.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[AlertInfo]:
    """Recent alerts, newest first."""
    return pipeline.alerts(account_id, after=after, limit=limit)


@router.get("/alerts/{alert_id}", response_model=AlertChain)
def read_alert(alert_id: str, pipeline: Pipeline, service: Service, caller: Caller) -> AlertChain:
    """The alert's chain: event -> signals -> rule -> recommendation -> deliveries -> rep actions."""
    return _visible_chain(alert_id, pipeline, service, caller)


@router.post("/alerts/{alert_id}/actions", status_code=201, response_model=ActionInfo)
def act_on_alert(
    alert_id: str, body: ActionIn, pipeline: Pipeline, service: Service, caller: Caller
) -> ActionInfo:
    """Record what the rep did with the alert."""
    _visible_chain(alert_id, pipeline, service, caller)
    actor = body.actor or caller.name
    if actor != caller.name and not caller.at_least("manager"):
        raise ApiError(
            403,
            "forbidden",
            f"a rep key records its own actions; drop actor or send '{caller.name}'",
        )
    return pipeline.act(alert_id, body.action, actor, body.note)


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookOut,
    responses={
        200: {"description": "This URL already receives these alerts: the subscription."},
        404: {"description": "The account is not known."},
        409: {"description": "This URL already receives these alerts with another secret."},
    },
)
def add_webhook(
    body: WebhookIn, response: Response, pipeline: Pipeline, service: Service, caller: Manager
) -> WebhookOut:
    """Subscribe a URL to the alerts (all, or one account's); the same subscription again
    answers 200 with the existing one. Needs a manager key; a manager limited to a team
    subscribes to one of that team's accounts."""
    if body.account_id is None and not caller.all_teams:
        raise ApiError(
            403,
            "forbidden",
            f"your key is for team '{caller.team}': subscribe to one of its accounts "
            "(account_id), not to every account's alerts",
        )
    check_account(caller, service, body.account_id)
    hook, created = pipeline.subscribe(str(body.url), body.account_id, body.secret)
    if not created:
        response.status_code = 200
    return WebhookOut.of(hook)


@router.get("/webhooks", response_model=list[WebhookOut])
def list_webhooks(pipeline: Pipeline, service: Service, caller: Manager) -> list[WebhookOut]:
    """The configured webhooks (webhook_id null) and the subscriptions your key may see."""
    hooks = pipeline.webhooks()
    if not caller.all_teams:
        hooks = [
            h
            for h in hooks
            if h.account_id is not None and service.accounts.team_of(h.account_id) == caller.team
        ]
    return [WebhookOut.of(h) for h in hooks]


@router.delete("/webhooks/{webhook_id}", status_code=204)
def remove_webhook(webhook_id: str, pipeline: Pipeline, service: Service, caller: Manager) -> None:
    if not caller.all_teams:
        hook = next((h for h in pipeline.webhooks() if h.webhook_id == webhook_id), None)
        check_account(caller, service, hook.account_id if hook else None)
        if hook is not None and hook.account_id is None:
            raise ApiError(403, "forbidden", "this subscription covers every team; ask an admin")
    pipeline.remove_webhook(webhook_id)
