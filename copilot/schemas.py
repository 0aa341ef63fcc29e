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


# --- account signals, scores, recommendations and quotes ------------------------


@dataclass(frozen=True)
class Evidence:
    """Where a signal came from: a stored row (``kind`` + ``ref`` = its key) or a call excerpt.

    For a call, ``ref`` is the call id and ``start``/``end`` the excerpt's seconds.
    """

    kind: str  # a record kind ("order", "tender", ...) or "call"
    ref: str
    text: str
    time: str | None = None  # ISO 8601
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Signal:
    """One observation about an account, scored.

    ``value`` is in ``unit`` (days, hours, count, share, units); ``weight`` in [0, 1]
    is how much it matters (configs/default.yaml, signals.weights); ``direction``
    says whether it makes the deal more (+1) or less (-1) likely to be won, 0 when
    it only sets urgency.
    """

    type: str
    account_id: str
    value: float
    unit: str
    time: str  # ISO 8601 UTC: when the fact behind it was observed
    weight: float
    direction: int
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    product_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Contribution:
    """How much one input moved a win likelihood, in log-odds (positive raises it)."""

    name: str
    log_odds: float
    value: float | str | None = None
    signal_type: str | None = None  # the signal this input stands for, when there is one
    learned: bool = True  # False: a configured prior, not fitted on the history


@dataclass(frozen=True)
class WinScore:
    account_id: str
    win_likelihood: float  # calibrated, in [0, 1]
    opportunity_id: str | None
    product_id: str | None
    contributions: list[Contribution]
    model: str  # the model's version id (its training data hash)
    # The log-odds of a deal with every feature at its training mean: base + contributions
    # = logit(win_likelihood).
    base_log_odds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    recommendation_id: str  # stable: account + rule + the signals' evidence
    account_id: str
    rule_id: str
    priority: Literal["critical", "high", "medium", "low"]
    owner: str
    due: str  # ISO 8601 UTC
    action: str
    why: str
    signals: list[Signal]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Delivery:
    """A slice of a quote line shipped on one date."""

    quantity: int
    date: str  # ISO 8601 date
    source: Literal["on_hand", "incoming", "replenishment"]


@dataclass(frozen=True)
class QuoteLine:
    product_id: str
    quantity: int
    list_price: float
    unit_price: float
    discount: float  # 1 - unit_price / list_price
    floor_price: float  # the lowest unit price allowed for this product
    deliveries: list[Delivery]


@dataclass(frozen=True)
class TalkingPoint:
    text: str
    citations: list[Citation]
    # Set when the point does not draw on won calls (none indexed, or the model failed).
    note: str | None = None


@dataclass(frozen=True)
class QuoteStrategy:
    """One of three quotes that differ in kind, each within the hard limits."""

    name: str  # "value_premium", "volume_term", "phased_bundle"
    title: str
    lines: list[QuoteLine]
    unit_price: float  # of the first (requested) product
    discount: float  # weighted by list value over all lines
    terms: list[str]
    total: float
    currency: str
    margin: float  # (total - cost) / total; None-free: cost falls back to the floor
    margin_value: float
    win_likelihood: float
    expected_margin_value: float  # win_likelihood * margin_value
    risk: Literal["low", "medium", "high"]
    risk_reasons: list[str]
    rationale: str
    within_budget: bool | None  # None when no budget is known
    talking_points: list[TalkingPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
