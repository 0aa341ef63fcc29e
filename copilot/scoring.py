"""The win-likelihood model: how likely an account's deal is to be won, and why.

A deal is described at a scoring time ``t`` by what was known before ``t``: the
account's won and lost deals closed before ``t`` (a smoothed win rate), the
agent's record before ``t``, the product and its list price, the account's sector
and size, the days since its last order and how late its purchase rhythm runs,
the account's other open deals, and the days left in the calendar quarter.
``deal_features`` computes these from an ``AccountContext``; training and live
scoring both call it, so a live score reads the same facts, computed the same
way, as the examples the model learned from.

    model, report = WinModel.fit(contexts_by_account, opportunities, settings.win_model)
    score = model.score_account(ctx, signals)        # a WinScore with its contributions
    model.save(path); model = WinModel.load(path)    # JSON, no pickle

Training examples are the closed (won or lost) opportunities, each scored at its
``engage_date``. Closed deals are ordered by ``close_date`` and split by time:
training = deals closed before the training cutoff, calibration = the next
``calibration_share`` of closed deals, test = the last ``test_share``. The rule
that keeps labels from leaking: a training example's label is known (its deal
closed) strictly before the training cutoff, and every feature of any example is
computed from rows dated strictly before its scoring time, which is on or before
its close date. Cutoffs fall between close dates, so deals closed on one day
land on one side.

The model is a logistic regression on standardised features, calibrated with
Platt scaling (sklearn's sigmoid calibration) on the calibration period. The
calibrated log-odds stay a linear function of the features, so each feature
group's share of a score is ``slope * coef * (x - mean) / scale`` and the shares
plus the base log-odds add up to the score's log-odds exactly. Signals the CRM
history cannot teach (tenders, contacts, competitors, calls, stock, policies)
add the configured priors of ``win_model.signal_priors``, marked ``learned=False``.

The number of past deals is not a feature of its own (it is in the smoothing and
in the explanation): in a history that starts mid-stream it measures little but
how late a deal was engaged. Deal age is not a feature either: every closed deal
in the CRM export closed within 138 days of engaging, while four in five of its
open deals are older than that, so an age effect learned from the history would
be read far outside the range it was learned on. Calendar quarters are assumed
(the CRM's); a company with another fiscal year would need a start-month setting.

On the CRM export the model beats the base rate only narrowly (test AUC 0.53,
against 0.49 for the account's own win rate): that history holds little signal
at engage time, most of it the calendar quarter. The report says so in figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from copilot.context import AccountContext, Opportunity, Product
from copilot.errors import ConfigError, InputError, StateError
from copilot.schemas import Contribution, Signal, WinScore
from copilot.settings import WinModelSettings
from copilot.signals import SIGNAL_TYPES

logger = logging.getLogger(__name__)

# Bump when a feature's definition changes: a saved model of another version is refused.
FEATURE_VERSION = 1
# Signal types the model learns from the order history itself; a prior on them would count twice.
LEARNED_SIGNAL_TYPES = frozenset({"purchase_rhythm_overdue", "purchase_rhythm_due", "no_activity"})

_DAY_S = 86400.0
_CLOSED_STAGES = ("won", "lost")
# Fewer purchase days than this give no rhythm: two orders make one gap, which is no pattern.
_RHYTHM_MIN_PURCHASES = 3
_RHYTHM_CLIP_DAYS = 180.0
# Each period needs this many deals, with both outcomes, for its fit or figures to mean anything.
_MIN_PERIOD_DEALS = 20
_RELIABILITY_BINS = 10

_NUMERIC = (
    "account_win_rate",
    "agent_win_rate",
    "list_price_log",
    "revenue_log",
    "employees_log",
    "days_since_order_log",
    "rhythm_days_late",
    "open_deals_log",
    "days_to_quarter_end",
)
# Feature group -> (its columns by prefix or name, the signal type it stands for).
_GROUPS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "account_history": (("account_win_rate",), None),
    "agent": (("agent_win_rate",), None),
    "product": (("list_price_log", "product="), None),
    "sector": (("sector=",), None),
    "account_size": (("revenue_log", "employees_log"), None),
    "last_order": (("days_since_order_log",), "no_activity"),
    "purchase_rhythm": (("rhythm_days_late",), "purchase_rhythm_overdue"),
    "open_deals": (("open_deals_log",), None),
    "quarter_end": (("days_to_quarter_end",), None),
}


def _day(at: datetime) -> float:
    """A time as fractional days since the Unix epoch: cheap to sort and compare."""
    return at.timestamp() / _DAY_S


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _start(opp: Opportunity) -> datetime:
    # A prospect without an engage date is known from when its row was written.
    return opp.engage_date or opp.time


def _end(opp: Opportunity) -> datetime | None:
    if opp.close_date is not None:
        return opp.close_date
    return opp.time if opp.stage in _CLOSED_STAGES else None


# --- what was known at a time --------------------------------------------------------


@dataclass
class AgentHistory:
    """Each agent's closed deals as sorted close days, so a record before any ``t`` is a lookup.

    Built from every opportunity the model was fitted on and saved with it: an agent's
    deals span accounts, and one account's context holds only its own. Outcomes that
    arrive after the fit count once the model is refitted.
    """

    won: dict[str, list[float]] = field(default_factory=dict)
    lost: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_opportunities(cls, opportunities: Iterable[Opportunity]) -> AgentHistory:
        won: dict[str, list[float]] = {}
        lost: dict[str, list[float]] = {}
        for opp in opportunities:
            end = _end(opp)
            if opp.agent and opp.stage in _CLOSED_STAGES and end is not None:
                (won if opp.stage == "won" else lost).setdefault(opp.agent, []).append(_day(end))
        return cls({a: sorted(d) for a, d in won.items()}, {a: sorted(d) for a, d in lost.items()})

    def record(self, agent: str | None, at: datetime) -> tuple[int, int]:
        """(won, lost) deals of ``agent`` closed strictly before ``at``."""
        if not agent:
            return 0, 0
        t = _day(at)
        won = np.searchsorted(self.won.get(agent, []), t, side="left")
        lost = np.searchsorted(self.lost.get(agent, []), t, side="left")
        return int(won), int(lost)


class _AccountHistory:
    """One account's dated facts as sorted arrays (built once per context, read per time)."""

    def __init__(self, ctx: AccountContext):
        self.won = np.sort(
            [_day(e) for o in ctx.opportunities if o.stage == "won" and (e := _end(o))]
        )
        self.lost = np.sort(
            [_day(e) for o in ctx.opportunities if o.stage == "lost" and (e := _end(o))]
        )
        self.orders = np.sort([_day(o.time) for o in ctx.orders])
        # Orders on one UTC day are one purchase (the CRM closes several deals of an account
        # on one day); signals.py reads the rhythm the same way.
        first_of_day: dict[int, float] = {}
        for t in self.orders:
            first_of_day.setdefault(int(t), t)
        self.purchases = np.array(sorted(first_of_day.values()))
        self.ids = {o.opportunity_id: i for i, o in enumerate(ctx.opportunities)}
        # Only engaged deals count as in play: a prospect has no date to say since when it was.
        self.starts = np.array(
            [_day(o.engage_date) if o.engage_date else math.inf for o in ctx.opportunities]
        )
        self.ends = np.array(
            [_day(e) if (e := _end(o)) is not None else math.inf for o in ctx.opportunities]
        )

    def open_deals(self, at: float, exclude: str | None) -> int:
        """Deals engaged before ``at`` and not known closed by then, other than ``exclude``."""
        mask = (self.starts < at) & ~(self.ends < at)
        count = int(mask.sum())
        own = self.ids.get(exclude) if exclude is not None else None
        return count - 1 if own is not None and mask[own] else count


@dataclass(frozen=True)
class DealFeatures:
    """The facts about one deal at one time that the model reads, before scaling.

    ``None`` means unknown (no account, no orders yet): the model reads it as the
    training mean, so an unknown fact neither raises nor lowers a score.
    """

    at: datetime
    product_id: str
    list_price: float | None
    has_account: bool
    account_won: int
    account_lost: int
    agent: str | None
    agent_won: int
    agent_lost: int
    sector: str | None
    revenue_musd: float | None
    employees: int | None
    days_since_order: float | None
    rhythm_days_late: float | None  # negative: the next order is due in that many days
    open_deals: int | None
    days_to_quarter_end: float


def _days_to_quarter_end(at: datetime) -> float:
    at = at.astimezone(UTC)
    month = 3 * ((at.month - 1) // 3) + 4
    year = at.year + (month > 12)
    end = datetime(year, (month - 1) % 12 + 1, 1, tzinfo=UTC)
    return (end - at).total_seconds() / _DAY_S


def deal_features(
    ctx: AccountContext | None,
    opportunity: Opportunity,
    at: datetime,
    agents: AgentHistory,
    catalogue: dict[str, Product] | None = None,
) -> DealFeatures:
    """What was known about ``opportunity`` strictly before ``at``, from its account's context.

    Only dates decide what counts: a deal's outcome counts once its close date is
    before ``at``, an order once its time is, an open deal once it was engaged. The
    opportunity's own outcome never counts (it closes on or after its engage date).
    """
    return _deal_features(
        ctx, _AccountHistory(ctx) if ctx else None, opportunity, at, agents, catalogue
    )


def _deal_features(
    ctx: AccountContext | None,
    history: _AccountHistory | None,
    opportunity: Opportunity,
    at: datetime,
    agents: AgentHistory,
    catalogue: dict[str, Product] | None,
) -> DealFeatures:
    product = (ctx.products if ctx else {}).get(opportunity.product_id) or (catalogue or {}).get(
        opportunity.product_id
    )
    agent_won, agent_lost = agents.record(opportunity.agent, at)
    common = dict(
        at=at,
        product_id=opportunity.product_id,
        list_price=product.list_price if product else None,
        agent=opportunity.agent,
        agent_won=agent_won,
        agent_lost=agent_lost,
        days_to_quarter_end=_days_to_quarter_end(at),
    )
    if ctx is None or history is None:
        return DealFeatures(
            **common,
            has_account=False,
            account_won=0,
            account_lost=0,
            sector=None,
            revenue_musd=None,
            employees=None,
            days_since_order=None,
            rhythm_days_late=None,
            open_deals=None,
        )

    t = _day(at)
    orders_before = int(np.searchsorted(history.orders, t, side="left"))
    last_order = history.orders[orders_before - 1] if orders_before else None
    purchases = history.purchases[: int(np.searchsorted(history.purchases, t, side="left"))]
    rhythm = None
    if len(purchases) >= _RHYTHM_MIN_PURCHASES and last_order is not None:
        expected = last_order + float(np.median(np.diff(purchases)))
        rhythm = float(np.clip(t - expected, -_RHYTHM_CLIP_DAYS, _RHYTHM_CLIP_DAYS))
    account = ctx.account
    return DealFeatures(
        **common,
        has_account=True,
        account_won=int(np.searchsorted(history.won, t, side="left")),
        account_lost=int(np.searchsorted(history.lost, t, side="left")),
        sector=account.sector.strip().casefold() if account.sector else None,
        revenue_musd=account.revenue_musd,
        employees=account.employees,
        days_since_order=float(t - last_order) if last_order is not None else None,
        rhythm_days_late=rhythm,
        open_deals=history.open_deals(t, opportunity.opportunity_id),
    )


# --- from facts to a standardised vector -----------------------------------------------


def _log1p(x: float | None) -> float | None:
    return None if x is None else math.log1p(max(0.0, x))


@dataclass
class _FeatureSpace:
    """Columns, category lists and the training means and scales that standardise them.

    A value outside the range seen in training is read at the range's edge: a linear
    effect learned on gaps of days says nothing about an order 100 days overdue.
    """

    products: list[str]
    sectors: list[str]
    prior: float  # the training win rate that smoothed rates shrink towards
    smoothing: float  # pseudo-deals of that prior added to every record
    means: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return (
            list(_NUMERIC)
            + [f"product={p}" for p in self.products]
            + [f"sector={s}" for s in self.sectors]
        )

    def rate(self, won: int, lost: int) -> float:
        return (won + self.smoothing * self.prior) / (won + lost + self.smoothing)

    def raw(self, f: DealFeatures) -> list[float]:
        """One row before scaling; NaN where the fact is unknown."""
        numeric = [
            self.rate(f.account_won, f.account_lost) if f.has_account else None,
            self.rate(f.agent_won, f.agent_lost) if f.agent else None,
            math.log(f.list_price) if f.list_price else None,
            _log1p(f.revenue_musd),
            _log1p(f.employees),
            _log1p(f.days_since_order),
            f.rhythm_days_late,
            _log1p(f.open_deals),
            f.days_to_quarter_end,
        ]
        row = [math.nan if v is None else float(v) for v in numeric]
        row += [1.0 if f.product_id == p else 0.0 for p in self.products]
        # Without an account the sector is unknown, not "none of these": it reads as the mean.
        row += [
            (1.0 if f.sector == s else 0.0) if f.has_account else math.nan for s in self.sectors
        ]
        return row

    def fit(self, rows: np.ndarray) -> None:
        known = ~np.isnan(rows)
        # A column never known in training (no account has a revenue) centres on 0.
        means = np.where(known, rows, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
        filled = np.where(np.isnan(rows), means, rows)
        scales = filled.std(axis=0)
        # A constant column carries nothing; scale 1 keeps its standardised value at 0.
        self.means, self.scales = means.tolist(), np.where(scales > 1e-12, scales, 1.0).tolist()
        seen = known.any(axis=0)
        self.lows = np.where(seen, np.where(known, rows, np.inf).min(axis=0), means).tolist()
        self.highs = np.where(seen, np.where(known, rows, -np.inf).max(axis=0), means).tolist()

    def centre(self, rows: np.ndarray) -> np.ndarray:
        """Rows minus the training means, clamped to the training range; 0 where unknown."""
        clamped = np.clip(rows, np.asarray(self.lows), np.asarray(self.highs))
        return np.where(np.isnan(rows), 0.0, clamped - np.asarray(self.means))

    def standardise(self, rows: np.ndarray) -> np.ndarray:
        return self.centre(rows) / np.asarray(self.scales)


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """How one predictor did on the test period."""

    auc: float
    brier: float
    mean_predicted: float
    observed: float
    n: int


@dataclass(frozen=True)
class ReliabilityBin:
    """Test deals whose calibrated score fell in [lower, upper]: predicted vs observed win rate."""

    lower: float
    upper: float
    n: int
    mean_predicted: float
    observed: float


@dataclass
class WinModelReport:
    n_train: int
    n_calibration: int
    n_test: int
    first_close: str  # ISO dates of the split
    train_until: str  # training deals closed before this day
    calibration_until: str  # calibration deals closed before this day, test deals on or after
    last_close: str
    base_rate: float  # the training period's win rate: the stage-only baseline's prediction
    model: Metrics
    stage_baseline: Metrics
    account_baseline: Metrics
    reliability: list[ReliabilityBin]
    calibration_auc: (
        float  # the uncalibrated model on the calibration period: for choosing settings
    )
    calibration_slope: float
    calibration_intercept: float
    n_features: int
    n_skipped: int  # closed deals without an engage or close date: no time to score them at
    fit_seconds: float

    def summary(self) -> str:
        m, s, a = self.model, self.stage_baseline, self.account_baseline
        return (
            f"win model: trained on {self.n_train} deals closed {self.first_close} to "
            f"{self.train_until}, calibrated on {self.n_calibration} closed to "
            f"{self.calibration_until}, tested on {self.n_test} closed to {self.last_close}. "
            f"Test AUC {m.auc:.3f}, Brier {m.brier:.4f} (mean predicted {m.mean_predicted:.3f}, "
            f"observed {m.observed:.3f}). Every closed deal was in Engaging before it closed, so "
            f"the stage-only baseline predicts the base rate {self.base_rate:.3f} for all of them: "
            f"its AUC is 0.5 by construction and its Brier {s.brier:.4f}. The honest baseline, "
            f"the account's own win rate before each deal, scores AUC {a.auc:.3f}, Brier "
            f"{a.brier:.4f}. Fitted in {self.fit_seconds:.1f} s."
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WinModelReport:
        data = dict(data)
        for name in ("model", "stage_baseline", "account_baseline"):
            data[name] = Metrics(**data[name])
        data["reliability"] = [ReliabilityBin(**b) for b in data["reliability"]]
        return cls(**data)


def _metrics(y: np.ndarray, p: np.ndarray) -> Metrics:
    return Metrics(
        auc=float(roc_auc_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        mean_predicted=float(p.mean()),
        observed=float(y.mean()),
        n=len(y),
    )


def _reliability(
    y: np.ndarray, p: np.ndarray, bins: int = _RELIABILITY_BINS
) -> list[ReliabilityBin]:
    # Quantile edges: the scores crowd around the base rate, so equal-width bins sit empty.
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        mask = which == b
        if mask.any():
            out.append(
                ReliabilityBin(
                    lower=float(edges[b]),
                    upper=float(edges[b + 1]),
                    n=int(mask.sum()),
                    mean_predicted=float(p[mask].mean()),
                    observed=float(y[mask].mean()),
                )
            )
    return out


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Example:
    opportunity: Opportunity
    at: datetime
    closed: datetime
    won: int


def _date(at: datetime) -> str:
    return at.date().isoformat()


def _closed_examples(opportunities: Iterable[Opportunity]) -> tuple[list[_Example], int]:
    """Closed deals scored at their engage dates, by close date; and how many lacked the dates."""
    examples, skipped = [], 0
    for opp in opportunities:
        end = _end(opp)
        if opp.stage not in _CLOSED_STAGES:
            continue
        if opp.engage_date is None or end is None or end < opp.engage_date:
            skipped += 1
            continue
        examples.append(_Example(opp, opp.engage_date, end, int(opp.stage == "won")))
    if skipped:
        logger.warning(
            "%d closed opportunities have no engage date or close before it; left out", skipped
        )
    examples.sort(key=lambda e: (e.closed, e.opportunity.opportunity_id))
    return examples, skipped


def _split(closed: list[datetime], settings: WinModelSettings) -> tuple[datetime, datetime]:
    """The two cutoffs: train before the first, calibrate before the second, test after."""
    n = len(closed)
    test_from = n - round(n * settings.test_share)
    if settings.train_until:
        try:
            train_until = datetime.fromisoformat(settings.train_until)
        except ValueError as exc:
            raise ConfigError(
                f"win_model.train_until {settings.train_until!r} is not an ISO date; "
                "write it like 2017-08-28, or null to split by shares"
            ) from exc
        train_until = train_until.replace(tzinfo=train_until.tzinfo or UTC)
        n_train = int(np.searchsorted(np.array([_day(c) for c in closed]), _day(train_until)))
        cal_until_index = min(n_train + round(n * settings.calibration_share), n - 1)
        return train_until, closed[cal_until_index]
    cal_from = test_from - round(n * settings.calibration_share)
    return closed[cal_from], closed[test_from]


def _data_hash(contexts: dict[str, AccountContext], opportunities: Sequence[Opportunity]) -> str:
    digest = hashlib.sha256()
    rows = [f"opportunity:{o.key}:{o.model_dump_json()}" for o in opportunities]
    for account_id, ctx in contexts.items():
        rows.append(f"account:{account_id}:{ctx.account.model_dump_json()}")
        rows += [f"order:{o.key}:{o.model_dump_json()}" for o in ctx.orders]
        rows += [f"product:{p.key}:{p.model_dump_json()}" for p in ctx.products.values()]
    for row in sorted(set(rows)):
        digest.update(row.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class WinModel:
    """A fitted, calibrated, explainable win model. Build it with ``WinModel.fit`` or ``load``."""

    def __init__(
        self,
        space: _FeatureSpace,
        coef: list[float],
        intercept: float,
        calibration: tuple[float, float],
        agents: AgentHistory,
        catalogue: dict[str, float],
        default_product: str | None,
        signal_priors: dict[str, float],
        data_hash: str,
        settings: dict[str, Any],
        report: WinModelReport,
    ):
        self.space = space
        self.coef = coef
        self.intercept = intercept
        # Platt's a, b as sklearn fits them: p = 1 / (1 + exp(a * d + b)), d the raw log-odds.
        self.calibration = calibration
        self.agents = agents
        self.catalogue = catalogue  # list prices for deals scored without a context
        self.default_product = default_product
        self.signal_priors = signal_priors
        self.data_hash = data_hash
        self.settings = settings
        self.report = report
        self._products = {
            pid: Product(
                time=datetime(1970, 1, 1, tzinfo=UTC), product_id=pid, name=pid, list_price=p
            )
            for pid, p in catalogue.items()
        }
        self._weights = np.asarray(coef) / np.asarray(space.scales)
        self._groups = {
            group: np.array([c.startswith(prefixes) for c in space.columns])
            for group, (prefixes, _) in _GROUPS.items()
        }

    @property
    def version(self) -> str:
        """A hash of the training data, the settings and the feature definitions."""
        text = json.dumps(
            {"data": self.data_hash, "settings": self.settings, "features": FEATURE_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def slope(self) -> float:
        return -self.calibration[0]

    @property
    def base_log_odds(self) -> float:
        """The calibrated log-odds of a deal whose every feature sits at its training mean."""
        a, b = self.calibration
        return -(a * self.intercept + b)

    # --- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        contexts_by_account: dict[str, AccountContext],
        opportunities: Sequence[Opportunity],
        settings: WinModelSettings,
    ) -> tuple[WinModel, WinModelReport]:
        """Fit on the closed opportunities (time split, Platt-calibrated) and test on the latest."""
        started = time.perf_counter()
        _check_settings(settings)

        examples, skipped = _closed_examples(opportunities)
        if len(examples) < 3 * _MIN_PERIOD_DEALS:
            raise StateError(
                f"the win model needs at least {3 * _MIN_PERIOD_DEALS} closed (won or lost) "
                f"opportunities with engage and close dates, got {len(examples)}; import the CRM "
                "history (sales_pipeline.csv) first"
            )

        # The time split.
        train_until, calibration_until = _split([e.closed for e in examples], settings)
        part = np.array(
            [
                0 if e.closed < train_until else 1 if e.closed < calibration_until else 2
                for e in examples
            ]
        )
        y = np.array([e.won for e in examples])
        for k, name in enumerate(("training", "calibration", "test")):
            n_k = int((part == k).sum())
            if n_k < _MIN_PERIOD_DEALS or len(set(y[part == k])) < 2:
                raise StateError(
                    f"the {name} period holds {n_k} closed deals "
                    f"({int(y[part == k].sum())} won); each period needs {_MIN_PERIOD_DEALS} or "
                    "more with both outcomes: adjust win_model.train_until, calibration_share "
                    "or test_share, or import more history"
                )

        # Features at each example's engage date, from its account's context.
        catalogue: dict[str, Product] = {}
        for ctx in contexts_by_account.values():
            catalogue.update(ctx.products)
        agents = AgentHistory.from_opportunities(opportunities)
        train_products = Counter(
            e.opportunity.product_id for e, k in zip(examples, part, strict=True) if k == 0
        )
        space = _FeatureSpace(
            products=sorted(train_products),
            sectors=sorted(
                {
                    ctx.account.sector.strip().casefold()
                    for ctx in contexts_by_account.values()
                    if ctx.account.sector
                }
            ),
            prior=float(y[part == 0].mean()),
            smoothing=settings.history_prior_deals,
        )
        histories: dict[str, _AccountHistory] = {}
        features, unknown = [], Counter()
        for e in examples:
            ctx = contexts_by_account.get(e.opportunity.account_id or "")
            if ctx is None and e.opportunity.account_id:
                unknown[e.opportunity.account_id] += 1
            if ctx is not None and ctx.account.account_id not in histories:
                histories[ctx.account.account_id] = _AccountHistory(ctx)
            history = histories[ctx.account.account_id] if ctx is not None else None
            features.append(_deal_features(ctx, history, e.opportunity, e.at, agents, catalogue))
        if unknown:
            logger.warning(
                "%d closed deals name %d accounts without a context (e.g. %s); scored as deals "
                "without an account",
                sum(unknown.values()),
                len(unknown),
                ", ".join(sorted(unknown)[:3]),
            )
        rows = np.array([space.raw(f) for f in features])
        space.fit(rows[part == 0])
        z = space.standardise(rows)

        # Fit on the training period, calibrate on the next.
        lr = LogisticRegression(C=settings.regularization, max_iter=1000)
        lr.fit(z[part == 0], y[part == 0])
        platt = CalibratedClassifierCV(FrozenEstimator(lr), method="sigmoid")
        platt.fit(z[part == 1], y[part == 1])
        sigmoid = platt.calibrated_classifiers_[0].calibrators[0]
        a, b = float(sigmoid.a_), float(sigmoid.b_)

        # Test: the model against the stage-only and the account-history baselines.
        test = part == 2
        p_model = platt.predict_proba(z[test])[:, 1]
        p_stage = np.full(int(test.sum()), space.prior)
        p_account = np.array(
            [
                space.rate(f.account_won, f.account_lost) if f.has_account else space.prior
                for f, k in zip(features, part, strict=True)
                if k == 2
            ]
        )
        report = WinModelReport(
            n_train=int((part == 0).sum()),
            n_calibration=int((part == 1).sum()),
            n_test=int(test.sum()),
            first_close=_date(examples[0].closed),
            train_until=_date(train_until),
            calibration_until=_date(calibration_until),
            last_close=_date(examples[-1].closed),
            base_rate=space.prior,
            model=_metrics(y[test], p_model),
            stage_baseline=_metrics(y[test], p_stage),
            account_baseline=_metrics(y[test], p_account),
            reliability=_reliability(y[test], p_model),
            calibration_auc=float(roc_auc_score(y[part == 1], lr.decision_function(z[part == 1]))),
            calibration_slope=-a,
            calibration_intercept=-b,
            n_features=len(space.columns),
            n_skipped=skipped,
            fit_seconds=0.0,
        )
        model = cls(
            space=space,
            coef=lr.coef_[0].tolist(),
            intercept=float(lr.intercept_[0]),
            calibration=(a, b),
            agents=agents,
            catalogue={pid: p.list_price for pid, p in sorted(catalogue.items())},
            default_product=train_products.most_common(1)[0][0],
            signal_priors=dict(settings.signal_priors),
            data_hash=_data_hash(contexts_by_account, opportunities),
            settings=settings.model_dump(),
            report=report,
        )
        report.fit_seconds = round(time.perf_counter() - started, 3)
        logger.info("%s", report.summary())
        return model, report

    # --- scoring ---------------------------------------------------------------------------

    def score_opportunity(
        self,
        ctx: AccountContext | None,
        opportunity: Opportunity,
        signals: Iterable[Signal] = (),
        at: datetime | None = None,
    ) -> WinScore:
        """The calibrated chance that ``opportunity`` is won, scored at ``at`` (default ctx.as_of).

        ``ctx`` is None for a deal without an account: it is scored on its agent, product
        and the calendar, every account feature reading as unknown.
        """
        if ctx is not None and opportunity.account_id not in (None, ctx.account.account_id):
            raise InputError(
                f"opportunity {opportunity.opportunity_id} belongs to account "
                f"'{opportunity.account_id}', not to the context's '{ctx.account.account_id}'; "
                "pass that account's context"
            )
        at = at or (ctx.as_of if ctx is not None else opportunity.time)
        history = _AccountHistory(ctx) if ctx is not None else None
        f = _deal_features(ctx, history, opportunity, at, self.agents, self._products)
        account_id = ctx.account.account_id if ctx is not None else opportunity.account_id or ""
        return self._score(f, account_id, opportunity.opportunity_id, list(signals))

    def score_account(self, ctx: AccountContext, signals: Iterable[Signal] = ()) -> WinScore:
        """The account's chance to win its biggest open deal at ``ctx.as_of``.

        The highest-value open deal (its value, else its product's list price) stands for
        the account, so the score explains one real deal exactly and the rep knows which.
        Without an open deal, a new deal for the account's most-bought product is scored
        (``opportunity_id`` None).
        """
        at = ctx.as_of
        open_deals = [o for o in ctx.opportunities if _open_at(o, at)]
        if open_deals:
            deal = max(open_deals, key=lambda o: self._deal_rank(ctx, o))
            return self.score_opportunity(ctx, deal, signals, at)

        hypothetical = Opportunity(
            time=at,
            opportunity_id="hypothetical",
            account_id=ctx.account.account_id,
            product_id=self._most_bought(ctx),
            agent=ctx.account.owner or _latest_agent(ctx),
            stage="prospecting",
            engage_date=at,
        )
        return replace(self.score_opportunity(ctx, hypothetical, signals, at), opportunity_id=None)

    def _deal_rank(self, ctx: AccountContext, opp: Opportunity) -> tuple:
        product = ctx.products.get(opp.product_id)
        value = opp.value or (
            product.list_price if product else self.catalogue.get(opp.product_id, 0.0)
        )
        # Ties: an engaged deal before a prospect, the longest-running first, then by id.
        return (value, opp.stage == "engaging", -_day(_start(opp)), opp.opportunity_id)

    def _most_bought(self, ctx: AccountContext) -> str:
        orders = Counter(o.product_id for o in ctx.orders if o.time <= ctx.as_of)
        deals = Counter(o.product_id for o in ctx.opportunities)
        counts = orders or deals
        if counts:
            return min(counts, key=lambda p: (-counts[p], p))
        if self.default_product is None:
            raise StateError("the win model knows no product to score a new deal with; refit it")
        return self.default_product

    def _score(
        self, f: DealFeatures, account_id: str, opportunity_id: str | None, signals: list[Signal]
    ) -> WinScore:
        centred = self.space.centre(np.array(self.space.raw(f)))
        shares = self.slope * self._weights * centred
        contributions = [
            Contribution(
                name=_describe(group, f, self.space),
                log_odds=float(shares[self._groups[group]].sum()),
                value=_value(group, f, self.space),
                signal_type=_signal_type(group, f, signal_type),
                learned=True,
            )
            for group, (_, signal_type) in _GROUPS.items()
        ]
        contributions += self._priors(signals, f.product_id)
        log_odds = self.base_log_odds + sum(c.log_odds for c in contributions)
        contributions.sort(key=lambda c: -abs(c.log_odds))
        return WinScore(
            account_id=account_id,
            win_likelihood=_sigmoid(log_odds),
            opportunity_id=opportunity_id,
            product_id=f.product_id,
            contributions=contributions,
            model=self.version,
            base_log_odds=self.base_log_odds,
        )

    def _priors(self, signals: list[Signal], product_id: str) -> list[Contribution]:
        """One configured prior per signal type present (for this product, or account-wide)."""
        out = []
        for kind, prior in self.signal_priors.items():
            present = [s for s in signals if s.type == kind and s.product_id in (None, product_id)]
            if not present or prior == 0:
                continue
            strongest = max(present, key=lambda s: s.weight)
            # The prior's size, with the signal's own direction when it has one (a policy can
            # be an opportunity or a risk); urgency-only signals keep the prior's sign.
            shift = abs(prior) * strongest.direction if strongest.direction else prior
            out.append(
                Contribution(
                    name=strongest.summary,
                    log_odds=float(shift),
                    value=strongest.value,
                    signal_type=kind,
                    learned=False,
                )
            )
        return out

    # --- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "copilot-win-model",
            "feature_version": FEATURE_VERSION,
            "version": self.version,
            "data_hash": self.data_hash,
            "settings": self.settings,
            "feature_names": self.space.columns,
            "products": self.space.products,
            "sectors": self.space.sectors,
            "prior": self.space.prior,
            "smoothing": self.space.smoothing,
            "means": self.space.means,
            "scales": self.space.scales,
            "lows": self.space.lows,
            "highs": self.space.highs,
            "coef": self.coef,
            "intercept": self.intercept,
            "calibration": {
                "method": "sigmoid",
                "a": self.calibration[0],
                "b": self.calibration[1],
            },
            "signal_priors": self.signal_priors,
            "catalogue": self.catalogue,
            "default_product": self.default_product,
            "agents": {"won": self.agents.won, "lost": self.agents.lost},
            "report": self.report.to_dict(),
        }

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        tmp.replace(path)  # a reader never sees half a model
        return path

    @classmethod
    def load(cls, path: Path | str) -> WinModel:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the win model {path}: {exc}; refit it") from exc
        if (
            not isinstance(data, dict)
            or data.get("format") != "copilot-win-model"
            or data.get("feature_version") != FEATURE_VERSION
        ):
            found = data.get("feature_version") if isinstance(data, dict) else None
            raise InputError(
                f"{path} is not a win model of feature version {FEATURE_VERSION} (found "
                f"version {found!r}); refit the model"
            )
        try:
            model = cls._from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: a win model field is missing or bad ({exc}); refit") from exc
        if model.space.columns != data.get("feature_names") or model.version != data.get("version"):
            raise InputError(f"{path}: its version or features do not match its content; refit")
        return model

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> WinModel:
        space = _FeatureSpace(
            products=data["products"],
            sectors=data["sectors"],
            prior=data["prior"],
            smoothing=data["smoothing"],
            means=data["means"],
            scales=data["scales"],
            lows=data["lows"],
            highs=data["highs"],
        )
        return cls(
            space=space,
            coef=data["coef"],
            intercept=data["intercept"],
            calibration=(data["calibration"]["a"], data["calibration"]["b"]),
            agents=AgentHistory(data["agents"]["won"], data["agents"]["lost"]),
            catalogue=data["catalogue"],
            default_product=data["default_product"],
            signal_priors=data["signal_priors"],
            data_hash=data["data_hash"],
            settings=data["settings"],
            report=WinModelReport.from_dict(data["report"]),
        )


def _check_settings(settings: WinModelSettings) -> None:
    if settings.calibration_share + settings.test_share >= 0.9:
        raise ConfigError(
            f"win_model.calibration_share ({settings.calibration_share}) + test_share "
            f"({settings.test_share}) leave under 10 % of the closed deals to train on; "
            "keep their sum below 0.9"
        )
    for kind in settings.signal_priors:
        if kind in LEARNED_SIGNAL_TYPES:
            raise ConfigError(
                f"win_model.signal_priors.{kind}: the model learns this from the order history, "
                "and a prior would count it twice; remove it"
            )
        if kind not in SIGNAL_TYPES:
            raise ConfigError(
                f"win_model.signal_priors.{kind} is not a signal type; expected one of "
                f"{', '.join(sorted(set(SIGNAL_TYPES) - LEARNED_SIGNAL_TYPES))}"
            )


def _open_at(opp: Opportunity, at: datetime) -> bool:
    """Started by ``at`` and not closed by then (a deal closed later was still open)."""
    end = _end(opp)
    return _start(opp) <= at and (end is None or end > at)


def _latest_agent(ctx: AccountContext) -> str | None:
    dated = [o for o in ctx.opportunities if o.agent and _start(o) <= ctx.as_of]
    return max(dated, key=lambda o: (_start(o), o.opportunity_id)).agent if dated else None


# --- explanations ------------------------------------------------------------------------------


# What a deal without an account cannot say, per feature group.
_ACCOUNT_GROUPS = {
    "account_history": "account history",
    "sector": "sector",
    "account_size": "account size",
    "last_order": "last order",
    "purchase_rhythm": "purchase rhythm",
    "open_deals": "open deals",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _days(days: float) -> str:
    return _plural(round(days), "day")


def _describe(group: str, f: DealFeatures, space: _FeatureSpace) -> str:
    """The feature group's fact, said for a rep."""
    if not f.has_account and group in _ACCOUNT_GROUPS:
        return f"{_ACCOUNT_GROUPS[group]}: no account on the deal"
    if group == "account_history":
        n = f.account_won + f.account_lost
        return (
            f"account won {f.account_won} of {_plural(n, 'past deal')}"
            if n
            else "no closed deals at the account yet"
        )
    if group == "agent":
        if not f.agent:
            return "no agent on the deal"
        n = f.agent_won + f.agent_lost
        if not n:
            return f"agent {f.agent} has no closed deals yet"
        return f"agent {f.agent} won {f.agent_won} of {_plural(n, 'past deal')}"
    if group == "product":
        price = f" (list price {f.list_price:,.0f})" if f.list_price else ""
        known = "" if f.product_id in space.products else ", not seen in training"
        return f"product {f.product_id}{price}{known}"
    if group == "sector":
        return f"sector {f.sector}" if f.sector else "sector unknown"
    if group == "account_size":
        parts = []
        if f.employees is not None:
            parts.append(f"{f.employees:,} employees")
        if f.revenue_musd is not None:
            parts.append(f"revenue {f.revenue_musd:,.0f} M")
        return "account size: " + ", ".join(parts) if parts else "account size unknown"
    if group == "last_order":
        if f.days_since_order is None:
            return "no order from the account yet"
        return f"last order {_days(f.days_since_order)} before"
    if group == "purchase_rhythm":
        if f.rhythm_days_late is None:
            return "no purchase rhythm yet (under 3 purchase days)"
        if f.rhythm_days_late >= 0:
            return f"next order {_days(f.rhythm_days_late)} overdue by the account's rhythm"
        return f"next order due in {_days(-f.rhythm_days_late)} by the account's rhythm"
    if group == "open_deals":
        return f"{_plural(f.open_deals or 0, 'other open deal')} at the account"
    if group == "quarter_end":
        return f"{_days(f.days_to_quarter_end)} to the quarter's end"
    raise ValueError(f"no description for feature group {group!r}")


def _value(group: str, f: DealFeatures, space: _FeatureSpace) -> float | str | None:
    values: dict[str, float | str | None] = {
        "account_history": space.rate(f.account_won, f.account_lost) if f.has_account else None,
        "agent": space.rate(f.agent_won, f.agent_lost) if f.agent else None,
        "product": f.product_id,
        "sector": f.sector,
        "account_size": float(f.employees) if f.employees is not None else None,
        "last_order": f.days_since_order,
        "purchase_rhythm": f.rhythm_days_late,
        "open_deals": float(f.open_deals) if f.open_deals is not None else None,
        "quarter_end": f.days_to_quarter_end,
    }
    return values[group]


def _signal_type(group: str, f: DealFeatures, default: str | None) -> str | None:
    if group == "purchase_rhythm" and f.rhythm_days_late is not None and f.rhythm_days_late < 0:
        return "purchase_rhythm_due"
    return default


def explain(score: WinScore, top: int = 3) -> str:
    """One line a rep reads: the chance, what raised it and what lowered it most."""
    up = [c for c in score.contributions if c.log_odds > 0.005][:top]
    down = [c for c in score.contributions if c.log_odds < -0.005][:top]

    def said(items: list[Contribution]) -> str:
        return "; ".join(
            f"{c.name} ({c.log_odds:+.2f}{'' if c.learned else ', prior'})" for c in items
        )

    parts = [f"{score.win_likelihood:.0%} to win"]
    if up:
        parts.append(f"raised by {said(up)}")
    if down:
        parts.append(f"lowered by {said(down)}")
    return ", ".join(parts)
