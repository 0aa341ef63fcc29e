"""The decision log over HTTP: a rep's feedback on a suggestion, deal results, and the log.

- ``POST /v1/feedback``: only the rep the suggestion was shown to may answer it (403 for
  anyone else, managers included: the log records the rep's own decision).
- ``POST /v1/outcomes``: any key that sees the account's team (a rep's own team, a
  manager's team, an admin every team); an unknown account is a 404.
- ``GET /v1/decisions``: rows of the caller's team only (a key without a team, or an
  admin's, sees every team). JSON by default; CSV, with formula cells neutralised
  (copilot/exports.py), when the request's ``Accept`` names ``text/csv``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field, field_validator

from copilot.context import plausible_time
from copilot.decisions import ACTIONS, DECISION_COLUMNS, KINDS, NO_ACTION, DealOutcome, Decision
from copilot.exports import csv_bytes
from serve.api.auth import Caller, check_account, check_team
from serve.api.deps import Service
from serve.api.errors import ApiError
from serve.api.schemas import StrictBody

router = APIRouter(prefix="/v1", tags=["decisions"])

JSON_PAGE = 100  # rows when no limit is given
CSV_PAGE = 10_000  # an export wants everything; a larger log is exported in pages
MAX_PAGE = 10_000
CSV_TYPE = "text/csv"


class FeedbackIn(StrictBody):
    suggestion_id: str = Field(min_length=1, max_length=64)
    action: Literal["accepted", "edited", "rejected"]
    text: str | None = Field(
        None, max_length=8000, description="What the rep sent instead; required for 'edited'."
    )
    reason: str | None = Field(None, max_length=2000, description="Why; required for 'rejected'.")


class FeedbackOut(BaseModel):
    suggestion_id: str
    action: str
    by_rep: str
    text: str | None
    reason: str | None
    at: str
    replaced: str | None = Field(description="The earlier answer this one replaces, if any.")


class OutcomeIn(StrictBody):
    account_id: str = Field(min_length=1, max_length=200)
    result: Literal["won", "lost"]
    deal_id: str | None = Field(
        None, max_length=200, description="Reporting the same deal id again replaces it."
    )
    at: datetime | None = Field(
        None, description="When the deal was decided (years 1900-2200); omitted = now."
    )

    @field_validator("at", mode="before")
    @classmethod
    def _written_date(cls, value: object) -> object:
        # pydantic would read 1800 as Unix seconds (1970-01-01T00:30Z): refuse the guess.
        number = isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()
        if value is not None and (not isinstance(value, str) or number):
            raise ValueError(
                "write the time as an ISO 8601 string, e.g. '2025-03-10T12:00:00Z', not a number"
            )
        return value

    @field_validator("at")
    @classmethod
    def _plausible_at(cls, value: datetime | None) -> datetime | None:
        # The bound context events keep to: a year 1800 is a typo, not a deal.
        return None if value is None else plausible_time(value)


class DecisionsOut(BaseModel):
    decisions: list[Decision]
    count: int
    limit: int
    offset: int


@router.post("/feedback", status_code=201, response_model=FeedbackOut)
def give_feedback(body: FeedbackIn, service: Service, principal: Caller) -> FeedbackOut:
    """The rep's answer to a suggestion they were shown; a second answer replaces the first."""
    log = service.decisions
    suggestion = log.get(body.suggestion_id)
    if suggestion.rep_id != principal.name:
        raise ApiError(
            403,
            "forbidden",
            f"suggestion '{body.suggestion_id}' was shown to another rep; only the rep who "
            "got a suggestion answers it",
        )
    earlier = log.feedback_history(body.suggestion_id)
    feedback = log.record_feedback(
        body.suggestion_id, body.action, principal.name, text=body.text, reason=body.reason
    )
    return FeedbackOut(
        suggestion_id=feedback.suggestion_id,
        action=feedback.action,
        by_rep=feedback.by_rep,
        text=feedback.text,
        reason=feedback.reason,
        at=feedback.at,
        replaced=earlier[-1].action if earlier else None,
    )


@router.post("/outcomes", status_code=201, response_model=DealOutcome)
def report_outcome(body: OutcomeIn, service: Service, principal: Caller) -> DealOutcome:
    """Won or lost on an account of the caller's team; the suggestions made on the account
    since its previous result are attributed to it."""
    # Checked before the lookup: a key kept to a team gets one 403 for an account of
    # another team and for one that does not exist, as on the account routes.
    check_account(principal, service, body.account_id)
    service.accounts.store.context(body.account_id)  # 404 for an unknown account (all teams)
    outcome = service.decisions.record_deal_result(
        body.account_id, body.result, deal_id=body.deal_id, at=body.at
    )
    return outcome


@router.get("/decisions", response_model=DecisionsOut)
def read_decisions(
    service: Service,
    principal: Caller,
    accept: Annotated[str, Header()] = "application/json",
    rep: str | None = None,
    team: Annotated[str | None, Query(description="Only this team (within what you see).")] = None,
    account_id: str | None = None,
    experiment_id: str | None = None,
    variant: str | None = None,
    kind: Annotated[str | None, Query(description=", ".join(KINDS))] = None,
    action: Annotated[
        str | None, Query(description=f"{', '.join(ACTIONS)}, or '{NO_ACTION}' for no answer yet")
    ] = None,
    since: Annotated[datetime | None, Query(description="Suggestions from this time on.")] = None,
    until: Annotated[datetime | None, Query(description="Suggestions before this time.")] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_PAGE, description=f"Default {JSON_PAGE} (JSON), {CSV_PAGE} (CSV)."),
    ] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    """The decision log, newest first: each suggestion with the rep's answer and the deal's
    result. ``Accept: text/csv`` answers a CSV file instead of JSON."""
    as_csv = CSV_TYPE in accept.lower()
    if team is not None:
        check_team(principal, team, f"team '{team}'")
        teams = [team]
    else:
        teams = None if principal.all_teams else [principal.team]
    page = limit or (CSV_PAGE if as_csv else JSON_PAGE)
    rows = service.decisions.query(
        rep=rep,
        teams=teams,
        account=account_id,
        experiment=experiment_id,
        variant=variant,
        kind=kind,
        action=action,
        since=since,
        until=until,
        limit=page,
        offset=offset,
    )
    if as_csv:
        return Response(
            content=csv_bytes([_csv_row(r) for r in rows], DECISION_COLUMNS),
            media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="decisions.csv"'},
        )
    return DecisionsOut(
        decisions=rows,
        count=len(rows),
        limit=page,
        offset=offset,
    )


def _csv_row(row: Decision) -> dict[str, Any]:
    cells = row.to_dict()
    cells["citations"] = " ".join(row.citations)
    return cells
