"""Alerts: the live stream (server-sent events), the stored alerts with their chain, rep actions,
and webhook subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from copilot.event_store import ActionInfo, AlertChain, AlertInfo, WebhookTarget
from serve.api.routes.events import Pipeline

router = APIRouter(prefix="/v1", tags=["alerts"])


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["accepted", "edited", "rejected", "done"]
    actor: str = Field(min_length=1, max_length=200, description="Who acted (the rep's id).")
    note: str | None = Field(None, max_length=4000, description="Why, or what was changed.")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="Receives each alert as a JSON POST.")
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


@router.get("/alerts/stream", response_class=EventSourceResponse)
async def stream_alerts(
    pipeline: Pipeline,
    account_id: Annotated[str | None, Query(description="Only this account's alerts.")] = None,
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
    account_id: str | None = None,
    after: Annotated[
        str | None, Query(description="An alert_id: the alerts after it, oldest first.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[AlertInfo]:
    """Recent alerts, newest first."""
    return pipeline.alerts(account_id, after=after, limit=limit)


@router.get("/alerts/{alert_id}", response_model=AlertChain)
def read_alert(alert_id: str, pipeline: Pipeline) -> AlertChain:
    """The alert's chain: event -> signals -> rule -> recommendation -> deliveries -> rep actions."""
    return pipeline.chain(alert_id)


@router.post("/alerts/{alert_id}/actions", status_code=201, response_model=ActionInfo)
def act_on_alert(alert_id: str, body: ActionIn, pipeline: Pipeline) -> ActionInfo:
    """Record what the rep did with the alert."""
    return pipeline.act(alert_id, body.action, body.actor, body.note)


@router.post("/webhooks", status_code=201, response_model=WebhookOut)
def add_webhook(body: WebhookIn, pipeline: Pipeline) -> WebhookOut:
    """Subscribe a URL to the alerts (all, or one account's)."""
    return WebhookOut.of(pipeline.add_webhook(str(body.url), body.account_id, body.secret))


@router.get("/webhooks", response_model=list[WebhookOut])
def list_webhooks(pipeline: Pipeline) -> list[WebhookOut]:
    """The configured webhooks (webhook_id null) and the subscriptions."""
    return [WebhookOut.of(h) for h in pipeline.webhooks()]


@router.delete("/webhooks/{webhook_id}", status_code=204)
def remove_webhook(webhook_id: str, pipeline: Pipeline) -> None:
    pipeline.remove_webhook(webhook_id)
