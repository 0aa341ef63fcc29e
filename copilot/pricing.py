"""How the chance of a deal moves with the discount, and how deep won deals were discounted.

The win-versus-discount curve is learned from price negotiations between people
(CraigslistBargain, ingested as calls with ``extra.dataset == "craigslist"``; the
seller is our rep). Each dialogue gives one data point ``(discount, accepted)``:

* a deal: ``discount = 1 - final_price / list_price``, ``accepted = 1``;
* no deal: the discount of the seller's last price, ``accepted = 0``: the buyer
  walked away from that price. The last price is the seller's last formal offer
  (a ``[OFFER] 2900`` turn), else the last amount the seller wrote in a message
  that lies between ``MIN_PRICE_SHARE`` and ``1 + MAX_PREMIUM`` times the list
  price (numbers outside it are years, sizes, counts), else the list price itself
  (the seller never came down). Digits are read in any script; words for
  numbers ("two thousand", "两千") are not, and such a talk counts as held at list.
* a no-deal in which neither side named a price is left out: it is a talk
  abandoned before any haggling (greetings, a question, a quit), not a buyer
  turning down the list price (counted at discount 0, these 37 of the 451
  dialogues steepened the slope from 10.4 to 14.4 log-odds).
* a price more than ``MAX_PREMIUM`` above the list price is a typo in the listing
  or the offer (22295 for a 2495 flat) and is left out.

``accepted ~ discount`` is fitted by logistic regression (sklearn, unpenalised):
monotone by its form, with the sign learned. A bootstrap over dialogues gives the
interval of the win probability at each discount.

What the curve means, and what it does not: it is the share of negotiations that
closed among those that *ended* at a given discount. The discount of a deal is where
the haggling stopped, not a price the seller chose in advance; a no-deal's price is
only the seller's last word. Buyers who aim low walk away more often at any
discount (with the buyer's private target as a control the slope steepens from 10.4
to 12.8), and the 22 no-deals where the seller never came down carry much of the
slope (without them it is 6.8). So the curve is an association in consumer
haggling, uncertain in steepness, not the effect of offering a discount to a
business customer. Quotes use its ``lift`` (log-odds change from discount 0) as a
stated prior on price sensitivity, added to the account's own win likelihood.

Won-deal discounts (``won_discounts``) are the other half of the evidence: how far
this team's won deals of each product went below the list price, so a quote can
say that its discount is deeper than 90 % of them.

Figures on the real data: ``tests/bench/bench_pricing.py`` (see docs/quote-strategies.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression

from copilot.context import Opportunity, Product
from copilot.errors import StateError
from copilot.schemas import CallRecord, Turn

logger = logging.getLogger(__name__)

CURVE_FILE = "discount_curve.json"
CURVE_DATASET = "craigslist"  # extra.dataset of the negotiations the curve is learned from
FORMAT_VERSION = 1

# The seller's formal offer move, as rag/craigslist.py writes it ("[OFFER] 2900").
OFFER_TAG = "[OFFER]"
MAX_PREMIUM = 0.2  # a deal above 1.2 x list is a typo (5 of 336 deals are above list, 2 far above)
# A number below this share of the list price in a seller's message is more often a year, a
# size or a count than a price: 95 % of the deals closed above 0.54 x list.
MIN_PRICE_SHARE = 0.4
# The curve is held flat outside the discounts the data covers: premiums extrapolate the
# fitted slope down to -10 %, deep discounts stop at the 95th percentile of the data.
MIN_SUPPORT = -0.1
SUPPORT_QUANTILE = 95
MIN_PER_CLASS = 10  # fewer deals or no-deals than this: no curve is learned (lift 0)
BOOTSTRAP = 500
SEED = 13
GRID_STEP = 0.01
REPORTED_DISCOUNTS = (0.0, 0.05, 0.1, 0.2, 0.3)

PriceSource = Literal["deal", "offer", "message", "list"]
# Amounts as written: 2900, 2,900, 2900.50, in any script's digits (re's \d is Unicode).
_AMOUNT = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?!\d)")


@dataclass(frozen=True)
class Observation:
    """One negotiation reduced to the discount it ended at and whether it closed."""

    discount: float  # 1 - price / list price (negative: above list)
    accepted: bool
    source: str = ""  # the call id
    price_from: PriceSource = "deal"


def observations_from_calls(calls: Iterable[CallRecord]) -> list[Observation]:
    """One observation per negotiation call (``extra.list_price``, ``extra.deal``,
    ``extra.final_price`` and the turns); the calls left out are logged with why."""
    return _extract(calls)[0]


def _extract(calls: Iterable[CallRecord]) -> tuple[list[Observation], Counter[str]]:
    observations: list[Observation] = []
    skipped: Counter[str] = Counter()
    for call in calls:
        extra = call.extra or {}
        list_price = _number(extra.get("list_price"))
        deal = extra.get("deal")
        if list_price is None or list_price <= 0 or not isinstance(deal, bool):
            skipped["no list price or deal flag"] += 1
            continue
        if deal:
            final = _number(extra.get("final_price"))
            if final is None:
                skipped["deal without a final price"] += 1
                continue
            price, price_from = final, "deal"
        else:
            price, price_from = last_seller_price(call.turns, list_price)
            if (
                price_from == "list"
                and last_named_price(call.turns, "customer", list_price) is None
            ):
                # Nobody named a price: a talk abandoned before any haggling (most of these
                # are 2-5 turns long), not a buyer turning down the list price.
                skipped["no-deals where no price was named"] += 1
                continue
        discount = 1.0 - price / list_price
        if discount < -MAX_PREMIUM:
            skipped[f"price over {1 + MAX_PREMIUM:g} x list"] += 1
            continue
        observations.append(Observation(discount, deal, call.call_id, price_from))
    if skipped:
        logger.warning(
            "negotiations left out of the discount curve: %s",
            ", ".join(f"{n} {why}" for why, n in skipped.items()),
        )
    return observations, skipped


def last_seller_price(turns: Iterable[Turn], list_price: float) -> tuple[float, PriceSource]:
    """The last price the rep (seller) named: a formal offer, else an amount in a message
    within the plausible range, else the list price."""
    named = last_named_price(turns, "rep", list_price)
    return named if named is not None else (list_price, "list")


def last_named_price(
    turns: Iterable[Turn], speaker: str, list_price: float
) -> tuple[float, PriceSource] | None:
    """The last price ``speaker`` named (formal offer or plausible amount), or None."""
    named: tuple[float, PriceSource] | None = None
    low, high = MIN_PRICE_SHARE * list_price, (1 + MAX_PREMIUM) * list_price
    for turn in turns:
        if turn.speaker != speaker:
            continue
        text = turn.text.strip()
        if text.startswith(OFFER_TAG):
            offered = _number(text[len(OFFER_TAG) :].strip())
            if offered is not None and offered > 0:
                named = (offered, "offer")
            continue
        if text.startswith("["):
            continue  # the other moves ([ACCEPT], [REJECT], [QUIT]) name no price
        amounts = [a for a in _amounts(text) if low <= a <= high]
        if amounts:
            named = (amounts[-1], "message")
    return named


def _amounts(text: str) -> list[float]:
    amounts = []
    for match in _AMOUNT.finditer(text):
        whole = match.group(1).replace(",", "")
        amounts.append(float(f"{whole}.{match.group(2)}" if match.group(2) else whole))
    return amounts


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def observations_hash(observations: Iterable[Observation]) -> str:
    """A fingerprint of the data a curve was fitted on (order does not matter)."""
    rows = sorted(f"{o.source}|{o.discount:.6f}|{int(o.accepted)}" for o in observations)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _sigmoid(x: float | np.ndarray) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


def _fit_line(discounts: np.ndarray, accepted: np.ndarray) -> tuple[float, float]:
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(discounts.reshape(-1, 1), accepted)
    return float(model.intercept_[0]), float(model.coef_[0, 0])


@dataclass(frozen=True)
class DiscountCurve:
    """P(deal | discount) = sigmoid(intercept + slope * discount), discount in [0, 1)."""

    intercept: float
    slope: float  # log-odds per unit of discount (0.1 = 10 % off moves it by slope / 10)
    support: tuple[float, float]  # discounts outside are clipped to this range
    n_dialogues: int
    n_observations: int
    n_accepted: int
    data_hash: str
    fitted: bool = True  # False: too few negotiations, the curve is flat (lift 0)
    reason: str | None = None
    slope_interval: tuple[float, float] | None = None  # bootstrap 95 %
    grid: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)  # bootstrap 2.5 % of win_probability on grid
    high: list[float] = field(default_factory=list)  # and 97.5 %
    bootstrap: int = 0
    price_sources: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)  # dialogues not used, by reason
    fitted_at: str = ""

    # --- fitting -----------------------------------------------------------------

    @classmethod
    def from_calls(
        cls, calls: Iterable[CallRecord], bootstrap: int = BOOTSTRAP, seed: int = SEED
    ) -> DiscountCurve:
        """Fit on stored negotiation calls (see the module docstring for the data points)."""
        calls = list(calls)
        observations, left_out = _extract(calls)
        curve = cls.fit(observations, bootstrap, seed, n_dialogues=len(calls))
        return replace(curve, left_out=dict(left_out))

    @classmethod
    def fit(
        cls,
        observations: Iterable[Observation],
        bootstrap: int = BOOTSTRAP,
        seed: int = SEED,
        n_dialogues: int | None = None,
    ) -> DiscountCurve:
        """Logistic fit of accepted on discount, with a bootstrap interval over observations.

        With fewer than ``MIN_PER_CLASS`` deals or no-deals nothing can be learned: the
        curve comes back flat (``fitted`` False, ``reason`` says why), so quotes still work
        and say that the discount did not move their win likelihood.
        """
        observations = list(observations)
        discounts = np.array([o.discount for o in observations], dtype=float)
        accepted = np.array([int(o.accepted) for o in observations], dtype=int)
        n_yes = int(accepted.sum())
        n_no = len(observations) - n_yes
        common = {
            "n_dialogues": n_dialogues if n_dialogues is not None else len(observations),
            "n_observations": len(observations),
            "n_accepted": n_yes,
            "data_hash": observations_hash(observations),
            "price_sources": dict(Counter(o.price_from for o in observations)),
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if min(n_yes, n_no) < MIN_PER_CLASS:
            reason = (
                f"only {n_yes} deals and {n_no} no-deals among the stored negotiations; the "
                f"curve needs {MIN_PER_CLASS} of each (ingest "
                "../shared/data/negotiation/craigslist to learn it)"
            )
            logger.warning("discount curve not learned: %s", reason)
            rate = (n_yes + 1) / (len(observations) + 2)  # Laplace: defined for 0 observations
            return cls(
                intercept=math.log(rate / (1 - rate)),
                slope=0.0,
                support=(0.0, 0.0),
                fitted=False,
                reason=reason,
                **common,
            )

        intercept, slope = _fit_line(discounts, accepted)
        high_support = float(np.percentile(discounts, SUPPORT_QUANTILE))
        support = (MIN_SUPPORT, max(high_support, 0.0))
        grid = np.round(np.arange(support[0], support[1] + GRID_STEP / 2, GRID_STEP), 4)

        # Bootstrap over negotiations: the spread of the fitted probability at each discount
        rng = np.random.default_rng(seed)
        curves, slopes = [], []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(observations), len(observations))
            if accepted[pick].min() == accepted[pick].max():
                continue  # one class only: no fit
            b0, b1 = _fit_line(discounts[pick], accepted[pick])
            slopes.append(b1)
            curves.append(_sigmoid(b0 + b1 * grid))
        low = np.percentile(curves, 2.5, axis=0) if curves else np.full_like(grid, np.nan)
        high = np.percentile(curves, 97.5, axis=0) if curves else np.full_like(grid, np.nan)
        curve = cls(
            intercept=intercept,
            slope=slope,
            support=support,
            slope_interval=(
                (float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5)))
                if slopes
                else None
            ),
            grid=[float(g) for g in grid],
            low=[round(float(v), 6) for v in low],
            high=[round(float(v), 6) for v in high],
            bootstrap=len(curves),
            **common,
        )
        logger.info(
            "discount curve fitted on %d negotiations (%d deals): P(deal) %.2f at list, "
            "%.2f at 10 %% off; slope %.2f log-odds per unit discount",
            len(observations),
            n_yes,
            curve.win_probability(0.0),
            curve.win_probability(0.1),
            slope,
        )
        return curve

    # --- reading -----------------------------------------------------------------

    def _clip(self, discount: float) -> float:
        lo, hi = self.support
        return min(max(float(discount), lo), hi)

    def win_probability(self, discount: float) -> float:
        """The share of negotiations that closed at this discount (0.1 = 10 % off list)."""
        return float(_sigmoid(self.intercept + self.slope * self._clip(discount)))

    def lift(self, discount: float) -> float:
        """Log-odds change of a deal at ``discount`` relative to discount 0."""
        return self.slope * (self._clip(discount) - self._clip(0.0))

    def interval(self, discount: float) -> tuple[float, float] | None:
        """The bootstrap 95 % interval of ``win_probability``; None for a flat curve."""
        if not self.grid:
            return None
        d = min(max(float(discount), self.grid[0]), self.grid[-1])
        return float(np.interp(d, self.grid, self.low)), float(np.interp(d, self.grid, self.high))

    def is_current(self, calls: Iterable[CallRecord]) -> bool:
        """Whether the curve was fitted on exactly these negotiations (else refit it)."""
        return observations_hash(observations_from_calls(calls)) == self.data_hash

    def summary(self) -> dict[str, Any]:
        """The figures shown beside a quote: the curve at a few discounts, and its data."""
        points = []
        for d in REPORTED_DISCOUNTS:
            interval = self.interval(d)
            points.append(
                {
                    "discount": d,
                    "win_probability": round(self.win_probability(d), 4),
                    "interval": [round(v, 4) for v in interval] if interval else None,
                    "lift": round(self.lift(d), 4),
                }
            )
        return {
            "fitted": self.fitted,
            "reason": self.reason,
            "slope": round(self.slope, 4),
            "slope_interval": (
                [round(v, 4) for v in self.slope_interval] if self.slope_interval else None
            ),
            "support": list(self.support),
            "n_dialogues": self.n_dialogues,
            "n_observations": self.n_observations,
            "n_accepted": self.n_accepted,
            "left_out": self.left_out,
            "data_hash": self.data_hash,
            "points": points,
        }

    # --- persistence -------------------------------------------------------------

    def save(self, path: Path) -> None:
        payload = {"format": FORMAT_VERSION, **asdict(self)}
        Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> DiscountCurve:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise StateError(
                f"no discount curve at {path}; it is fitted from the stored negotiations "
                "(ingest ../shared/data/negotiation/craigslist)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise StateError(f"{path} is not valid JSON; delete it to refit the curve") from exc
        if not isinstance(payload, dict) or payload.pop("format", None) != FORMAT_VERSION:
            raise StateError(
                f"{path} is not a discount curve of format {FORMAT_VERSION}; delete it to refit"
            )
        try:
            payload["support"] = tuple(payload["support"])
            if payload.get("slope_interval") is not None:
                payload["slope_interval"] = tuple(payload["slope_interval"])
            return cls(**payload)
        except (KeyError, TypeError) as exc:
            raise StateError(f"{path} is not a complete discount curve ({exc}); delete it") from exc


def curve_path(models_dir: Path) -> Path:
    return Path(models_dir) / CURVE_FILE


# --- discounts of won deals in the CRM ------------------------------------------------


@dataclass(frozen=True)
class WonDiscounts:
    """Realised discounts of one product's won deals (1 - deal value / list price)."""

    product_id: str
    discounts: tuple[float, ...]  # sorted ascending

    @property
    def deals(self) -> int:
        return len(self.discounts)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.discounts, q))

    def share_shallower(self, discount: float) -> float:
        """The share of won deals discounted less than ``discount``."""
        return float(np.searchsorted(self.discounts, discount, side="left")) / self.deals

    def to_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "deals": self.deals,
            **{f"p{q}": round(self.percentile(q), 4) for q in (10, 25, 50, 75, 90)},
        }


def _folded(name: str) -> str:
    # "GTXPro" in the pipeline is "GTX Pro" in the price list: spacing and case are not meaning.
    return "".join(name.split()).casefold()


def won_discounts(
    opportunities: Iterable[Opportunity],
    products: Mapping[str, Product] | Iterable[Product],
    aliases: Mapping[str, str] | None = None,
) -> dict[str, WonDiscounts]:
    """Per product id, the discounts of its won opportunities against its list price.

    An opportunity's value is taken as the price of one unit (the CRM has no
    quantities). Products are matched by id, an alias, or by the id with spacing and
    case ignored; won deals of products not in the price list are counted and skipped.
    """
    catalogue = (
        dict(products) if isinstance(products, Mapping) else {p.product_id: p for p in products}
    )
    by_folded = {_folded(pid): pid for pid in catalogue}
    aliases = dict(aliases or {})
    found: dict[str, list[float]] = {}
    unmatched: Counter[str] = Counter()
    for opp in opportunities:
        if opp.stage != "won" or opp.value is None or opp.value <= 0:
            continue
        pid = aliases.get(opp.product_id, opp.product_id)
        pid = pid if pid in catalogue else by_folded.get(_folded(pid), pid)
        product = catalogue.get(pid)
        if product is None or product.currency != opp.currency:
            unmatched[opp.product_id] += 1
            continue
        found.setdefault(pid, []).append(1.0 - opp.value / product.list_price)
    if unmatched:
        logger.warning(
            "won deals without a price-list product in the same currency (skipped): %s",
            ", ".join(f"{pid} x{n}" for pid, n in unmatched.most_common(5)),
        )
    return {pid: WonDiscounts(pid, tuple(sorted(d))) for pid, d in found.items()}
