"""The decision log: every suggestion shown to a rep, what the rep did with it, and how
the deal ended.

Three tables in the copilot's SQLite file: ``suggestions`` (what was proposed, to
whom, by which model and prompt, citing which calls; with ``experiment_id`` and
``variant`` it is an *exposure* of that experiment), ``suggestion_feedback`` (the
rep's accepted / edited / rejected, with the text sent or the reason) and
``deal_results`` (won or lost, per account).

Public API (the chat, objection, recommendation and quote routes record; the
dashboard and ``GET /v1/decisions`` read)::

    log = DecisionLog(settings.db_path)
    sid = log.record_suggestion("objection", rep_id="rep-7", team="Central",
                                account_id="Acme", model="dpo-v2", input_text="太贵了",
                                proposed="...", citations=["call-12"],
                                experiment_id=exp.id, variant="dpo-v2")
    log.get(sid)                                   # the Suggestion (rep_id for access checks)
    log.record_feedback(sid, "edited", by_rep="rep-7", text="what the rep sent")
    log.record_deal_result("Acme", "won", deal_id="D-881")
    log.query(teams=["Central"], action="none", limit=50)   # -> list[Decision]

Feedback: a second answer to the same suggestion replaces the first (a rep who
accepted and then edited before sending did edit), and every answer is kept:
``feedback_history(sid)`` lists them in order, and the log reads the latest.

Deal results: a result belongs to the suggestions on its account made at or
before its time ``at`` and after the account's previous result, so each
suggestion is attributed to the next outcome of its account and to no other.
Recording the same ``deal_id`` again replaces that result.

Times are stored as UTC ISO 8601 text with microseconds, so they sort as text.
"""

from __future__ import annotations

import bisect
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from copilot.context import as_utc, plausible_time
from copilot.errors import InputError, NotFoundError
from copilot.sqlite import open_engine

logger = logging.getLogger(__name__)

Kind = Literal["chat", "objection", "recommendation", "quote"]
Action = Literal["accepted", "edited", "rejected"]
DealResult = Literal["won", "lost"]
KINDS: tuple[str, ...] = get_args(Kind)
ACTIONS: tuple[str, ...] = get_args(Action)
RESULTS: tuple[str, ...] = get_args(DealResult)
NO_ACTION = "none"  # the query filter for suggestions without feedback yet
CONVERTED: frozenset[str] = frozenset({"accepted", "edited"})
# A clock between systems may run a little ahead; a result further ahead is a typo.
FUTURE_TOLERANCE = timedelta(hours=1)


class _Base(DeclarativeBase):
    pass


class SuggestionRow(_Base):
    __tablename__ = "suggestions"

    suggestion_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    rep_id: Mapped[str] = mapped_column(String(200), index=True)
    team: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    account_id: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    input_text: Mapped[str] = mapped_column(Text)
    proposed: Mapped[str] = mapped_column(Text)
    citations: Mapped[list] = mapped_column(JSON)
    experiment_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    variant: Mapped[str | None] = mapped_column(String(100), nullable=True)
    prompt_version: Mapped[str | None] = mapped_column(String(200), nullable=True)


class FeedbackRow(_Base):
    __tablename__ = "suggestion_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suggestion_id: Mapped[str] = mapped_column(ForeignKey("suggestions.suggestion_id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    by_rep: Mapped[str] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[str] = mapped_column(String(40))


class DealResultRow(_Base):
    __tablename__ = "deal_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(200), index=True)
    result: Mapped[str] = mapped_column(String(8))
    deal_id: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    at: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[str] = mapped_column(String(40))


@dataclass(frozen=True)
class Suggestion:
    suggestion_id: str
    created_at: str
    kind: str
    rep_id: str
    team: str | None
    account_id: str | None
    model: str
    input_text: str
    proposed: str
    citations: list[str]
    experiment_id: str | None
    variant: str | None
    prompt_version: str | None


@dataclass(frozen=True)
class Feedback:
    suggestion_id: str
    action: str
    by_rep: str
    text: str | None
    reason: str | None
    at: str


@dataclass(frozen=True)
class DealOutcome:
    result_id: int
    account_id: str
    result: str
    deal_id: str | None
    at: str
    recorded_at: str
    attributed: int  # suggestions this result is the outcome of


@dataclass(frozen=True)
class Decision:
    """One row of the log: a suggestion with the rep's latest answer and the deal's result."""

    suggestion_id: str
    time: str
    kind: str
    rep_id: str
    team: str | None
    account_id: str | None
    model: str
    experiment_id: str | None
    variant: str | None
    prompt_version: str | None
    input_text: str
    proposed: str
    citations: list[str]
    action: str | None  # accepted | edited | rejected, None = no feedback yet
    edited_text: str | None
    reason: str | None
    feedback_time: str | None
    deal_result: str | None  # won | lost, None = no result after this suggestion yet
    deal_id: str | None
    deal_time: str | None
    deal_result_id: int | None

    @property
    def converted(self) -> bool:
        return self.action in CONVERTED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DECISION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Decision))


def stamp(value: datetime | str | None = None) -> str:
    """``value`` (default now) as sortable UTC text."""
    moment = datetime.now(UTC) if value is None else as_utc(value)
    if not isinstance(moment, datetime):
        raise InputError(f"time {value!r} is not a date-time; use ISO 8601, e.g. 2025-03-01T09:00Z")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plausible(value: datetime | str | None, what: str) -> datetime | str | None:
    """``value`` unchanged; InputError when its year is one no sales record has (the
    bound the context events keep to, copilot/context.py)."""
    moment = as_utc(value)
    if isinstance(moment, datetime):
        try:
            plausible_time(moment)
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
    return value


def _required(value: Any, what: str, example: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InputError(f"{what} is empty; {example}")
    return text


def _optional(value: str | None) -> str | None:
    text = (value or "").strip()
    return text or None


def _one_of(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise InputError(f"{what} '{value}' is unknown; use one of {', '.join(allowed)}")
    return value


class DecisionLog:
    """The suggestions, their feedback and the deal results, in one SQLite file."""

    def __init__(self, db_path: Path | str):
        self.engine = open_engine(db_path)
        _Base.metadata.create_all(self.engine)

    # --- writing -------------------------------------------------------------------------

    def record_suggestion(
        self,
        kind: str,
        rep_id: str,
        team: str | None,
        account_id: str | None,
        model: str,
        input_text: str,
        proposed: str,
        citations: Sequence[str] = (),
        experiment_id: str | None = None,
        variant: str | None = None,
        prompt_version: str | None = None,
        *,
        at: datetime | str | None = None,
    ) -> str:
        """Log a suggestion shown to ``rep_id``; returns its id (the rep's feedback names it).

        With ``experiment_id`` and ``variant`` (the variant ``ExperimentStore.assign`` gave
        the rep) it counts as an exposure of that experiment."""
        _one_of(kind, KINDS, "kind")
        rep_id = _required(rep_id, "rep_id", "pass the rep's id (the API key's name)")
        model = _required(model, "model", "pass the adapter or model name that answered")
        proposed = _required(proposed, "proposed", "log only suggestions that were shown")
        if not isinstance(input_text, str):
            raise InputError("input_text must be text (empty for a suggestion with no input)")
        if isinstance(citations, str) or not all(isinstance(c, str) for c in citations):
            raise InputError("citations must be a list of call ids, e.g. ['call-12']")
        experiment_id, variant = _optional(experiment_id), _optional(variant)
        if (experiment_id is None) != (variant is None):
            raise InputError(
                "an exposure needs both experiment_id and variant (the variant assigned to the "
                "rep); pass both, or neither for a suggestion outside an experiment"
            )

        suggestion_id = uuid.uuid4().hex
        row = SuggestionRow(
            suggestion_id=suggestion_id,
            created_at=stamp(at),
            kind=kind,
            rep_id=rep_id,
            team=_optional(team),
            account_id=_optional(account_id),
            model=model,
            input_text=input_text,
            proposed=proposed,
            citations=list(citations),
            experiment_id=experiment_id,
            variant=variant,
            prompt_version=_optional(prompt_version),
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)
        return suggestion_id

    def record_feedback(
        self,
        suggestion_id: str,
        action: str,
        by_rep: str,
        text: str | None = None,
        reason: str | None = None,
        *,
        at: datetime | str | None = None,
    ) -> Feedback:
        """The rep's answer to a suggestion; a later answer replaces this one (both are kept).

        ``edited`` needs ``text`` (what the rep sent instead), ``rejected`` a ``reason``.
        Who may answer is the caller's check: ``get(suggestion_id).rep_id``."""
        _one_of(action, ACTIONS, "action")
        by_rep = _required(by_rep, "by_rep", "pass the id of the rep who answered")
        text, reason = _optional(text), _optional(reason)
        if action == "edited" and text is None:
            raise InputError("an 'edited' answer needs 'text': the reply the rep actually sent")
        if action == "rejected" and reason is None:
            raise InputError(
                "a 'rejected' answer needs 'reason': why the suggestion was not used, "
                "e.g. 'quoted the wrong price' or '语气太生硬'"
            )
        if action != "edited" and text is not None:
            raise InputError(
                f"'text' is the edited reply and goes with action 'edited', not '{action}'; "
                "drop it or send action 'edited'"
            )
        self.get(suggestion_id)

        row = FeedbackRow(
            suggestion_id=suggestion_id,
            action=action,
            by_rep=by_rep,
            text=text,
            reason=reason,
            at=stamp(at),
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)
            feedback = _feedback(row)
        return feedback

    def record_deal_result(
        self,
        account_id: str,
        result: str,
        deal_id: str | None = None,
        at: datetime | str | None = None,
    ) -> DealOutcome:
        """Won or lost on ``account_id`` at ``at`` (default now); the same ``deal_id``
        again replaces its result."""
        account_id = _required(account_id, "account_id", "name the account the deal was on")
        _one_of(result, RESULTS, "result")
        deal_id = _optional(deal_id)
        when = stamp(_plausible(at, "at"))
        if when > stamp(datetime.now(UTC) + FUTURE_TOLERANCE):
            raise InputError(f"at {when} is in the future; report a deal result when it happened")

        with Session(self.engine) as session, session.begin():
            row = None
            if deal_id is not None:
                row = session.scalars(
                    select(DealResultRow).where(DealResultRow.deal_id == deal_id)
                ).one_or_none()
            if row is not None and row.account_id != account_id:
                raise InputError(
                    f"deal '{deal_id}' was reported on account '{row.account_id}', not "
                    f"'{account_id}'; check the deal id"
                )
            if row is None:
                row = DealResultRow(account_id=account_id, deal_id=deal_id)
                session.add(row)
            elif (row.result, row.at) != (result, when):
                logger.warning(
                    "deal %s on %s: result %s at %s replaced by %s at %s",
                    deal_id,
                    account_id,
                    row.result,
                    row.at,
                    result,
                    when,
                )
            row.result, row.at, row.recorded_at = result, when, stamp()
            session.flush()
            result_id = row.id

        attributed = self._attributed_count(account_id, result_id)
        with Session(self.engine) as session:
            row = session.get(DealResultRow, result_id)
            return DealOutcome(
                result_id=row.id,
                account_id=row.account_id,
                result=row.result,
                deal_id=row.deal_id,
                at=row.at,
                recorded_at=row.recorded_at,
                attributed=attributed,
            )

    # --- reading -------------------------------------------------------------------------

    def get(self, suggestion_id: str) -> Suggestion:
        with Session(self.engine) as session:
            row = session.get(SuggestionRow, suggestion_id)
            if row is None:
                raise NotFoundError(
                    f"no suggestion '{suggestion_id}'; use the suggestion_id returned with "
                    "the suggestion"
                )
            return _suggestion(row)

    def feedback_history(self, suggestion_id: str) -> list[Feedback]:
        """Every answer to the suggestion, oldest first (the last one counts)."""
        self.get(suggestion_id)
        with Session(self.engine) as session:
            rows = session.scalars(
                select(FeedbackRow)
                .where(FeedbackRow.suggestion_id == suggestion_id)
                .order_by(FeedbackRow.id)
            ).all()
            return [_feedback(r) for r in rows]

    def query(
        self,
        rep: str | None = None,
        teams: Collection[str] | None = None,
        account: str | None = None,
        experiment: str | None = None,
        variant: str | None = None,
        kind: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[Decision]:
        """Rows of the log, newest first. ``teams=None`` is every team; ``action="none"``
        finds suggestions without feedback; ``since`` is inclusive, ``until`` exclusive;
        ``limit=None`` returns every row."""
        if kind is not None:
            _one_of(kind, KINDS, "kind")
        if action is not None:
            _one_of(action, (*ACTIONS, NO_ACTION), "action")
        if (limit is not None and limit < 0) or offset < 0:
            raise InputError("limit and offset must be 0 or more")

        # The latest answer per suggestion, found through the suggestion_id index for each
        # row: a GROUP BY subquery instead is re-run per row by SQLite (seconds at 10k rows).
        latest_id = (
            select(func.max(FeedbackRow.id))
            .where(FeedbackRow.suggestion_id == SuggestionRow.suggestion_id)
            .correlate(SuggestionRow)
            .scalar_subquery()
        )
        stmt = select(
            SuggestionRow,
            FeedbackRow.id.label("feedback_id"),
            FeedbackRow.action,
            FeedbackRow.text,
            FeedbackRow.reason,
            FeedbackRow.at,
        ).outerjoin(
            FeedbackRow,
            (FeedbackRow.suggestion_id == SuggestionRow.suggestion_id)
            & (FeedbackRow.id == latest_id),
        )
        conditions = [
            (rep, SuggestionRow.rep_id == rep),
            (account, SuggestionRow.account_id == account),
            (experiment, SuggestionRow.experiment_id == experiment),
            (variant, SuggestionRow.variant == variant),
            (kind, SuggestionRow.kind == kind),
            (since, SuggestionRow.created_at >= stamp(since) if since is not None else None),
            (until, SuggestionRow.created_at < stamp(until) if until is not None else None),
        ]
        for value, condition in conditions:
            if value is not None:
                stmt = stmt.where(condition)
        if teams is not None:
            stmt = stmt.where(SuggestionRow.team.in_(list(teams)))
        if action == NO_ACTION:
            stmt = stmt.where(FeedbackRow.id.is_(None))
        elif action is not None:
            stmt = stmt.where(FeedbackRow.action == action)
        stmt = stmt.order_by(SuggestionRow.created_at.desc(), SuggestionRow.suggestion_id)
        if offset:
            stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)

        with Session(self.engine) as session:
            rows = session.execute(stmt).all()
            results = self._results_by_account(
                session, {r[0].account_id for r in rows if r[0].account_id}
            )
            return [_decision(row, results) for row in rows]

    # --- attribution ---------------------------------------------------------------------

    @staticmethod
    def _results_by_account(session: Session, accounts: set[str]) -> dict[str, list[DealResultRow]]:
        by_account: dict[str, list[DealResultRow]] = {a: [] for a in accounts}
        if not accounts:
            return by_account
        rows = session.scalars(
            select(DealResultRow)
            .where(DealResultRow.account_id.in_(accounts))
            .order_by(DealResultRow.at, DealResultRow.id)
        ).all()
        for r in rows:
            by_account[r.account_id].append(r)
        return by_account

    def _attributed_count(self, account_id: str, result_id: int) -> int:
        with Session(self.engine) as session:
            results = self._results_by_account(session, {account_id})[account_id]
            index = next(i for i, r in enumerate(results) if r.id == result_id)
            after = results[index - 1].at if index > 0 else ""
            until = results[index].at
            return session.scalar(
                select(func.count())
                .select_from(SuggestionRow)
                .where(
                    SuggestionRow.account_id == account_id,
                    SuggestionRow.created_at > after,
                    SuggestionRow.created_at <= until,
                )
            )


def _suggestion(row: SuggestionRow) -> Suggestion:
    return Suggestion(
        suggestion_id=row.suggestion_id,
        created_at=row.created_at,
        kind=row.kind,
        rep_id=row.rep_id,
        team=row.team,
        account_id=row.account_id,
        model=row.model,
        input_text=row.input_text,
        proposed=row.proposed,
        citations=list(row.citations or []),
        experiment_id=row.experiment_id,
        variant=row.variant,
        prompt_version=row.prompt_version,
    )


def _feedback(row: FeedbackRow) -> Feedback:
    return Feedback(row.suggestion_id, row.action, row.by_rep, row.text, row.reason, row.at)


def _next_result(results: list[DealResultRow], created_at: str) -> DealResultRow | None:
    """The account's first result at or after the suggestion (``results`` sorted by time)."""
    index = bisect.bisect_left(results, created_at, key=lambda r: r.at)
    return results[index] if index < len(results) else None


def _decision(row: Any, results: dict[str, list[DealResultRow]]) -> Decision:
    s: SuggestionRow = row[0]
    m = row._mapping
    deal = _next_result(results.get(s.account_id, []), s.created_at) if s.account_id else None
    return Decision(
        suggestion_id=s.suggestion_id,
        time=s.created_at,
        kind=s.kind,
        rep_id=s.rep_id,
        team=s.team,
        account_id=s.account_id,
        model=s.model,
        experiment_id=s.experiment_id,
        variant=s.variant,
        prompt_version=s.prompt_version,
        input_text=s.input_text,
        proposed=s.proposed,
        citations=list(s.citations or []),
        action=m["action"],
        edited_text=m["text"],
        reason=m["reason"],
        feedback_time=m["at"],
        deal_result=deal.result if deal else None,
        deal_id=deal.deal_id if deal else None,
        deal_time=deal.at if deal else None,
        deal_result_id=deal.id if deal else None,
    )
