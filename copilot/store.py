"""The SQLite store of calls, turns, ingested inputs, ingest jobs and mined objections (SQLAlchemy).

Writes for one call happen in one transaction, so a failed ingest never leaves a
half-stored call behind and never touches what was stored before.

Ingest keeps a job table: one row per input of a batch, written before the work
starts and marked done in the same transaction that stores the input's calls.
A process killed at any moment therefore leaves each input either fully stored
and done, or not stored and still queued/running, which the next run redoes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from copilot.errors import NotFoundError
from copilot.schemas import CallRecord, Objection, Turn

logger = logging.getLogger(__name__)


class _Base(DeclarativeBase):
    pass


class CallRow(_Base):
    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    source_kind: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str | None] = mapped_column(String, nullable=True)
    account_id: Mapped[str | None] = mapped_column(String, nullable=True, index=True)
    rep_id: Mapped[str | None] = mapped_column(String, nullable=True)
    deal_id: Mapped[str | None] = mapped_column(String, nullable=True)
    date: Mapped[str | None] = mapped_column(String, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    ingested_at: Mapped[str] = mapped_column(String(32))

    turns: Mapped[list[TurnRow]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="TurnRow.idx"
    )


class TurnRow(_Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(16))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)

    call: Mapped[CallRow] = relationship(back_populates="turns")


class InputRow(_Base):
    """An input file already ingested, by content hash: re-ingesting it is a no-op."""

    __tablename__ = "inputs"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    call_ids: Mapped[list] = mapped_column(JSON)
    ingested_at: Mapped[str] = mapped_column(String(32))


class IngestBatchRow(_Base):
    """One run of ``copilot ingest``; ``key`` names its inputs, so re-running it resumes it."""

    __tablename__ = "ingest_batches"

    batch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # running | finished
    host: Mapped[str] = mapped_column(String)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[str] = mapped_column(String(32))
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class IngestJobRow(_Base):
    """One input of a batch and where its ingest stands."""

    __tablename__ = "ingest_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("ingest_batches.batch_id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    unchanged: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    call_ids: Mapped[list] = mapped_column(JSON, default=list)
    audio_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ObjectionRow(_Base):
    __tablename__ = "objections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id"), index=True)
    turn_index: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32), index=True)
    customer_text: Mapped[str] = mapped_column(Text)
    reply_text: Mapped[str] = mapped_column(Text)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String, nullable=True)
    polarity: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class IngestJob:
    """One input of an ingest batch, as the job table holds it."""

    job_id: int
    batch_id: str
    position: int
    path: str
    status: JobStatus
    content_hash: str | None = None
    unchanged: bool = False
    error: str | None = None
    call_ids: list[str] = field(default_factory=list)
    audio_s: float | None = None
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class IngestBatch:
    batch_id: str
    resumed: bool  # True when an earlier, unfinished run of the same inputs is continued
    jobs: list[IngestJob]


def process_alive(host: str | None, pid: int) -> bool:
    """Whether the process that owns a batch or a training run still runs.

    Only knowable on the same host; elsewhere it is assumed alive.
    """
    if host != socket.gethostname():
        return True  # another machine's run: assume alive rather than steal its batch
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json_safe(value: Any) -> Any:
    """A JSON-storable copy: odd values from a source (dates, sets) become strings, not errors."""
    return json.loads(json.dumps(value, default=str))


class Store:
    """Calls, turns, inputs and objections in one SQLite file (or any SQLAlchemy URL)."""

    def __init__(self, db_path: Path | str):
        url = db_path if isinstance(db_path, str) and "://" in db_path else None
        if url is None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{db_path}"
        self.engine = create_engine(url, future=True)
        _Base.metadata.create_all(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- inputs ---------------------------------------------------------

    def input_call_ids(self, content_hash: str) -> list[str] | None:
        """The calls an input with this hash produced, or None when it is new."""
        with self.session() as s:
            row = s.get(InputRow, content_hash)
            return list(row.call_ids) if row else None

    # --- ingest jobs ----------------------------------------------------

    def open_batch(self, key: str, paths: list[str]) -> IngestBatch:
        """The batch for these inputs: an unfinished one with the same key whose process is gone
        is resumed (its done jobs stay done), else a new one with every input queued."""
        with self.session() as s, s.begin():
            candidate = s.scalars(
                select(IngestBatchRow)
                .where(IngestBatchRow.key == key, IngestBatchRow.status == "running")
                .order_by(IngestBatchRow.started_at.desc())
            ).first()
            resumed = candidate is not None and not process_alive(candidate.host, candidate.pid)
            if resumed:
                batch = candidate
                batch.host, batch.pid = socket.gethostname(), os.getpid()
                # A job left running belonged to the dead process: it is redone from scratch.
                s.execute(
                    update(IngestJobRow)
                    .where(IngestJobRow.batch_id == batch.batch_id)
                    .where(IngestJobRow.status == "running")
                    .values(status="queued")
                )
            else:
                batch = IngestBatchRow(
                    batch_id=uuid.uuid4().hex,
                    key=key,
                    status="running",
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=_now(),
                )
                s.add(batch)
                s.add_all(
                    IngestJobRow(
                        batch_id=batch.batch_id,
                        position=i,
                        path=p,
                        status="queued",
                        call_ids=[],
                    )
                    for i, p in enumerate(paths)
                )
            s.flush()
            jobs = s.scalars(
                select(IngestJobRow)
                .where(IngestJobRow.batch_id == batch.batch_id)
                .order_by(IngestJobRow.position)
            ).all()
            return IngestBatch(batch.batch_id, resumed, [_job(j) for j in jobs])

    def start_job(self, job_id: int, content_hash: str | None) -> None:
        with self.session() as s, s.begin():
            row = s.get(IngestJobRow, job_id)
            row.status, row.content_hash, row.started_at = "running", content_hash, _now()
            row.error, row.finished_at, row.unchanged = None, None, False

    def finish_job(
        self, job_id: int, call_ids: list[str], unchanged: bool, audio_s: float | None = None
    ) -> None:
        """Mark a job done without storing calls (its input was already stored)."""
        with self.session() as s, s.begin():
            _mark_done(s, job_id, call_ids, unchanged, audio_s)

    def fail_job(self, job_id: int, error: str, audio_s: float | None = None) -> None:
        with self.session() as s, s.begin():
            row = s.get(IngestJobRow, job_id)
            row.status, row.error, row.finished_at = "failed", error, _now()
            row.audio_s = audio_s

    def finish_batch(self, batch_id: str) -> None:
        with self.session() as s, s.begin():
            row = s.get(IngestBatchRow, batch_id)
            row.status, row.finished_at = "finished", _now()

    def jobs(self, batch_id: str | None = None) -> list[IngestJob]:
        """Jobs of one batch, or of every batch (oldest first)."""
        query = select(IngestJobRow).order_by(IngestJobRow.id)
        if batch_id is not None:
            query = query.where(IngestJobRow.batch_id == batch_id)
        with self.session() as s:
            return [_job(r) for r in s.scalars(query)]

    # --- calls ----------------------------------------------------------

    def has_call(self, call_id: str) -> bool:
        with self.session() as s:
            return s.get(CallRow, call_id) is not None

    def call_hash(self, call_id: str) -> str | None:
        with self.session() as s:
            row = s.get(CallRow, call_id)
            return row.content_hash if row else None

    def save_calls(
        self,
        records: Iterable[CallRecord],
        input_hash: str,
        input_path: str,
        job_id: int | None = None,
        audio_s: float | None = None,
    ) -> None:
        """Store calls (replacing any with the same id), mark the input as ingested and its job
        (when given) as done, all in one transaction."""
        records = list(records)
        with self.session() as s, s.begin():
            for record in records:
                existing = s.get(CallRow, record.call_id)
                if existing is not None:
                    s.execute(delete(ObjectionRow).where(ObjectionRow.call_id == record.call_id))
                    s.delete(existing)
                    s.flush()
                row = CallRow(
                    call_id=record.call_id,
                    source=record.source,
                    source_kind=record.source_kind,
                    content_hash=record.content_hash,
                    outcome=record.outcome,
                    account_id=record.account_id,
                    rep_id=record.rep_id,
                    deal_id=record.deal_id,
                    date=record.date,
                    duration_s=record.duration_s,
                    language=record.language,
                    extra=_json_safe(record.extra or {}),
                    ingested_at=_now(),
                )
                row.turns = [
                    TurnRow(idx=i, speaker=t.speaker, start=t.start, end=t.end, text=t.text)
                    for i, t in enumerate(record.turns)
                ]
                s.add(row)
            s.merge(
                InputRow(
                    content_hash=input_hash,
                    path=input_path,
                    call_ids=[r.call_id for r in records],
                    ingested_at=_now(),
                )
            )
            if job_id is not None:
                _mark_done(s, job_id, [r.call_id for r in records], False, audio_s)

    def get_call(self, call_id: str) -> CallRecord:
        with self.session() as s:
            row = s.get(CallRow, call_id)
            if row is None:
                raise NotFoundError(
                    f"no call with id '{call_id}'; list the stored calls with `copilot status` "
                    "or ingest it first"
                )
            return _record(row, [_turn(t) for t in row.turns])

    def list_calls(self) -> list[CallRecord]:
        """Every call's metadata (turns left empty: use ``turns`` for those)."""
        with self.session() as s:
            rows = s.scalars(select(CallRow).order_by(CallRow.call_id)).all()
            return [_record(r, []) for r in rows]

    def account_calls(self, account_id: str) -> list[CallRecord]:
        """The account's calls with their turns, oldest first (undated ones first)."""
        with self.session() as s:
            rows = s.scalars(
                select(CallRow).where(CallRow.account_id == account_id).order_by(CallRow.date)
            ).all()
            return [_record(r, [_turn(t) for t in r.turns]) for r in rows]

    def call_account_ids(self) -> set[str]:
        """The accounts that have at least one stored call."""
        with self.session() as s:
            rows = s.scalars(
                select(CallRow.account_id).where(CallRow.account_id.is_not(None)).distinct()
            ).all()
            return set(rows)

    def dataset_calls(self, dataset: str) -> list[CallRecord]:
        """Calls of one public corpus (``extra.dataset``, e.g. "craigslist"), with their turns."""
        with self.session() as s:
            rows = s.scalars(
                select(CallRow)
                .where(CallRow.extra["dataset"].as_string() == dataset)
                .order_by(CallRow.call_id)
            ).all()
            return [_record(r, [_turn(t) for t in r.turns]) for r in rows]

    def version(self) -> tuple[int, str | None, int]:
        """A cheap fingerprint of what is stored (calls, the latest ingest, objections):
        caches of call-derived facts compare it instead of re-reading every call."""
        with self.session() as s:
            calls = s.scalar(select(func.count()).select_from(CallRow)) or 0
            latest = s.scalar(select(func.max(CallRow.ingested_at)))
            objections = s.scalar(select(func.count()).select_from(ObjectionRow)) or 0
        return calls, latest, objections

    def turns(self, call_id: str) -> list[Turn]:
        with self.session() as s:
            rows = s.scalars(
                select(TurnRow).where(TurnRow.call_id == call_id).order_by(TurnRow.idx)
            )
            return [_turn(t) for t in rows]

    def existing_call_ids(self, call_ids: Iterable[str]) -> set[str]:
        ids = list(call_ids)
        with self.session() as s:
            return set(s.scalars(select(CallRow.call_id).where(CallRow.call_id.in_(ids))))

    # --- objections -----------------------------------------------------

    def replace_objections(self, objections: Iterable[Objection]) -> int:
        """Replace every mined objection with ``objections`` (mining is recomputed whole)."""
        rows = [ObjectionRow(**_objection_fields(o)) for o in objections]
        with self.session() as s, s.begin():
            s.execute(delete(ObjectionRow))
            s.add_all(rows)
        return len(rows)

    def objections(self, type_: str | None = None, polarity: int | None = None) -> list[Objection]:
        query = select(ObjectionRow).order_by(ObjectionRow.call_id, ObjectionRow.turn_index)
        if type_ is not None:
            query = query.where(ObjectionRow.type == type_)
        if polarity is not None:
            query = query.where(ObjectionRow.polarity == polarity)
        with self.session() as s:
            return [_objection(r) for r in s.scalars(query)]

    # --- counts ---------------------------------------------------------

    def counts(self) -> dict[str, object]:
        with self.session() as s:
            calls = s.scalar(select(func.count()).select_from(CallRow)) or 0
            turns = s.scalar(select(func.count()).select_from(TurnRow)) or 0
            minutes = (s.scalar(select(func.sum(CallRow.duration_s))) or 0.0) / 60
            by_type = Counter(
                dict(
                    s.execute(
                        select(ObjectionRow.type, func.count()).group_by(ObjectionRow.type)
                    ).all()
                )
            )
        return {
            "calls": calls,
            "turns": turns,
            "minutes": round(minutes, 2),
            "objections": dict(by_type),
        }


def _mark_done(
    s: Session, job_id: int, call_ids: list[str], unchanged: bool, audio_s: float | None
) -> None:
    row = s.get(IngestJobRow, job_id)
    row.status, row.call_ids, row.unchanged = "done", list(call_ids), unchanged
    row.audio_s, row.error, row.finished_at = audio_s, None, _now()


def _job(row: IngestJobRow) -> IngestJob:
    return IngestJob(
        job_id=row.id,
        batch_id=row.batch_id,
        position=row.position,
        path=row.path,
        status=row.status,  # type: ignore[arg-type]
        content_hash=row.content_hash,
        unchanged=bool(row.unchanged),
        error=row.error,
        call_ids=list(row.call_ids or []),
        audio_s=row.audio_s,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _turn(row: TurnRow) -> Turn:
    return Turn(speaker=row.speaker, start=row.start, end=row.end, text=row.text)  # type: ignore[arg-type]


def _record(row: CallRow, turns: list[Turn]) -> CallRecord:
    return CallRecord(
        call_id=row.call_id,
        turns=turns,
        source=row.source,
        source_kind=row.source_kind,  # type: ignore[arg-type]
        content_hash=row.content_hash,
        outcome=row.outcome,
        account_id=row.account_id,
        rep_id=row.rep_id,
        deal_id=row.deal_id,
        date=row.date,
        duration_s=row.duration_s,
        language=row.language,
        extra=dict(row.extra or {}),
    )


def _objection_fields(o: Objection) -> dict[str, object]:
    return {
        "call_id": o.call_id,
        "turn_index": o.turn_index,
        "type": o.type,
        "customer_text": o.customer_text,
        "reply_text": o.reply_text,
        "start": o.start,
        "end": o.end,
        "outcome": o.outcome,
        "polarity": o.polarity,
        "score": o.score,
        "method": o.method,
    }


def _objection(r: ObjectionRow) -> Objection:
    return Objection(
        call_id=r.call_id,
        turn_index=r.turn_index,
        type=r.type,
        customer_text=r.customer_text,
        reply_text=r.reply_text,
        start=r.start,
        end=r.end,
        outcome=r.outcome,
        polarity=r.polarity,
        score=r.score,
        method=r.method,  # type: ignore[arg-type]
    )


__all__ = ["IngestBatch", "IngestJob", "Store"]
