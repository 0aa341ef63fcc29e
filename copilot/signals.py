"""Account signals: what an account's context says at ``ctx.as_of``, each fact scored with evidence.

``compute_signals`` runs one small detector per signal type over an
``AccountContext`` and nothing else, so a signal computed for a past ``as_of``
never sees a later fact. A detector whose facts are missing (no orders, no
stock row, no dated calls) returns nothing: missing data is not a signal.

    from copilot.signals import compute_signals
    signals = compute_signals(ctx, settings.signals, settings.outcomes)

Names and roles are configured text matched case-folded as substrings, so
"采购负责人" matches the role "采购" and a Chinese competitor name is found in
a Chinese sentence without word boundaries.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

from copilot.context import (
    AccountContext,
    CallNote,
    CompetitorPrice,
    ContactChange,
    Order,
    Tender,
)
from copilot.schemas import Evidence, Signal

if TYPE_CHECKING:
    from copilot.settings import OutcomeSettings, SignalSettings

logger = logging.getLogger(__name__)

# The fixed names that rules, the win model and quotes refer to, with what ``value`` holds.
SIGNAL_TYPES: dict[str, str] = {
    "purchase_rhythm_overdue": "days overdue vs the next order expected from the account's own "
    "order gaps",
    "purchase_rhythm_due": "days until the expected next order (due within "
    "signals.inactivity_days)",
    "tender_countdown": "hours until the next tender milestone / opening / deadline (within "
    "horizon)",
    "budget_window_closing": "days until an open budget window closes (within budget_closing_days)",
    "procurement_lead_changed": "days since a contact with a procurement role joined or took "
    "the role",
    "champion_departed": "days since a champion left",
    "low_stock": "units available (on hand + incoming) for a product in play",
    "high_stock": "units available, above what the account's orders usually take",
    "policy_change": "days since a policy touching the account's sector was published",
    "competitor_mentioned": "count of competitor mentions on the account's recent calls",
    "competitor_price_below": "share below our list price of the cheapest competitor price "
    "(0.12 = 12 % cheaper)",
    "unresolved_objection": "count of objections on recent calls that no later won call resolved",
    "no_activity": "days since the account's latest activity (order, deal change, call, contact)",
}

# How much each type matters when signals.weights does not say (configs/default.yaml lists
# them all). Facts with a date attached and a deal at stake weigh most.
DEFAULT_WEIGHTS: dict[str, float] = {
    "tender_countdown": 0.9,
    "champion_departed": 0.85,
    "budget_window_closing": 0.8,
    "procurement_lead_changed": 0.7,
    "competitor_price_below": 0.7,
    "unresolved_objection": 0.65,
    "purchase_rhythm_overdue": 0.6,
    "low_stock": 0.6,
    "competitor_mentioned": 0.6,
    "purchase_rhythm_due": 0.5,
    "policy_change": 0.5,
    "no_activity": 0.4,
    "high_stock": 0.3,
}

_LIVE_TENDER = ("announced", "open")
_OPEN_STAGES = ("prospecting", "engaging")
_EXCERPT_CHARS = 200
_DAY_S = 86400.0


@dataclass(frozen=True)
class _Scope:
    """What one detector sees: the context, the settings, and the type it emits."""

    ctx: AccountContext
    settings: SignalSettings
    outcomes: OutcomeSettings
    type: str

    @property
    def as_of(self) -> datetime:
        return self.ctx.as_of

    def days_since(self, time: datetime) -> float:
        return (self.as_of - time).total_seconds() / _DAY_S

    def within(self, time: datetime | None, days: float) -> bool:
        """``time`` is known, not after ``as_of`` and at most ``days`` before it."""
        return time is not None and time <= self.as_of and self.days_since(time) <= days

    def dated_calls(self) -> list[CallNote]:
        # An undated call cannot be placed before or after anything, so call signals skip it.
        calls = [c for c in self.ctx.calls if c.time is not None and c.time <= self.as_of]
        return sorted(calls, key=lambda c: (c.time, c.call_id))

    def polarity(self, call: CallNote) -> int:
        # The outcome label is the fact; the note's polarity is what it meant to whoever built it.
        return self.outcomes.polarity(call.outcome) if call.outcome else call.polarity

    def product_name(self, product_id: str) -> str:
        product = self.ctx.products.get(product_id)
        return product.name if product else product_id

    def emit(
        self,
        *,
        value: float,
        unit: str,
        time: datetime,
        direction: int,
        summary: str,
        evidence: list[Evidence],
        product_id: str | None = None,
    ) -> Signal:
        return Signal(
            type=self.type,
            account_id=self.ctx.account.account_id,
            value=value,
            unit=unit,
            time=iso(time),
            weight=self.settings.weights.get(self.type, DEFAULT_WEIGHTS[self.type]),
            direction=direction,
            summary=summary,
            evidence=evidence,
            product_id=product_id,
        )


def iso(time: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: 2018-01-08T09:00:00Z."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _num(x: float) -> str:
    """A number for a summary: at most one decimal, none when whole (46, 46.5)."""
    text = f"{x:,.1f}"
    return text[:-2] if text.endswith(".0") else text


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.0f} {currency}"


def _matches(text: str | None, needles: Iterable[str]) -> bool:
    folded = (text or "").casefold()
    return bool(folded) and any(n.casefold() in folded for n in needles if n.strip())


# --- purchase rhythm ---------------------------------------------------------------


@dataclass(frozen=True)
class _Rhythm:
    expected: datetime
    median_gap_days: float
    purchases: int
    recent: list[Order]  # newest first, the evidence


def _rhythm(scope: _Scope) -> _Rhythm | None:
    orders = sorted(
        (o for o in scope.ctx.orders if o.time <= scope.as_of), key=lambda o: (o.time, o.order_id)
    )
    # Orders on one UTC day are one purchase: the CRM closes several deals of an account on
    # the same day, and their zero gaps would drag the median towards nothing.
    purchases: dict[date, datetime] = {}
    for order in orders:
        purchases.setdefault(order.time.date(), order.time)
    times = list(purchases.values())
    if len(times) < scope.settings.rhythm_min_orders:
        return None
    gap_days = statistics.median((b - a).total_seconds() / _DAY_S for a, b in pairwise(times))
    return _Rhythm(
        expected=orders[-1].time + timedelta(days=gap_days),
        median_gap_days=gap_days,
        purchases=len(times),
        recent=orders[::-1][:3],
    )


def _order_evidence(scope: _Scope, orders: list[Order]) -> list[Evidence]:
    return [
        Evidence(
            kind="order",
            ref=o.order_id,
            text=f"{o.quantity} x {scope.product_name(o.product_id)}, {_money(o.total, o.currency)}",
            time=iso(o.time),
        )
        for o in orders
    ]


def _rhythm_overdue(scope: _Scope) -> list[Signal]:
    rhythm = _rhythm(scope)
    if rhythm is None:
        return []
    late_days = scope.days_since(rhythm.expected)
    if late_days <= scope.settings.rhythm_tolerance * rhythm.median_gap_days:
        return []
    return [
        scope.emit(
            value=round(late_days, 2),
            unit="days",
            time=rhythm.recent[0].time,
            # A regular buyer who stops may be buying elsewhere.
            direction=-1,
            summary=(
                f"next order expected {rhythm.expected.date().isoformat()} "
                f"(median gap {_num(rhythm.median_gap_days)} d over {rhythm.purchases} "
                f"purchases), {_num(late_days)} d overdue"
            ),
            evidence=_order_evidence(scope, rhythm.recent),
        )
    ]


def _rhythm_due(scope: _Scope) -> list[Signal]:
    rhythm = _rhythm(scope)
    if rhythm is None:
        return []
    until_days = -scope.days_since(rhythm.expected)
    # Slightly late (within the tolerance) still counts as due, with a negative value.
    lowest = -scope.settings.rhythm_tolerance * rhythm.median_gap_days
    if not lowest <= until_days <= scope.settings.inactivity_days:
        return []
    when = f"in {_num(until_days)} d" if until_days >= 0 else f"{_num(-until_days)} d ago"
    return [
        scope.emit(
            value=round(until_days, 2),
            unit="days",
            time=rhythm.recent[0].time,
            # The account's own rhythm says it is about to need us again.
            direction=1,
            summary=(
                f"next order expected {when} "
                f"({rhythm.expected.date().isoformat()}; median gap "
                f"{_num(rhythm.median_gap_days)} d over {rhythm.purchases} purchases)"
            ),
            evidence=_order_evidence(scope, rhythm.recent),
        )
    ]


# --- dated commitments: tenders, budget windows ------------------------------------


def _next_tender_event(tender: Tender, as_of: datetime) -> tuple[str, datetime] | None:
    events = [(f"milestone '{m.name}' due", m.due) for m in tender.milestones if not m.done]
    if tender.opens_at is not None:
        events.append(("opens", tender.opens_at))
    events.append(("deadline", tender.deadline))
    upcoming = [(when, label) for label, when in events if when > as_of]
    if not upcoming:
        return None
    when, label = min(upcoming)
    return label, when


def _tender_countdown(scope: _Scope) -> list[Signal]:
    signals = []
    for tender in scope.ctx.tenders:
        if tender.status not in _LIVE_TENDER:
            continue
        event = _next_tender_event(tender, scope.as_of)
        if event is None:
            continue
        label, when = event
        hours = (when - scope.as_of).total_seconds() / 3600
        if hours > scope.settings.tender_horizon_hours:
            continue
        budget = f", budget {_money(tender.budget, tender.currency)}" if tender.budget else ""
        signals.append(
            scope.emit(
                value=round(hours, 2),
                unit="hours",
                time=tender.time,
                direction=0,
                summary=f"tender {tender.tender_id} {label} in {_num(hours)} h",
                evidence=[
                    Evidence(
                        kind="tender",
                        ref=tender.tender_id,
                        text=f"{tender.title} ({tender.status}): {label} {iso(when)}{budget}",
                        time=iso(tender.time),
                    )
                ],
                product_id=tender.product_ids[0] if len(tender.product_ids) == 1 else None,
            )
        )
    return signals


def _budget_window_closing(scope: _Scope) -> list[Signal]:
    signals = []
    for window in scope.ctx.budget_windows:
        if not window.opens <= scope.as_of < window.closes:
            continue
        days = (window.closes - scope.as_of).total_seconds() / _DAY_S
        if days > scope.settings.budget_closing_days:
            continue
        amount = f" ({_money(window.amount, window.currency)})" if window.amount else ""
        signals.append(
            scope.emit(
                value=round(days, 2),
                unit="days",
                time=window.time,
                direction=0,
                summary=f"budget window {window.window_id}{amount} closes in {_num(days)} d",
                evidence=[
                    Evidence(
                        kind="budget_window",
                        ref=window.window_id,
                        text=f"open {iso(window.opens)} to {iso(window.closes)}{amount}",
                        time=iso(window.time),
                    )
                ],
            )
        )
    return signals


# --- people --------------------------------------------------------------------------


def departed_contacts(ctx: AccountContext, as_of: datetime | None = None) -> set[str]:
    """Ids of the account's contacts who are gone at ``as_of`` (default ``ctx.as_of``).

    The newest fact about a person decides: their latest change up to ``as_of`` (a
    ``left``, or a ``joined`` after it), unless their contact row is newer (a rehire
    re-imported as active), in which case the row's ``active`` does. When a change and
    the row are of the same time and disagree, the person counts as gone: better to
    skip a call than to send a rep to someone who left.
    """
    as_of = as_of or ctx.as_of
    latest: dict[str, ContactChange] = {}
    for change in ctx.contact_changes:
        if change.time > as_of:
            continue
        seen = latest.get(change.contact_id)
        if seen is None or (change.time, change.change_id) > (seen.time, seen.change_id):
            latest[change.contact_id] = change

    rows = {c.contact_id: c for c in ctx.contacts if c.time <= as_of}
    gone = set()
    for contact_id in rows.keys() | latest.keys():
        row, change = rows.get(contact_id), latest.get(contact_id)
        by_change = change is not None and change.change == "left"
        by_row = row is not None and not row.active
        if row is None or (change is not None and change.time > row.time):
            left = by_change
        elif change is None or change.time < row.time:
            left = by_row
        else:
            left = by_change or by_row
        if left:
            gone.add(contact_id)
    return gone


def _procurement_lead_changed(scope: _Scope) -> list[Signal]:
    roles, days_limit = scope.settings.procurement_roles, scope.settings.contact_change_days
    contacts = {c.contact_id: c for c in scope.ctx.contacts}
    gone = departed_contacts(scope.ctx)
    latest: dict[str, tuple[datetime, str, str]] = {}  # contact -> (time, change id, role)
    for change in scope.ctx.contact_changes:
        if change.change == "left" or not scope.within(change.time, days_limit):
            continue
        if change.contact_id in gone:
            continue  # joined and already gone again: nobody to brief
        contact = contacts.get(change.contact_id)
        role = change.new_role
        if role is None and change.change == "joined" and contact is not None:
            role = contact.role
        # A move inside procurement keeps the person we already know.
        if not _matches(role, roles) or _matches(change.old_role, roles):
            continue
        if change.contact_id not in latest or change.time > latest[change.contact_id][0]:
            latest[change.contact_id] = (change.time, change.change_id, role)

    signals = []
    for contact_id, (time, change_id, role) in sorted(latest.items()):
        name = contacts[contact_id].name if contact_id in contacts else contact_id
        days = scope.days_since(time)
        text = f"{name} took the role {role}"
        signals.append(
            scope.emit(
                value=round(days, 2),
                unit="days",
                time=time,
                # -1: a new buyer has no history with us, often reviews the suppliers they
                # inherit, and what the predecessor agreed no longer carries the deal.
                direction=-1,
                summary=f"{text} {_num(days)} d ago",
                evidence=[Evidence("contact_change", change_id, text, time=iso(time))],
            )
        )
    return signals


def _champion_departed(scope: _Scope) -> list[Signal]:
    days_limit = scope.settings.contact_change_days
    champions = {c.contact_id: c for c in scope.ctx.contacts if c.champion}
    departures: dict[str, tuple[datetime, Evidence]] = {}
    for change in scope.ctx.contact_changes:
        champion = champions.get(change.contact_id)
        if champion is None or change.change != "left" or not scope.within(change.time, days_limit):
            continue
        role = change.old_role or champion.role
        text = f"champion {champion.name} ({role}) left"
        departures[change.contact_id] = (
            change.time,
            Evidence("contact_change", change.change_id, text, time=iso(change.time)),
        )
    # A champion's row marked inactive is a departure too when no change records one: the
    # row's time is when it was observed.
    recorded = {c.contact_id for c in scope.ctx.contact_changes if c.change == "left"}
    for champion in champions.values():
        if not champion.active and champion.contact_id not in recorded:
            if scope.within(champion.time, days_limit):
                text = f"champion {champion.name} ({champion.role}) no longer active"
                departures[champion.contact_id] = (
                    champion.time,
                    Evidence("contact", champion.contact_id, text, time=iso(champion.time)),
                )

    signals = []
    for _, (time, evidence) in sorted(departures.items()):
        days = scope.days_since(time)
        signals.append(
            scope.emit(
                value=round(days, 2),
                unit="days",
                time=time,
                direction=-1,
                summary=f"{evidence.text} {_num(days)} d ago",
                evidence=[evidence],
            )
        )
    return signals


# --- stock ---------------------------------------------------------------------------


def _typical_quantity(ctx: AccountContext, product_id: str) -> float | None:
    quantities = [o.quantity for o in ctx.orders if o.product_id == product_id]
    return statistics.median(quantities) if quantities else None


def _units_needed(ctx: AccountContext, product_id: str) -> int:
    """Units the open opportunities and live tenders for ``product_id`` would take.

    Neither record carries a quantity, so the units are its value at list price (a
    tender's budget split evenly over its products); an opportunity without a value
    counts as the account's usual order.
    """
    product = ctx.products.get(product_id)
    if product is None:
        return 0
    typical = _typical_quantity(ctx, product_id) or 0
    units = 0.0
    for opp in ctx.opportunities:
        if opp.product_id != product_id or opp.stage not in _OPEN_STAGES:
            continue
        if opp.value and opp.currency == product.currency:
            units += math.ceil(opp.value / product.list_price)
        else:
            units += typical
    for tender in ctx.tenders:
        if tender.status in _LIVE_TENDER and product_id in tender.product_ids:
            if tender.budget and tender.currency == product.currency:
                share = tender.budget / len(tender.product_ids)
                units += math.ceil(share / product.list_price)
    return math.ceil(units)


def _stock_evidence(scope: _Scope, product_id: str) -> Evidence:
    stock = scope.ctx.stock[product_id]
    eta = f" (ETA {iso(stock.incoming_eta)})" if stock.incoming and stock.incoming_eta else ""
    return Evidence(
        kind="stock",
        ref=product_id,
        text=f"{stock.on_hand} on hand + {stock.incoming} incoming{eta}",
        time=iso(stock.time),
    )


def _low_stock(scope: _Scope) -> list[Signal]:
    signals = []
    for product_id in sorted(scope.ctx.products_in_play()):
        stock = scope.ctx.stock.get(product_id)
        if stock is None or stock.time > scope.as_of:
            continue
        available = stock.on_hand + stock.incoming
        needed = _units_needed(scope.ctx, product_id)
        if available >= max(scope.settings.low_stock_units, needed):
            continue
        need = f"; open deals and tenders need ~{needed}" if needed else ""
        signals.append(
            scope.emit(
                value=float(available),
                unit="units",
                time=stock.time,
                # What we cannot deliver in time we are unlikely to win.
                direction=-1,
                summary=f"{scope.product_name(product_id)}: {available} units available{need}",
                evidence=[_stock_evidence(scope, product_id)],
                product_id=product_id,
            )
        )
    return signals


def _high_stock(scope: _Scope) -> list[Signal]:
    signals = []
    for product_id in sorted(scope.ctx.products_in_play()):
        stock = scope.ctx.stock.get(product_id)
        typical = _typical_quantity(scope.ctx, product_id)
        if stock is None or stock.time > scope.as_of or typical is None:
            continue
        available = stock.on_hand + stock.incoming
        if available < max(scope.settings.low_stock_units, _units_needed(scope.ctx, product_id)):
            continue  # low stock speaks for this product
        if available <= typical * scope.settings.high_stock_factor:
            continue
        signals.append(
            scope.emit(
                value=float(available),
                unit="units",
                time=stock.time,
                # Stock in hand lets us promise delivery now and offer volume terms.
                direction=1,
                summary=(
                    f"{scope.product_name(product_id)}: {available} units available, "
                    f"{_num(available / typical)}x the usual order of {_num(typical)}"
                ),
                evidence=[_stock_evidence(scope, product_id)],
                product_id=product_id,
            )
        )
    return signals


# --- market --------------------------------------------------------------------------

_IMPACT_DIRECTION = {"opportunity": 1, "risk": -1, "neutral": 0}


def _policy_change(scope: _Scope) -> list[Signal]:
    signals = []
    for policy in sorted(scope.ctx.policies, key=lambda p: p.policy_id):
        if not scope.within(policy.time, scope.settings.policy_days):
            continue
        days = scope.days_since(policy.time)
        effective = policy.effective.date().isoformat()
        signals.append(
            scope.emit(
                value=round(days, 2),
                unit="days",
                time=policy.time,
                direction=_IMPACT_DIRECTION[policy.impact],
                summary=(
                    f"policy {policy.policy_id} ({policy.impact}) published {_num(days)} d ago, "
                    f"effective {effective}"
                ),
                evidence=[
                    Evidence(
                        kind="policy",
                        ref=policy.policy_id,
                        text=f"{policy.title} (sectors {', '.join(policy.sectors)})",
                        time=iso(policy.time),
                    )
                ],
            )
        )
    return signals


def _latest_competitor_prices(scope: _Scope, product_id: str) -> list[CompetitorPrice]:
    """Each competitor's latest price for the product, at this account or in the market."""
    product = scope.ctx.products[product_id]
    latest: dict[str, CompetitorPrice] = {}
    for price in scope.ctx.competitor_prices:
        if price.product_id != product_id or price.time > scope.as_of:
            continue
        if price.account_id not in (None, scope.ctx.account.account_id):
            continue
        if price.currency != product.currency:
            continue  # never compared across currencies without a rate
        name = price.competitor.casefold()
        if name not in latest or (price.time, price.observation_id) > (
            latest[name].time,
            latest[name].observation_id,
        ):
            latest[name] = price
    return list(latest.values())


def _competitor_price_below(scope: _Scope) -> list[Signal]:
    signals = []
    for product_id in sorted(scope.ctx.products_in_play()):
        product = scope.ctx.products.get(product_id)
        if product is None:
            continue
        prices = _latest_competitor_prices(scope, product_id)
        if not prices:
            continue
        cheapest = min(prices, key=lambda p: (p.unit_price, p.observation_id))
        if cheapest.unit_price >= product.list_price:
            continue
        share = 1 - cheapest.unit_price / product.list_price
        where = "at this account" if cheapest.account_id else "in the market"
        signals.append(
            scope.emit(
                value=round(share, 4),
                unit="share",
                time=cheapest.time,
                direction=-1,
                summary=(
                    f"{cheapest.competitor} offers {product.name} at "
                    f"{_money(cheapest.unit_price, cheapest.currency)}, {_num(share * 100)} % "
                    f"below list {_money(product.list_price, product.currency)}"
                ),
                evidence=[
                    Evidence(
                        kind="competitor_price",
                        ref=cheapest.observation_id,
                        text=(
                            f"{cheapest.competitor}: {product.name} "
                            f"{_money(cheapest.unit_price, cheapest.currency)} {where}"
                            + (f" ({cheapest.source})" if cheapest.source else "")
                        ),
                        time=iso(cheapest.time),
                    )
                ],
                product_id=product_id,
            )
        )
    return signals


# --- calls ---------------------------------------------------------------------------


def _excerpt(text: str, at: int = 0) -> str:
    """At most _EXCERPT_CHARS of ``text``, centred on position ``at`` when it must be cut."""
    if len(text) <= _EXCERPT_CHARS:
        return text
    begin = max(0, min(at - _EXCERPT_CHARS // 2, len(text) - _EXCERPT_CHARS))
    cut = text[begin : begin + _EXCERPT_CHARS]
    return ("…" if begin else "") + cut + ("…" if begin + _EXCERPT_CHARS < len(text) else "")


def _competitor_names(scope: _Scope) -> list[str]:
    names: dict[str, str] = {}
    for name in [*scope.settings.competitors, *(p.competitor for p in scope.ctx.competitor_prices)]:
        if name.strip():
            names.setdefault(name.strip().casefold(), name.strip())
    return list(names.values())


def _competitor_mentioned(scope: _Scope) -> list[Signal]:
    names = _competitor_names(scope)
    if not names:
        return []
    counts: dict[str, int] = {}
    evidence: list[Evidence] = []
    calls_with_mentions: list[CallNote] = []
    for call in scope.dated_calls():
        if not scope.within(call.time, scope.settings.recent_call_days):
            continue
        before = len(evidence)
        for speaker, start, text in call.turns:
            if speaker != "customer":
                continue
            folded = text.casefold()
            found = [n for n in names if n.casefold() in folded]
            # "Globex" inside a matched "Globex Cloud" is the same mention.
            found = [
                n for n in found if not any(n != m and n.casefold() in m.casefold() for m in found)
            ]
            for name in found:
                counts[name] = counts.get(name, 0) + 1
                at = folded.index(name.casefold())
                evidence.append(
                    Evidence(
                        kind="call",
                        ref=call.call_id,
                        text=_excerpt(text, at),
                        time=iso(call.time),
                        start=start,
                    )
                )
        if len(evidence) > before:
            calls_with_mentions.append(call)
    if not evidence:
        return []
    named = ", ".join(
        f"{n} x{c}" for n, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return [
        scope.emit(
            value=float(len(evidence)),
            unit="count",
            time=calls_with_mentions[-1].time,
            # The customer is comparing us with someone else.
            direction=-1,
            summary=(
                f"competitors named {len(evidence)} times on {len(calls_with_mentions)} "
                f"calls: {named}"
            ),
            evidence=evidence,
        )
    ]


def _unresolved_objection(scope: _Scope) -> list[Signal]:
    calls = scope.dated_calls()
    won = [c.time for c in calls if scope.polarity(c) > 0]
    resolved_until = max(won) if won else None
    open_calls = [
        c
        for c in calls
        if c.objections
        and scope.polarity(c) <= 0
        and scope.within(c.time, scope.settings.recent_call_days)
        and (resolved_until is None or c.time > resolved_until)
    ]
    if not open_calls:
        return []
    evidence = [
        Evidence(
            kind="call",
            ref=call.call_id,
            text=f"{kind}: {_excerpt(text)}",
            time=iso(call.time),
            start=start,
        )
        for call in open_calls
        for kind, text, start in call.objections
    ]
    kinds: dict[str, int] = {}
    for call in open_calls:
        for kind, _, _ in call.objections:
            kinds[kind] = kinds.get(kind, 0) + 1
    named = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    return [
        scope.emit(
            value=float(len(evidence)),
            unit="count",
            time=open_calls[-1].time,
            direction=-1,
            summary=f"{len(evidence)} objections unresolved on {len(open_calls)} calls: {named}",
            evidence=evidence,
        )
    ]


# --- activity ------------------------------------------------------------------------


def _activities(ctx: AccountContext) -> Iterable[tuple[datetime, str, str, str]]:
    """(time, kind, key, what) of everything that shows the account is in touch."""
    for order in ctx.orders:
        yield order.time, "order", order.order_id, "order"
    for opp in ctx.opportunities:
        yield opp.time, "opportunity", opp.opportunity_id, f"deal {opp.stage}"
        if opp.engage_date is not None:
            yield opp.engage_date, "opportunity", opp.opportunity_id, "deal engaged"
        if opp.close_date is not None:
            yield opp.close_date, "opportunity", opp.opportunity_id, f"deal closed {opp.stage}"
    for call in ctx.calls:
        if call.time is not None:
            yield call.time, "call", call.call_id, "call"
    for change in ctx.contact_changes:
        yield change.time, "contact_change", change.change_id, f"contact {change.change}"


def _no_activity(scope: _Scope) -> list[Signal]:
    # A planned close date in the future is no sign of life today.
    past = [a for a in _activities(scope.ctx) if a[0] <= scope.as_of]
    if not past:
        return []
    time, kind, key, what = max(past, key=lambda a: (a[0], a[1], a[2]))
    days = scope.days_since(time)
    if days <= scope.settings.inactivity_days:
        return []
    return [
        scope.emit(
            value=round(days, 2),
            unit="days",
            time=time,
            direction=-1,
            summary=f"no activity for {_num(days)} d (last: {what} {key} on {time.date()})",
            evidence=[Evidence(kind, key, f"last activity: {what}", time=iso(time))],
        )
    ]


# --- the registry ------------------------------------------------------------------

Detector = Callable[[_Scope], list[Signal]]

DETECTORS: dict[str, Detector] = {
    "purchase_rhythm_overdue": _rhythm_overdue,
    "purchase_rhythm_due": _rhythm_due,
    "tender_countdown": _tender_countdown,
    "budget_window_closing": _budget_window_closing,
    "procurement_lead_changed": _procurement_lead_changed,
    "champion_departed": _champion_departed,
    "low_stock": _low_stock,
    "high_stock": _high_stock,
    "policy_change": _policy_change,
    "competitor_mentioned": _competitor_mentioned,
    "competitor_price_below": _competitor_price_below,
    "unresolved_objection": _unresolved_objection,
    "no_activity": _no_activity,
}


def compute_signals(
    ctx: AccountContext, settings: SignalSettings, outcomes: OutcomeSettings
) -> list[Signal]:
    """Every signal of ``ctx`` at ``ctx.as_of``, heaviest first (then by type, product, summary)."""
    signals: list[Signal] = []
    for signal_type, detect in DETECTORS.items():
        signals.extend(detect(_Scope(ctx, settings, outcomes, signal_type)))
    signals.sort(key=lambda s: (-s.weight, s.type, s.product_id or "", s.summary))
    logger.debug(
        "%d signals for account %s at %s", len(signals), ctx.account.account_id, iso(ctx.as_of)
    )
    return signals
