"""Three quote strategies that differ in kind, each inside the hard limits.

* ``value_premium``: at list (or ``premium_uplift`` over it), sold on value: the
  price held for ``price_lock_months``, the configured ``value_terms`` (warranty,
  support) and first call on the units in stock.
* ``volume_term``: ``volume_discount`` off for ``volume_quantity_factor`` times the
  quantity asked (less when a known budget would not hold it), and the same unit
  price on repeat orders over a ``term_months`` commitment.
* ``phased_bundle``: delivered in phases as stock, incoming units and
  replenishment allow, invoiced per phase, with a complementary product from the
  price list, all at ``bundle_discount``.

Hard limits, never broken: no unit price below the product's floor
(``max(margin_floor, unit_cost * (1 + min_margin))`` when the unit cost is known,
else the margin floor; a product with neither is refused); no units promised
beyond what is on hand now, incoming at its ETA, and replenished after the lead
time; a total over a known budget (an open budget window's amount, a live
tender's budget) is marked ``within_budget=False`` with a risk reason, never
hidden; no discount deeper than ``max_discount``.

When the floor, ``max_discount`` or whole cents set a line's price, the strategy's title,
terms and rationale say the price it got and why ("F is priced at the floor 150.00, 50.0%
above list 100.00, not at 8% off list"); the planned discount is claimed only for the lines
that got it.

Win likelihood: the account's base likelihood (the win model) moved in log-odds
by ``curve.lift(discount)``, the discount curve learned from negotiations
(copilot/pricing.py). That assumes the price sensitivity seen there carries over
to this account; every rationale says so.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from copilot.context import AccountContext, CompetitorPrice, Product, StockLevel
from copilot.errors import InputError, NotFoundError, StateError
from copilot.pricing import DiscountCurve, WonDiscounts
from copilot.schemas import Delivery, QuoteLine, QuoteStrategy, TalkingPoint
from copilot.settings import QuoteSettings

logger = logging.getLogger(__name__)

STRATEGIES = ("value_premium", "volume_term", "phased_bundle")
LIVE_TENDER = ("announced", "open")
MIN_WON_DEALS = 5  # fewer won deals of a product say nothing about its usual discount
_EDGE = 1e-6  # keeps log-odds finite for a base likelihood of exactly 0 or 1

# Called once per quote, so it can budget its time over all strategies: one list of points
# per strategy, in their order.
TalkingPoints = Callable[[list[QuoteStrategy], AccountContext], list[list[TalkingPoint]]]


@dataclass(frozen=True)
class Budget:
    amount: float
    currency: str
    source: str  # what it is, for the risk reason


@dataclass
class _Risks:
    reasons: list[tuple[str, str]]  # (severity "high" | "medium", text)

    def add(self, severity: str, text: str) -> None:
        self.reasons.append((severity, text))

    def level(self) -> str:
        severities = {s for s, _ in self.reasons}
        return "high" if "high" in severities else "medium" if severities else "low"


def quote_strategies(
    ctx: AccountContext,
    items: list[tuple[str, int]],
    base_win_likelihood: float,
    curve: DiscountCurve,
    settings: QuoteSettings,
    won_discounts: Mapping[str, WonDiscounts] | None = None,
    talking_points: TalkingPoints | None = None,
) -> list[QuoteStrategy]:
    """value_premium, volume_term and phased_bundle for ``items`` (product id, quantity).

    ``talking_points(strategies, ctx)`` (serve/talking_points.py) adds points citing won
    calls, a list per strategy; if it fails, the quote is returned without them.
    """
    requested = _checked_items(ctx, items)
    if not 0.0 <= base_win_likelihood <= 1.0:
        raise InputError(
            f"base win likelihood must be in [0, 1], got {base_win_likelihood}; pass the win "
            "model's calibrated likelihood"
        )
    floors = {pid: floor_price(ctx.products[pid], settings) for pid, _ in requested}
    currency = ctx.products[requested[0][0]].currency
    budget = known_budget(ctx, [pid for pid, _ in requested], currency)
    pricing = _Pricing(ctx, curve, settings, won_discounts or {}, base_win_likelihood, budget)

    strategies = [
        _value_premium(pricing, requested, floors),
        _volume_term(pricing, requested, floors),
        _phased_bundle(pricing, requested, floors),
    ]
    if talking_points is None:
        return strategies
    try:
        points = [list(each) for each in talking_points(strategies, ctx)]
        if len(points) != len(strategies):
            raise ValueError(f"{len(points)} lists of points for {len(strategies)} strategies")
    except Exception:  # talking points are an extra: a failing model must not lose the quote
        logger.warning("talking points failed; quoting without them")
        logger.debug("talking points failure", exc_info=True)
        return strategies
    return [replace(s, talking_points=p) for s, p in zip(strategies, points, strict=True)]


# --- the limits ----------------------------------------------------------------------


def _checked_items(ctx: AccountContext, items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if not items:
        raise InputError("a quote needs at least one (product id, quantity) item")
    seen: set[str] = set()
    for product_id, quantity in items:
        if product_id not in ctx.products:
            known = ", ".join(sorted(ctx.products)) or "none (import a price list first)"
            raise NotFoundError(f"unknown product '{product_id}'; known product ids: {known}")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise InputError(
                f"quantity of '{product_id}' must be a whole number of at least 1, got {quantity!r}"
            )
        if product_id in seen:
            raise InputError(
                f"product '{product_id}' is listed twice; give it once with the total quantity"
            )
        seen.add(product_id)
    currencies = {ctx.products[pid].currency for pid, _ in items}
    if len(currencies) > 1:
        raise InputError(
            f"the products are priced in {', '.join(sorted(currencies))}; a quote is in one "
            "currency, so quote each currency's products separately"
        )
    return list(items)


def floor_price(product: Product, settings: QuoteSettings) -> float:
    """The lowest unit price allowed: the margin floor, raised to cost plus ``min_margin``;
    in whole cents, rounded up, so a price in cents compares with it exactly."""
    if product.unit_cost is not None:
        floor = max(product.margin_floor or 0.0, product.unit_cost * (1 + settings.min_margin))
        return _ceil_cents(floor)
    if product.margin_floor is not None:
        return _ceil_cents(product.margin_floor)
    raise StateError(
        f"product '{product.product_id}' has neither a unit cost nor a margin floor, so no "
        "price can be checked against a floor; import a price list with unit_cost or "
        "margin_floor for it"
    )


def _floor_or_none(product: Product, settings: QuoteSettings) -> float | None:
    try:
        return floor_price(product, settings)
    except StateError:
        return None


def plan_deliveries(
    product: Product,
    quantity: int,
    stock: StockLevel | None,
    as_of: datetime,
    default_lead_time_days: int,
) -> list[Delivery]:
    """What can ship when: on hand now, incoming at its ETA, the rest after the lead time.

    Incoming units without an ETA are not counted on: nobody can say when they come.
    """
    lead = next(
        days
        for days in (
            stock.lead_time_days if stock is not None else None,
            product.lead_time_days,
            default_lead_time_days,
        )
        if days is not None
    )
    deliveries: list[Delivery] = []
    left = quantity
    if stock is not None and stock.on_hand > 0:
        take = min(left, stock.on_hand)
        deliveries.append(Delivery(take, as_of.date().isoformat(), "on_hand"))
        left -= take
    if left and stock is not None and stock.incoming > 0 and stock.incoming_eta is not None:
        take = min(left, stock.incoming)
        arrives = max(stock.incoming_eta, as_of)
        deliveries.append(Delivery(take, arrives.date().isoformat(), "incoming"))
        left -= take
    if left:
        restocked = (as_of + timedelta(days=lead)).date().isoformat()
        deliveries.append(Delivery(left, restocked, "replenishment"))
    return sorted(deliveries, key=lambda d: d.date)


def known_budget(ctx: AccountContext, product_ids: list[str], currency: str) -> Budget | None:
    """The tightest known budget: an open budget window's amount or a live tender's budget
    (one that names these products, or names none)."""
    budgets: list[Budget] = []
    for window in ctx.budget_windows:
        if window.amount is not None and window.opens <= ctx.as_of <= window.closes:
            budgets.append(
                Budget(
                    window.amount,
                    window.currency,
                    f"budget window {window.window_id} (closes {window.closes.date()})",
                )
            )
    for tender in ctx.tenders:
        covers = not tender.product_ids or set(tender.product_ids) & set(product_ids)
        if (
            tender.budget is not None
            and tender.status in LIVE_TENDER
            and tender.deadline >= ctx.as_of
            and covers
        ):
            budgets.append(
                Budget(
                    tender.budget,
                    tender.currency,
                    f"tender {tender.tender_id} '{tender.title}' (deadline {tender.deadline.date()})",
                )
            )
    other = [b for b in budgets if b.currency != currency]
    if other:
        logger.warning(
            "%s: %d budgets in another currency than %s are not compared (no conversion)",
            ctx.account.account_id,
            len(other),
            currency,
        )
    same = [b for b in budgets if b.currency == currency]
    return min(same, key=lambda b: b.amount) if same else None


def _latest_competitor_prices(ctx: AccountContext, product_id: str, currency: str):
    latest: dict[str, CompetitorPrice] = {}
    for seen in ctx.competitor_prices:
        if seen.product_id != product_id or seen.currency != currency:
            continue
        known = latest.get(seen.competitor.casefold())
        # an observation at this account beats a market one of the same competitor
        rank = (seen.account_id is not None, seen.time)
        if known is None or rank > (known.account_id is not None, known.time):
            latest[seen.competitor.casefold()] = seen
    return sorted(latest.values(), key=lambda p: p.unit_price)


# --- pricing a strategy ----------------------------------------------------------------


def _cents(value: float) -> float:
    return round(value + 0.0, 2)


def _ceil_cents(value: float) -> float:
    # round first so that 12.3 * 100 = 1230.0000000000002 does not become 12.31
    return math.ceil(round(value * 100, 6)) / 100


def _logit(p: float) -> float:
    p = min(max(p, _EDGE), 1 - _EDGE)
    return math.log(p / (1 - p))


@dataclass
class _Pricing:
    ctx: AccountContext
    curve: DiscountCurve
    settings: QuoteSettings
    won: Mapping[str, WonDiscounts]
    base: float
    budget: Budget | None

    def line(self, product_id: str, quantity: int, discount: float, floor: float) -> QuoteLine:
        product = self.ctx.products[product_id]
        discount = min(discount, self.settings.max_discount)
        # rounding to cents must not take the price under the floor or past max_discount
        deepest = _ceil_cents(product.list_price * (1 - self.settings.max_discount))
        unit = max(_cents(product.list_price * (1 - discount)), floor, deepest)
        return QuoteLine(
            product_id=product_id,
            quantity=quantity,
            list_price=product.list_price,
            unit_price=unit,
            discount=round(1 - unit / product.list_price, 6),
            floor_price=floor,
            deliveries=plan_deliveries(
                product,
                quantity,
                self.ctx.stock.get(product_id),
                self.ctx.as_of,
                self.settings.default_lead_time_days,
            ),
        )

    def total(self, lines: list[QuoteLine]) -> float:
        return _cents(sum(line.unit_price * line.quantity for line in lines))

    def strategy(
        self, name: str, title: str, lines: list[QuoteLine], terms: list[str], notes: list[str]
    ) -> QuoteStrategy:
        ctx, currency = self.ctx, self.ctx.products[lines[0].product_id].currency
        total = self.total(lines)
        list_value = sum(line.list_price * line.quantity for line in lines)
        discount = round(1 - total / list_value, 6)
        risks = _Risks([])
        notes = list(notes)

        # Margin: the unit cost where known, else the floor stands in for it
        cost = 0.0
        for line in lines:
            product = ctx.products[line.product_id]
            if product.unit_cost is not None:
                cost += product.unit_cost * line.quantity
            else:
                cost += line.floor_price * line.quantity
                notes.append(
                    f"{line.product_id} has no unit cost: its margin is counted against the "
                    f"floor price {line.floor_price:,.2f}, so the true margin is likely higher"
                )
        # Round only what is shown: at 0.01 a unit, a cost of 0.001 is a tenth of the price
        unrounded = total - cost
        margin_value = round(unrounded, 2)
        margin = round(unrounded / total, 6) if total else 0.0

        # Win likelihood: the account's base, moved by the curve's lift at this discount
        lift = self.curve.lift(discount)
        win = round(1 / (1 + math.exp(-(_logit(self.base) + lift))), 6)
        if self.curve.fitted:
            notes.append(
                f"win likelihood {win:.0%}: the account's {self.base:.0%} moved by {lift:+.2f} "
                f"log-odds at {_vs_list(discount)}, from the discount curve of "
                f"{self.curve.n_dialogues} consumer price negotiations; this assumes their "
                "price sensitivity carries over to this account"
            )
        else:
            notes.append(
                f"win likelihood {win:.0%} is the account's own: the discount curve is not "
                f"learned ({self.curve.reason}), so the discount does not move it"
            )

        for line in lines:
            self._line_risks(line, currency, risks, notes)

        # Budget: over a known one is always said, never hidden
        within_budget: bool | None = None
        if self.budget is not None:
            within_budget = total <= self.budget.amount + 1e-9
            if not within_budget:
                risks.add(
                    "high",
                    f"total {total:,.2f} {currency} is over the known budget of "
                    f"{self.budget.amount:,.2f} {currency} ({self.budget.source})",
                )
            else:
                notes.append(
                    f"within the known budget of {self.budget.amount:,.2f} {currency} "
                    f"({self.budget.source})"
                )

        return QuoteStrategy(
            name=name,
            title=title,
            lines=lines,
            unit_price=lines[0].unit_price,
            discount=discount,
            terms=terms,
            total=total,
            currency=currency,
            margin=margin,
            margin_value=margin_value,
            win_likelihood=win,
            expected_margin_value=round(win * unrounded, 2),
            risk=risks.level(),
            risk_reasons=[text for _, text in risks.reasons],
            rationale="; ".join(notes) + ".",
            within_budget=within_budget,
        )

    def _line_risks(self, line: QuoteLine, currency: str, risks: _Risks, notes: list[str]):
        ctx, pid = self.ctx, line.product_id

        won = self.won.get(pid)
        if won is not None and won.deals >= MIN_WON_DEALS:
            usual = won.percentile(self.settings.won_discount_percentile)
            if line.discount > usual:
                risks.add(
                    "medium",
                    f"{pid} at {_vs_list(line.discount)} is deeper than "
                    f"{won.share_shallower(line.discount):.0%} of its {won.deals} won deals "
                    f"(their {self.settings.won_discount_percentile:g}th percentile is "
                    f"{usual:.1%})",
                )

        rivals = _latest_competitor_prices(ctx, pid, currency)
        if rivals:
            cheapest = rivals[0]
            if line.unit_price > cheapest.unit_price:
                risks.add(
                    "medium",
                    f"{pid} at {line.unit_price:,.2f} is "
                    f"{line.unit_price / cheapest.unit_price - 1:.0%} above {cheapest.competitor}'s "
                    f"{cheapest.unit_price:,.2f} (seen {cheapest.time.date()})",
                )
            else:
                notes.append(
                    f"{pid} at {line.unit_price:,.2f} is at or below every known competitor "
                    f"price (cheapest: {cheapest.competitor} at {cheapest.unit_price:,.2f})"
                )

        product = ctx.products[pid]
        if line.unit_price > product.list_price and line.floor_price > product.list_price:
            risks.add(
                "medium",
                f"{pid}'s floor {line.floor_price:,.2f} is above its list price "
                f"{product.list_price:,.2f}: the price list needs a look",
            )
        stock_lead = ctx.stock[pid].lead_time_days if pid in ctx.stock else None
        if stock_lead is None and product.lead_time_days is None:
            risks.add(
                "medium",
                f"no lead time is known for {pid} (stock record or price list): units beyond "
                f"stock assume replenishment in the default "
                f"{self.settings.default_lead_time_days} days",
            )

        last = line.deliveries[-1].date
        for tender in ctx.tenders:
            covers = not tender.product_ids or pid in tender.product_ids
            deadline = tender.deadline.date().isoformat()
            if tender.status in LIVE_TENDER and covers and ctx.as_of <= tender.deadline:
                if last > deadline:
                    late = sum(d.quantity for d in line.deliveries if d.date > deadline)
                    risks.add(
                        "high",
                        f"{late} units of {pid} arrive after the deadline of tender "
                        f"{tender.tender_id} '{tender.title}' ({deadline}); the last on {last}",
                    )


def _delivery_text(line: QuoteLine) -> str:
    return ", ".join(
        f"{d.quantity} on {d.date} ({d.source.replace('_', ' ')})" for d in line.deliveries
    )


# --- what a quote says about its prices -------------------------------------------------
# A strategy plans one discount (a premium is a negative one), but the floor, max_discount
# and whole cents decide the price. Its title, terms and rationale state the plan only for
# lines that got it, and the price each other line got, and why.


def _shown(rate: float) -> str:
    """A rate as a quote shows it, to 0.1 %: 0.0745 -> "7.5%" (never "-0.0%")."""
    text = f"{rate:.1%}"
    return "0.0%" if text == "-0.0%" else text


def _rate(rate: float) -> str:
    """A configured rate: 0.08 -> "8%", 0.075 -> "7.5%"."""
    return _shown(rate).replace(".0%", "%")


def _vs_list(discount: float) -> str:
    """A discount as given: "8.0% off list", "50.0% above list" or "list price"."""
    if _shown(discount) == "0.0%":
        return "list price"
    if discount > 0:
        return f"{_shown(discount)} off list"
    return f"{_shown(-discount)} above list"


def _planned(rate: float) -> str:
    """A planned discount: "8% off list", "10% above list" or "list price"."""
    if rate > 0:
        return f"{_rate(rate)} off list"
    return f"{_rate(-rate)} above list" if rate < 0 else "list price"


def _weighted_discount(lines: list[QuoteLine]) -> float:
    paid = sum(line.unit_price * line.quantity for line in lines)
    return 1 - paid / sum(line.list_price * line.quantity for line in lines)


@dataclass(frozen=True)
class _Adjusted:
    """A line priced otherwise than its strategy planned."""

    price: str  # "the floor 150.00, 50.0% above list 100.00"
    reason: str  # besides the floor, which ``price`` names: the cap or whole cents
    at_floor: bool


def _adjusted(line: QuoteLine, planned: float, settings: QuoteSettings) -> _Adjusted | None:
    """None when the line got the planned discount, as far as a quote shows (0.1 %)."""
    capped = planned > settings.max_discount + 1e-9
    if not capped and _shown(line.discount) == _shown(planned):
        return None
    against_list = f"{_vs_list(line.discount)} {line.list_price:,.2f}"
    target = _cents(line.list_price * (1 - min(planned, settings.max_discount)))
    if line.unit_price == line.floor_price and line.floor_price > target:
        return _Adjusted(f"the floor {line.floor_price:,.2f}, {against_list}", "", True)
    if capped:
        reason = f"max_discount is {_rate(settings.max_discount)}"
    else:
        reason = "prices are in whole cents"
    return _Adjusted(f"{line.unit_price:,.2f}, {against_list}", reason, False)


def _adjustments(
    lines: list[QuoteLine], planned: float, settings: QuoteSettings, notes: list[str]
) -> dict[str, _Adjusted]:
    """The lines not at the planned discount, each said in ``notes``."""
    adjusted = {}
    for line in lines:
        found = _adjusted(line, planned, settings)
        if found is None:
            continue
        adjusted[line.product_id] = found
        why = f": {found.reason}" if found.reason else ""
        notes.append(
            f"{line.product_id} is priced at {found.price}, not at {_planned(planned)}{why}"
        )
    return adjusted


def _value_premium(p: _Pricing, requested, floors) -> QuoteStrategy:
    s = p.settings
    planned = -s.premium_uplift
    lines = [p.line(pid, q, planned, floors[pid]) for pid, q in requested]
    terms = []
    if s.price_lock_months:
        terms.append(f"unit price held for {s.price_lock_months} months")
    terms.extend(s.value_terms)
    for line in lines:
        terms.append(f"priority allocation of {line.product_id}: {_delivery_text(line)}")

    adjustments: list[str] = []
    adjusted = _adjustments(lines, planned, s, adjustments)
    price = f"at {_planned(planned)}"
    if adjusted and len(adjusted) < len(lines):
        price += f" except {', '.join(adjusted)}"
    elif adjusted:
        floored = all(a.at_floor for a in adjusted.values())
        price = f"at {'the floor, ' if floored else ''}{_vs_list(_weighted_discount(lines))}"
    notes = [
        f"priced {price} and sold on value: price lock, service terms, first call on stock",
        *adjustments,
    ]
    return p.strategy("value_premium", f"Value premium ({price})", lines, terms, notes)


def _volume_term(p: _Pricing, requested, floors) -> QuoteStrategy:
    s = p.settings

    def lines_at(factor: float) -> list[QuoteLine]:
        return [
            p.line(pid, max(q, math.ceil(q * factor - 1e-9)), s.volume_discount, floors[pid])
            for pid, q in requested
        ]

    # Upsize as far as the known budget holds (never below what was asked)
    lines, budget_notes = lines_at(s.volume_quantity_factor), []
    if p.budget is not None and p.total(lines) > p.budget.amount:
        steps = 20
        factors = [1 + (s.volume_quantity_factor - 1) * k / steps for k in range(steps, -1, -1)]
        fitting = next((f for f in factors if p.total(lines_at(f)) <= p.budget.amount), None)
        if fitting is None:
            lines = lines_at(1.0)
            budget_notes.append(
                "the quantity is not raised: even the quantity asked is over budget"
            )
        else:
            lines = lines_at(fitting)
            budget_notes.append("the added volume is cut to what the known budget holds")

    # Say the planned discount only where it was given
    adjustments: list[str] = []
    adjusted = _adjustments(lines, s.volume_discount, s, adjustments)
    asked = dict(requested)
    terms = [
        f"{line.quantity} x {line.product_id} (asked: {asked[line.product_id]}) at "
        + (
            adjusted[line.product_id].price
            if line.product_id in adjusted
            else _vs_list(line.discount)
        )
        for line in lines
    ]
    terms.append(f"the same unit prices on repeat orders over a {s.term_months}-month commitment")
    terms.extend(f"{line.product_id} deliveries: {_delivery_text(line)}" for line in lines)
    if adjusted:
        offer = (
            f"more volume and a {s.term_months}-month term: {s.volume_quantity_factor:g}x the "
            f"quantity at {_vs_list(_weighted_discount(lines))}"
        )
    else:
        offer = (
            f"a deeper price for more volume and a {s.term_months}-month term: "
            f"{_rate(s.volume_discount)} off for {s.volume_quantity_factor:g}x the quantity"
        )
    notes = [offer, *budget_notes, *adjustments]
    return p.strategy("volume_term", f"Volume and {s.term_months}-month term", lines, terms, notes)


def _complement(p: _Pricing, requested) -> tuple[str, float] | None:
    """A product to bundle: one the account bought before, then one in stock for the whole
    bundle, then of the same series, then the cheapest; never dearer than the first product
    asked, and with a floor to check."""
    ctx = p.ctx
    first = ctx.products[requested[0][0]]
    wanted = requested[0][1]
    asked = {pid for pid, _ in requested}
    bought = Counter(o.product_id for o in ctx.orders)
    candidates = []
    for pid, product in ctx.products.items():
        if pid in asked or product.currency != first.currency:
            continue
        if product.list_price > first.list_price:
            continue
        floor = _floor_or_none(product, p.settings)
        if floor is None:
            continue
        held = ctx.stock.get(pid)
        in_stock = (
            held is not None
            and held.on_hand + (held.incoming if held.incoming_eta is not None else 0) >= wanted
        )
        rank = (
            -bought[pid],
            not in_stock,
            product.series != first.series or first.series is None,
            product.list_price,
            pid,
        )
        candidates.append((rank, pid, floor))
    if not candidates:
        return None
    _, pid, floor = min(candidates)
    return pid, floor


def _phased_bundle(p: _Pricing, requested, floors) -> QuoteStrategy:
    s = p.settings
    lines = [p.line(pid, q, s.bundle_discount, floors[pid]) for pid, q in requested]
    notes = []
    extra = _complement(p, requested)
    if extra is None:
        notes.append("no complementary product with a floor in the price list: phased only")
    else:
        pid, floor = extra
        # One add-on per unit of the first product, fewer if the known budget would not hold it
        wanted = requested[0][1]
        add_on = p.line(pid, wanted, s.bundle_discount, floor)
        quantity = wanted
        if p.budget is not None:
            room = p.budget.amount - p.total(lines)
            quantity = min(wanted, max(0, math.floor(room / add_on.unit_price + 1e-9)))
        if quantity == 0:
            notes.append(f"{pid} is left out of the bundle: the known budget would not hold it")
        else:
            if quantity < wanted:
                add_on = p.line(pid, quantity, s.bundle_discount, floor)
                notes.append(f"{pid} is cut to {quantity} units to stay in budget")
            lines = [*lines, add_on]
            notes.append(f"bundled with {pid}, a complementary product from the price list")

    # Phases: every distinct delivery date, invoiced on delivery
    by_date: dict[str, list[str]] = {}
    for line in lines:
        for d in line.deliveries:
            by_date.setdefault(d.date, []).append(f"{d.quantity} x {line.product_id}")
    terms = [
        f"phase {i}: {', '.join(parts)} on {date}, invoiced on delivery"
        for i, (date, parts) in enumerate(sorted(by_date.items()), start=1)
    ]

    # The bundle discount, claimed only for the lines that got it
    notes.insert(0, "phased to what stock, incoming units and replenishment can supply")
    adjusted = _adjustments(lines, s.bundle_discount, s, notes)
    discounted = [line.product_id for line in lines if line.product_id not in adjusted]
    bundle_discount = f"{_rate(s.bundle_discount)} bundle discount"
    if not adjusted:
        terms.append(f"{bundle_discount} on every line")
    elif discounted:
        terms.append(f"{bundle_discount} on {', '.join(discounted)}")
    terms.extend(f"{pid} at {a.price}" for pid, a in adjusted.items())
    return p.strategy("phased_bundle", "Phased delivery with a bundle", lines, terms, notes)
