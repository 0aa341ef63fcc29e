"""The event log and everything each event led to, in the one SQLite file (SQLAlchemy).

Tables: ``events`` (one per idempotency key, with its body hash, status and the
upsert report), then the chain that follows an event: ``event_signals`` (the
account's signals after it), ``event_recommendations`` (what the rules said, and
whether it was alerted), ``alerts``, ``alert_deliveries`` (one per channel and
target: the attempts and the last error), ``alert_actions`` (the rep's answer),
and ``webhooks`` (subscriptions made over the API).

An event is stored before it is acknowledged and is processed later, in order of
arrival; a process that stops in between leaves it ``pending`` and the next one
processes it. The outcomes of a batch of events and their alerts are written in
one transaction, so an alert never exists without its recommendation and event.

Durability: WAL with ``synchronous=NORMAL``, as the account store in the same file
uses. An acknowledged event survives the process being killed at any moment; a
power cut or kernel crash can lose the last transactions before the next
checkpoint. ``FULL`` would close that gap at ~3 ms of fsync per commit on the
2-core machine's disk, and since SQLite has one writer at a time it caps intake
below 200 events/s; a group commit of the intake (one fsync per batch of POSTs)
would give FULL's guarantee at that rate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from copilot.errors import NotFoundError, StateError
from copilot.events import EventIn

EventStatus = Literal["pending", "applied", "unchanged", "stale", "failed"]
DeliveryStatus = Literal["pending", "delivered", "failed", "dropped"]
Channel = Literal["sse", "webhook"]
RepAction = Literal["accepted", "edited", "rejected", "done"]


class KeyConflictError(StateError):
    """An idempotency key was sent again with a different body (HTTP 409)."""

    code = "idempotency_conflict"


class _Base(DeclarativeBase):
    pass


class EventRow(_Base):
    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(200), index=True)
    time: Mapped[str] = mapped_column(String(40))
    body: Mapped[dict] = mapped_column(JSON)
    received_at: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True)
    applied: Mapped[dict] = mapped_column(JSON, default=dict)  # upsert counts by record kind
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class SignalSnapshotRow(_Base):
    __tablename__ = "event_signals"

    event_seq: Mapped[int] = mapped_column(ForeignKey("events.seq"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(200))
    signals: Mapped[list] = mapped_column(JSON)
    computed_at: Mapped[str] = mapped_column(String(40))


class RecommendationRow(_Base):
    __tablename__ = "event_recommendations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_seq: Mapped[int] = mapped_column(ForeignKey("events.seq"), index=True)
    recommendation_id: Mapped[str] = mapped_column(String(200), index=True)
    rule_id: Mapped[str] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict] = mapped_column(JSON)
    # The alert it raised, or the earlier one (within the cooldown) that made a new one needless.
    alert_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)


class AlertRow(_Base):
    __tablename__ = "alerts"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(32), unique=True)
    recommendation_id: Mapped[str] = mapped_column(String(200), index=True)
    account_id: Mapped[str] = mapped_column(String(200), index=True)
    event_seq: Mapped[int] = mapped_column(ForeignKey("events.seq"), index=True)
    recommendation: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[str] = mapped_column(String(40), index=True)


class DeliveryRow(_Base):
    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.alert_id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(Text)  # the webhook URL, or the stream subscriber
    webhook_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    delivered_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ActionRow(_Base):
    __tablename__ = "alert_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.alert_id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    time: Mapped[str] = mapped_column(String(40))


class WebhookRow(_Base):
    __tablename__ = "webhooks"

    webhook_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))


_events = EventRow.__table__
_snapshots = SignalSnapshotRow.__table__
_recommendations = RecommendationRow.__table__
_alerts = AlertRow.__table__
_deliveries = DeliveryRow.__table__


_IDS_PER_QUERY = 500  # under the bound-parameter limit of old SQLite builds (999)


def _new_alert(
    outcome: Outcome, rec: Mapping[str, Any], alert_id: str, seq: int, stamp: str
) -> AlertInfo:
    return AlertInfo(
        alert_id=alert_id,
        account_id=outcome.pending.event.account_id,
        recommendation_id=str(rec["recommendation_id"]),
        rule_id=str(rec.get("rule_id", "")),
        priority=str(rec.get("priority", "")),
        event_id=outcome.pending.event_id,
        idempotency_key=outcome.pending.event.idempotency_key,
        created_at=stamp,
        recommendation=dict(rec),
        seq=seq,
    )


def _stream_delivery(
    alert_id: str, channel: Channel, target: str, status: DeliveryStatus, stamp: str
) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "channel": channel,
        "target": target,
        "status": status,
        "attempts": 1,
        "created_at": stamp,
        "delivered_at": stamp if status == "delivered" else None,
    }


# --- what the store hands out -----------------------------------------------------


@dataclass(frozen=True)
class DeliveryInfo:
    delivery_id: int
    alert_id: str
    channel: Channel
    target: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    created_at: str
    delivered_at: str | None
    webhook_id: str | None = None


@dataclass(frozen=True)
class ActionInfo:
    alert_id: str
    action: RepAction
    note: str | None
    actor: str
    time: str


@dataclass(frozen=True)
class AlertInfo:
    """An alert as subscribers receive it: the recommendation, and the event that raised it."""

    alert_id: str
    account_id: str
    recommendation_id: str
    rule_id: str
    priority: str
    event_id: str
    idempotency_key: str
    created_at: str
    recommendation: dict[str, Any]
    seq: int  # arrival order; streams resume after it


@dataclass(frozen=True)
class RecommendationInfo:
    recommendation_id: str
    rule_id: str
    priority: str
    alert_id: str | None  # the alert raised now, or the earlier one that covered it
    alerted: bool  # False: an alert for it was sent within the cooldown
    recommendation: dict[str, Any]


@dataclass(frozen=True)
class EventInfo:
    """A stored event, where its processing stands and (once processed) what it led to."""

    event_id: str
    idempotency_key: str
    type: str
    account_id: str
    time: str
    received_at: str
    status: EventStatus
    data: dict[str, Any]
    applied: dict[str, dict[str, int]]
    error: str | None
    processed_at: str | None
    duplicate: bool = False
    signals: list[dict[str, Any]] | None = None  # None: not re-scored (pending, stale, ...)
    recommendations: list[RecommendationInfo] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AlertChain:
    """event -> signals -> rule -> recommendation -> alert -> deliveries -> rep actions."""

    alert: AlertInfo
    event: EventInfo
    signals: list[dict[str, Any]]
    rule: dict[str, Any]
    recommendation: dict[str, Any]
    deliveries: list[DeliveryInfo]
    actions: list[ActionInfo]


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    event_id: str
    event: EventIn


@dataclass(frozen=True)
class Outcome:
    """What processing one event gave, for ``finish_many``."""

    pending: PendingEvent
    status: EventStatus
    applied: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None
    signals: Sequence[dict[str, Any]] | None = None  # None: not re-scored
    recommendations: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    webhook_id: str | None = None  # None: configured in settings.alerts.webhooks
    account_id: str | None = None  # only this account's alerts; None = all
    secret: str | None = field(default=None, repr=False)
    created_at: str | None = None

    def wants(self, account_id: str) -> bool:
        return self.account_id is None or self.account_id == account_id


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _enable_wal(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API threads insert events while the worker writes outcomes (see the
    # module docstring for why NORMAL).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class EventStore:
    """Events, their chain and the webhook subscriptions (SQLite file or any SQLAlchemy URL)."""

    def __init__(self, db_path: Path | str):
        url = db_path if isinstance(db_path, str) and "://" in db_path else None
        if url is None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{db_path}"
        is_sqlite = url.startswith("sqlite")
        self.engine = create_engine(
            url, future=True, connect_args={"timeout": 30} if is_sqlite else {}
        )
        if is_sqlite:
            event.listen(self.engine, "connect", _enable_wal)
        _Base.metadata.create_all(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- events -----------------------------------------------------------------

    def add_event(self, ev: EventIn, body_hash: str) -> tuple[EventInfo, bool]:
        """Store ``ev`` as pending; returns (the event, duplicate).

        A key seen before with the same body hash returns the stored event and
        ``duplicate=True``; with another hash it raises KeyConflictError.
        """
        values = {
            "event_id": _new_id("evt"),
            "idempotency_key": ev.idempotency_key,
            "body_hash": body_hash,
            "type": ev.type,
            "account_id": ev.account_id,
            "time": ev.time.isoformat(),
            "body": ev.model_dump(mode="json"),
            "received_at": now_iso(),
            "status": "pending",
            "applied": {},
        }
        try:
            # Insert first: a new key (the usual case) costs one statement.
            with self.engine.begin() as conn:
                conn.execute(insert(_events).values(values))
        except IntegrityError:
            existing = self._by_key(ev.idempotency_key)
            if existing is None:
                raise
            return self._same_body(existing, body_hash), True
        return _event_info(EventRow(**values)), False

    def _by_key(self, key: str) -> EventRow | None:
        with self.session() as s:
            return s.scalars(select(EventRow).where(EventRow.idempotency_key == key)).first()

    def _same_body(self, row: EventRow, body_hash: str) -> EventInfo:
        if row.body_hash != body_hash:
            raise KeyConflictError(
                f"idempotency_key '{row.idempotency_key}' was already used for another event "
                f"({row.event_id}, received {row.received_at}); resend that event's body "
                "unchanged, or give a new event a new key"
            )
        return self.event(row.event_id, duplicate=True)

    def pending(self, limit: int = 100) -> list[PendingEvent]:
        """Events not processed yet, oldest first."""
        query = (
            select(_events.c.seq, _events.c.event_id, _events.c.body)
            .where(_events.c.status == "pending")
            .order_by(_events.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            PendingEvent(seq, event_id, EventIn.model_validate(body))
            for seq, event_id, body in rows
        ]

    def has_account_event(self, account_id: str) -> bool:
        """Whether an ``account`` event for this id was accepted (it may still be pending)."""
        with self.session() as s:
            found = s.scalar(
                select(EventRow.seq).where(
                    EventRow.type == "account",
                    EventRow.account_id == account_id,
                    EventRow.status != "failed",
                )
            )
        return found is not None

    def has_tender_event(self, account_id: str, tender_id: str) -> bool:
        """Whether a ``tender`` event for this tender and account was accepted (maybe pending)."""
        with self.session() as s:
            found = s.scalar(
                select(EventRow.seq).where(
                    EventRow.type == "tender",
                    EventRow.account_id == account_id,
                    EventRow.body["data"]["tender_id"].as_string() == tender_id,
                    EventRow.status != "failed",
                )
            )
        return found is not None

    def finish(
        self,
        seq: int,
        status: EventStatus,
        applied: dict[str, dict[str, int]] | None = None,
        *,
        error: str | None = None,
        signals: Sequence[dict[str, Any]] | None = None,
        recommendations: Sequence[dict[str, Any]] = (),
        cooldown: Mapping[str, timedelta] | timedelta = timedelta(hours=24),
        webhooks: Sequence[WebhookTarget] = (),
    ) -> list[tuple[AlertInfo, list[DeliveryInfo]]]:
        """``finish_many`` for one event, by its seq."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(_events.c.event_id, _events.c.body).where(_events.c.seq == seq)
            ).first()
        if found is None:
            raise NotFoundError(f"event #{seq} is not stored")
        pending = PendingEvent(seq, found.event_id, EventIn.model_validate(found.body))
        outcome = Outcome(pending, status, applied or {}, error, signals, recommendations)
        return self.finish_many([outcome], cooldown=cooldown, webhooks=webhooks)

    def finish_many(
        self,
        outcomes: Sequence[Outcome],
        *,
        cooldown: Mapping[str, timedelta] | timedelta = timedelta(hours=24),
        webhooks: Sequence[WebhookTarget] = (),
        stream_deliveries: Sequence[tuple[str, Channel, str, DeliveryStatus, str]] = (),
    ) -> list[tuple[AlertInfo, list[DeliveryInfo]]]:
        """Record what each event led to, in one transaction; returns the new alerts, each
        with its pending webhook deliveries.

        A recommendation becomes an alert unless one with the same recommendation_id
        was created within the cooldown of its rule (wall clock; ``cooldown`` maps rule
        ids to it, key "" for the others); either way it is kept with the event, so the
        chain shows why nothing was sent. ``stream_deliveries`` (see add_deliveries) are
        written in the same transaction.

        The cooldown check reads before the transaction: one worker writes the alerts of
        a data dir, so nothing can slip in between, and the write lock is held only for
        the inserts themselves.
        """
        now = datetime.now(UTC)
        stamp = now.isoformat(timespec="milliseconds")
        cooldowns = {"": cooldown} if isinstance(cooldown, timedelta) else dict(cooldown)
        default = cooldowns.get("", timedelta(hours=24))
        rec_ids = {str(r["recommendation_id"]) for o in outcomes for r in o.recommendations}
        latest = self._latest_alerts(rec_ids)  # recommendation_id -> (alert_id, created_at)

        updates, snapshots, recs, alerts, hooks = [], [], [], [], []
        for outcome in outcomes:
            seq, ev = outcome.pending.seq, outcome.pending.event
            updates.append(
                {
                    "b_seq": seq,
                    "status": outcome.status,
                    "applied": outcome.applied,
                    "error": outcome.error,
                    "processed_at": stamp,
                }
            )
            if outcome.signals is not None:
                snapshots.append(
                    {
                        "event_seq": seq,
                        "account_id": ev.account_id,
                        "signals": list(outcome.signals),
                        "computed_at": stamp,
                    }
                )
            for rec in outcome.recommendations:
                rec_id, rule_id = str(rec["recommendation_id"]), str(rec.get("rule_id", ""))
                window = cooldowns.get(rule_id, default)
                earlier = latest.get(rec_id)
                covered = earlier is not None and earlier[1] >= (now - window).isoformat(
                    timespec="milliseconds"
                )
                alert_id = earlier[0] if covered and earlier else _new_id("alr")
                recs.append(
                    {
                        "event_seq": seq,
                        "recommendation_id": rec_id,
                        "rule_id": rule_id,
                        "priority": str(rec.get("priority", "")),
                        "body": dict(rec),
                        "alert_id": alert_id,
                        "alerted": not covered,
                    }
                )
                if covered:
                    continue
                latest[rec_id] = (alert_id, stamp)
                alerts.append((outcome, rec, alert_id))
                hooks += [(alert_id, h) for h in webhooks if h.wants(ev.account_id)]

        created: dict[str, tuple[AlertInfo, list[DeliveryInfo]]] = {}
        with self.engine.begin() as conn:
            conn.execute(
                update(_events)
                .where(_events.c.seq == bindparam("b_seq"))
                .values(
                    status=bindparam("status"),
                    applied=bindparam("applied"),
                    error=bindparam("error"),
                    processed_at=bindparam("processed_at"),
                ),
                updates,
            )
            if snapshots:
                # A re-processed event (after a crash) replaces its earlier snapshot.
                seqs = [row["event_seq"] for row in snapshots]
                conn.execute(delete(_snapshots).where(_snapshots.c.event_seq.in_(seqs)))
                conn.execute(insert(_snapshots), snapshots)
            if recs:
                conn.execute(insert(_recommendations), recs)
            if alerts:
                rows = [
                    {
                        "alert_id": alert_id,
                        "recommendation_id": str(rec["recommendation_id"]),
                        "account_id": outcome.pending.event.account_id,
                        "event_seq": outcome.pending.seq,
                        "recommendation": dict(rec),
                        "created_at": stamp,
                    }
                    for outcome, rec, alert_id in alerts
                ]
                inserted = conn.execute(
                    insert(_alerts).returning(
                        _alerts.c.seq, _alerts.c.alert_id, sort_by_parameter_order=True
                    ),
                    rows,
                ).all()
                for (alert_seq, alert_id), (outcome, rec, _) in zip(inserted, alerts, strict=True):
                    created[alert_id] = (_new_alert(outcome, rec, alert_id, alert_seq, stamp), [])
            if hooks:
                rows = [
                    {
                        "alert_id": alert_id,
                        "channel": "webhook",
                        "target": hook.url,
                        "webhook_id": hook.webhook_id,
                        "status": "pending",
                        "attempts": 0,
                        "created_at": stamp,
                    }
                    for alert_id, hook in hooks
                ]
                ids = conn.execute(
                    insert(_deliveries).returning(_deliveries.c.id, sort_by_parameter_order=True),
                    rows,
                ).scalars()
                for delivery_id, row in zip(ids, rows, strict=True):
                    info = _delivery_info(DeliveryRow(id=delivery_id, **row))
                    created[row["alert_id"]][1].append(info)
            if stream_deliveries:
                conn.execute(insert(_deliveries), [_stream_delivery(*d) for d in stream_deliveries])
        return list(created.values())

    def _latest_alerts(self, rec_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """The newest alert of each recommendation id: (alert_id, created_at)."""
        ids = sorted(rec_ids)
        latest: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                rows = conn.execute(
                    select(_alerts.c.recommendation_id, _alerts.c.alert_id, _alerts.c.created_at)
                    .where(_alerts.c.recommendation_id.in_(ids[start : start + _IDS_PER_QUERY]))
                    .order_by(_alerts.c.seq)
                )
                latest.update({rec_id: (alert_id, at) for rec_id, alert_id, at in rows})
        return latest

    def event(self, event_id: str, duplicate: bool = False) -> EventInfo:
        """The event with its signals, recommendations and alerts (NotFoundError if unknown)."""
        with self.session() as s:
            row = s.scalars(select(EventRow).where(EventRow.event_id == event_id)).first()
            if row is None:
                raise NotFoundError(
                    f"event '{event_id}' is not stored; use the event_id that POST /v1/events "
                    "returned"
                )
            snapshot = s.get(SignalSnapshotRow, row.seq)
            recs = s.scalars(
                select(RecommendationRow)
                .where(RecommendationRow.event_seq == row.seq)
                .order_by(RecommendationRow.id)
            ).all()
        return _event_info(
            row,
            duplicate=duplicate,
            signals=snapshot.signals if snapshot else None,
            recommendations=[_rec_info(r) for r in recs],
        )

    def counts(self) -> dict[str, int]:
        """Events by status, plus ``alerts``."""
        with self.session() as s:
            by_status = dict(
                s.execute(select(EventRow.status, func.count()).group_by(EventRow.status)).all()
            )
            alerts = s.scalar(select(func.count()).select_from(AlertRow)) or 0
        return {**{k: int(v) for k, v in by_status.items()}, "alerts": int(alerts)}

    # --- alerts -----------------------------------------------------------------

    def alert(self, alert_id: str) -> AlertInfo:
        with self.session() as s:
            found = s.execute(
                select(AlertRow, EventRow)
                .join(EventRow, EventRow.seq == AlertRow.event_seq)
                .where(AlertRow.alert_id == alert_id)
            ).first()
        if found is None:
            raise NotFoundError(
                f"alert '{alert_id}' is not stored; list the alerts with GET /v1/alerts"
            )
        return _alert_info(*found)

    def alert_seq(self, alert_id: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(AlertRow.seq).where(AlertRow.alert_id == alert_id))

    def alerts(
        self,
        account_id: str | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> list[AlertInfo]:
        """Newest first; with ``after_seq`` the ones after it, oldest first (to catch up)."""
        query = select(AlertRow, EventRow).join(EventRow, EventRow.seq == AlertRow.event_seq)
        if account_id is not None:
            query = query.where(AlertRow.account_id == account_id)
        if after_seq is None:
            query = query.order_by(AlertRow.seq.desc())
        else:
            query = query.where(AlertRow.seq > after_seq).order_by(AlertRow.seq)
        with self.session() as s:
            rows = s.execute(query.limit(limit)).all()
        return [_alert_info(a, e) for a, e in rows]

    def chain(self, alert_id: str) -> AlertChain:
        alert = self.alert(alert_id)
        ev = self.event(alert.event_id)
        with self.session() as s:
            deliveries = s.scalars(
                select(DeliveryRow).where(DeliveryRow.alert_id == alert_id).order_by(DeliveryRow.id)
            ).all()
            actions = s.scalars(
                select(ActionRow).where(ActionRow.alert_id == alert_id).order_by(ActionRow.id)
            ).all()
        rec = alert.recommendation
        fired_by = [
            {k: sig.get(k) for k in ("type", "value", "unit", "direction", "summary", "product_id")}
            for sig in rec.get("signals", [])
        ]
        rule = {"rule_id": alert.rule_id, "why": rec.get("why"), "signals": fired_by}
        return AlertChain(
            alert=alert,
            event=ev,
            signals=ev.signals or [],
            rule=rule,
            recommendation=rec,
            deliveries=[_delivery_info(d) for d in deliveries],
            actions=[_action_info(a) for a in actions],
        )

    def add_action(
        self, alert_id: str, action: RepAction, actor: str, note: str | None
    ) -> ActionInfo:
        self.alert(alert_id)  # NotFoundError names the alert
        row = ActionRow(alert_id=alert_id, action=action, note=note, actor=actor, time=now_iso())
        with self.session() as s, s.begin():
            s.add(row)
        return _action_info(row)

    # --- deliveries -------------------------------------------------------------

    def add_deliveries(self, rows: Iterable[tuple[str, Channel, str, DeliveryStatus, str]]) -> int:
        """Record finished deliveries: (alert_id, channel, target, status, time) each."""
        items = [_stream_delivery(*row) for row in rows]
        if items:
            with self.engine.begin() as conn:
                conn.execute(insert(_deliveries), items)
        return len(items)

    def update_delivery(
        self,
        delivery_id: int,
        *,
        attempts: int,
        status: DeliveryStatus,
        last_error: str | None = None,
    ) -> None:
        with self.session() as s, s.begin():
            row = s.get(DeliveryRow, delivery_id)
            if row is None:
                raise NotFoundError(f"delivery #{delivery_id} is not stored")
            row.attempts = attempts
            row.status = status
            row.last_error = last_error
            if status == "delivered":
                row.delivered_at = now_iso()

    def pending_deliveries(self) -> list[tuple[AlertInfo, DeliveryInfo]]:
        """Webhook deliveries a stopped process left unfinished, oldest first."""
        with self.session() as s:
            rows = s.execute(
                select(DeliveryRow, AlertRow, EventRow)
                .join(AlertRow, AlertRow.alert_id == DeliveryRow.alert_id)
                .join(EventRow, EventRow.seq == AlertRow.event_seq)
                .where(DeliveryRow.channel == "webhook", DeliveryRow.status == "pending")
                .order_by(DeliveryRow.id)
            ).all()
        return [(_alert_info(a, e), _delivery_info(d)) for d, a, e in rows]

    # --- webhook subscriptions ----------------------------------------------------

    def add_webhook(
        self, url: str, account_id: str | None = None, secret: str | None = None
    ) -> WebhookTarget:
        row = WebhookRow(
            webhook_id=_new_id("whk"),
            url=url,
            account_id=account_id,
            secret=secret,
            created_at=now_iso(),
        )
        with self.session() as s, s.begin():
            s.add(row)
        return _webhook(row)

    def webhooks(self) -> list[WebhookTarget]:
        with self.session() as s:
            rows = s.scalars(select(WebhookRow).order_by(WebhookRow.created_at)).all()
        return [_webhook(r) for r in rows]

    def remove_webhook(self, webhook_id: str) -> None:
        with self.session() as s, s.begin():
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFoundError(
                    f"webhook '{webhook_id}' is not subscribed; list them with GET /v1/webhooks"
                )
            s.delete(row)


# --- row -> info --------------------------------------------------------------------


def _event_info(
    row: EventRow,
    duplicate: bool = False,
    signals: list[dict[str, Any]] | None = None,
    recommendations: list[RecommendationInfo] | None = None,
) -> EventInfo:
    recs = recommendations or []
    return EventInfo(
        event_id=row.event_id,
        idempotency_key=row.idempotency_key,
        type=row.type,
        account_id=row.account_id,
        time=row.time,
        received_at=row.received_at,
        status=row.status,  # type: ignore[arg-type]
        data=dict(row.body.get("data") or {}),
        applied=dict(row.applied or {}),
        error=row.error,
        processed_at=row.processed_at,
        duplicate=duplicate,
        signals=signals,
        recommendations=recs,
        alerts=[r.alert_id for r in recs if r.alerted and r.alert_id],
    )


def _alert_info(alert: AlertRow, ev: EventRow) -> AlertInfo:
    rec = alert.recommendation
    return AlertInfo(
        alert_id=alert.alert_id,
        account_id=alert.account_id,
        recommendation_id=alert.recommendation_id,
        rule_id=str(rec.get("rule_id", "")),
        priority=str(rec.get("priority", "")),
        event_id=ev.event_id,
        idempotency_key=ev.idempotency_key,
        created_at=alert.created_at,
        recommendation=rec,
        seq=alert.seq,
    )


def _rec_info(row: RecommendationRow) -> RecommendationInfo:
    return RecommendationInfo(
        recommendation_id=row.recommendation_id,
        rule_id=row.rule_id,
        priority=row.priority,
        alert_id=row.alert_id,
        alerted=row.alerted,
        recommendation=row.body,
    )


def _delivery_info(row: DeliveryRow) -> DeliveryInfo:
    return DeliveryInfo(
        delivery_id=row.id,
        alert_id=row.alert_id,
        channel=row.channel,  # type: ignore[arg-type]
        target=row.target,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        webhook_id=row.webhook_id,
    )


def _action_info(row: ActionRow) -> ActionInfo:
    return ActionInfo(
        alert_id=row.alert_id,
        action=row.action,  # type: ignore[arg-type]
        note=row.note,
        actor=row.actor,
        time=row.time,
    )


def _webhook(row: WebhookRow) -> WebhookTarget:
    return WebhookTarget(
        url=row.url,
        webhook_id=row.webhook_id,
        account_id=row.account_id,
        secret=row.secret,
        created_at=row.created_at,
    )
