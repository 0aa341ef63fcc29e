"""Typed values that flow between ingest, mining, training and serving."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Speaker = Literal["rep", "customer"]


@dataclass(frozen=True)
class Turn:
    """One speaker's utterance; times in seconds from the start of the call."""

    speaker: Speaker
    start: float
    end: float
    text: str


@dataclass
class CallRecord:
    """A call ready to be stored: its id, metadata and turns."""

    call_id: str
    turns: list[Turn]
    source: str
    source_kind: Literal["audio", "transcript", "csv"]
    content_hash: str
    outcome: str | None = None
    account_id: str | None = None
    rep_id: str | None = None
    deal_id: str | None = None
    date: str | None = None
    duration_s: float | None = None
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        meta = asdict(self)
        meta.pop("turns")
        return meta


@dataclass(frozen=True)
class Chunk:
    """An indexed window of a call: a customer utterance with the rep's reply around it."""

    chunk_id: str
    call_id: str
    text: str
    start: float
    end: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Citation:
    call_id: str
    start: float
    end: float
    text: str
    score: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Objection:
    """A customer objection paired with the rep's reply and the call's outcome."""

    call_id: str
    turn_index: int
    type: str
    customer_text: str
    reply_text: str
    start: float
    end: float
    outcome: str | None
    polarity: int
    score: float
    method: Literal["lexicon", "embedding", "both"]
