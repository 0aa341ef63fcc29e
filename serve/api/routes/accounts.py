"""Accounts: signals, win likelihood, recommendations and quote strategies for reps.

The handlers are plain ``def``s: FastAPI runs them in its threadpool, so the
model scoring and the talking points' generation never block the event loop.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from copilot.context import as_utc
from copilot.schemas import QuoteStrategy, Recommendation, Signal, WinScore
from serve.accounts import MAX_QUOTE_QUANTITY
from serve.api.auth import Caller, check_account
from serve.api.deps import Service
from serve.api.schemas import StrictBody
from serve.suggestions import log_suggestion

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

AsOf = Annotated[
    datetime | None,
    Query(description="Compute at this ISO 8601 time; omitted = the latest stored account fact."),
]


class SignalsOut(BaseModel):
    account_id: str
    as_of: str
    signals: list[Signal]


class ScoreOut(BaseModel):
    account_id: str
    win_likelihood: float = Field(description="Calibrated chance to win, 0-1.")
    score: WinScore
    signals: list[Signal]


class RecommendationsOut(BaseModel):
    account_id: str
    recommendations: list[Recommendation]
    rules_version: str | None = None
    rules_error: str | None = Field(
        None, description="Set when the rule file's latest edit is broken (older rules in force)."
    )
    suggestion_ids: dict[str, str] = Field(
        default_factory=dict,
        description="recommendation_id -> the suggestion_id to name in POST /v1/feedback.",
    )


class QuoteItem(StrictBody):
    product_id: str = Field(min_length=1, max_length=200)
    quantity: int = Field(ge=1, le=MAX_QUOTE_QUANTITY)


class QuoteRequest(StrictBody):
    items: list[QuoteItem] = Field(min_length=1, max_length=20)
    as_of: datetime | None = None
    talking_points: bool = Field(
        True, description="Ask the language model for talking points citing won calls."
    )


class QuoteOut(BaseModel):
    account_id: str
    as_of: str
    base_win_likelihood: float
    strategies: list[QuoteStrategy]
    discount_curve: dict
    suggestion_ids: dict[str, str] = Field(
        default_factory=dict,
        description="strategy name -> the suggestion_id to name in POST /v1/feedback.",
    )


@router.get("/{account_id:path}/signals", response_model=SignalsOut)
def read_signals(
    account_id: str, service: Service, caller: Caller, as_of: AsOf = None
) -> SignalsOut:
    """The account's signals, each with its value, weight, direction and evidence."""
    check_account(caller, service, account_id)
    accounts = service.accounts
    ctx_time = as_utc(as_of) if as_of is not None else accounts.clock()
    return SignalsOut(
        account_id=account_id,
        as_of=ctx_time.isoformat(),
        signals=accounts.signals(account_id, ctx_time),
    )


@router.get("/{account_id:path}/score", response_model=ScoreOut)
def read_score(account_id: str, service: Service, caller: Caller, as_of: AsOf = None) -> ScoreOut:
    """The win likelihood and the inputs that raised or lowered it."""
    check_account(caller, service, account_id)
    scored = service.accounts.score(account_id, as_of)
    return ScoreOut(
        account_id=account_id,
        win_likelihood=scored.win.win_likelihood,
        score=scored.win,
        signals=scored.signals,
    )


@router.get("/{account_id:path}/recommendations", response_model=RecommendationsOut)
def read_recommendations(
    account_id: str, service: Service, caller: Caller, as_of: AsOf = None
) -> RecommendationsOut:
    """What to do next: the rules that fire, with priority, owner, due time and signals."""
    check_account(caller, service, account_id)
    accounts = service.accounts
    recommendations = accounts.recommendations(account_id, as_of)
    book = accounts.rulebook
    error = book.last_error
    logged = {
        r.recommendation_id: log_suggestion(
            service,
            caller,
            "recommendation",
            account_id=account_id,
            model=f"rules {book.version or 'default'}",
            input_text=r.rule_id,
            proposed=r.action,
            citations=_cited_calls(r.signals),
        )
        for r in recommendations
    }
    return RecommendationsOut(
        account_id=account_id,
        recommendations=recommendations,
        rules_version=book.version,
        rules_error=str(error) if error is not None else None,
        suggestion_ids={rid: sid for rid, sid in logged.items() if sid},
    )


@router.post("/{account_id:path}/quote-strategies", response_model=QuoteOut)
def create_quote_strategies(
    account_id: str, body: QuoteRequest, service: Service, caller: Caller
) -> QuoteOut:
    """Three quote strategies that differ in kind, all within the margin floor, the stock
    plus lead time and the known budget (a strategy over budget says so)."""
    check_account(caller, service, account_id)
    result = service.accounts.quote(
        account_id,
        [(i.product_id, i.quantity) for i in body.items],
        body.as_of,
        with_talking_points=body.talking_points,
    )
    request = ", ".join(f"{i.quantity} x {i.product_id}" for i in body.items)
    logged = {
        s.name: log_suggestion(
            service,
            caller,
            "quote",
            account_id=account_id,
            model="quotes",
            input_text=request,
            proposed=f"{s.title}: {s.total:,.2f} {s.currency} ({s.discount:.0%} off). {s.rationale}",
            citations=[c.call_id for p in s.talking_points for c in p.citations],
        )
        for s in result.strategies
    }
    return QuoteOut(
        **result.to_dict(), suggestion_ids={name: sid for name, sid in logged.items() if sid}
    )


def _cited_calls(signals: list[Signal]) -> list[str]:
    """The calls a recommendation's signals cite as evidence."""
    return [e.ref for s in signals for e in s.evidence if e.kind == "call"]
