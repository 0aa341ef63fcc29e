"""Quote strategies: three kinds, each inside the floor, the stock and the known budget."""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from copilot.context import (
    Account,
    AccountContext,
    BudgetWindow,
    CompetitorPrice,
    Order,
    Product,
    StockLevel,
    Tender,
)
from copilot.errors import InputError, NotFoundError, StateError
from copilot.pricing import DiscountCurve, WonDiscounts
from copilot.quotes import floor_price, plan_deliveries, quote_strategies
from copilot.schemas import Citation, TalkingPoint
from copilot.settings import QuoteSettings

AS_OF = datetime(2018, 1, 8, 9, 30, tzinfo=UTC)
DAY = timedelta(days=1)
SETTINGS = QuoteSettings()
# The real curve's shape (docs/quote-strategies.md): 0.57 at list, 0.79 at 10 % off.
CURVE = DiscountCurve(
    intercept=0.288,
    slope=10.41,
    support=(-0.1, 0.423),
    n_dialogues=451,
    n_observations=410,
    n_accepted=334,
    data_hash="test",
)


def product(pid: str, list_price: float, **fields) -> Product:
    return Product(time=AS_OF - 30 * DAY, product_id=pid, name=pid, list_price=list_price, **fields)


def stock(pid: str, on_hand: int, incoming: int = 0, eta_days: float | None = None, lead=14):
    return StockLevel(
        time=AS_OF - DAY,
        product_id=pid,
        on_hand=on_hand,
        incoming=incoming,
        incoming_eta=AS_OF + eta_days * DAY if eta_days is not None else None,
        lead_time_days=lead,
    )


def make_context(products: list[Product], stocks=(), **lists) -> AccountContext:
    """An account context built directly (no store), as of ``AS_OF``."""
    return AccountContext(
        account=Account(time=AS_OF - 400 * DAY, account_id="Acme", name="Acme", sector="retail"),
        as_of=AS_OF,
        products={p.product_id: p for p in products},
        stock={s.product_id: s for s in stocks},
        **lists,
    )


def window(amount: float, closes_days: float = 20, currency: str = "USD") -> BudgetWindow:
    return BudgetWindow(
        time=AS_OF - 10 * DAY,
        window_id="fy18-q1",
        account_id="Acme",
        opens=AS_OF - 10 * DAY,
        closes=AS_OF + closes_days * DAY,
        amount=amount,
        currency=currency,
    )


def tender(deadline_days: float, budget: float | None = None, products=()) -> Tender:
    return Tender(
        time=AS_OF - 5 * DAY,
        tender_id="T-7",
        account_id="Acme",
        title="Store refit",
        product_ids=list(products),
        deadline=AS_OF + deadline_days * DAY,
        budget=budget,
        status="open",
    )


def rival(pid: str, price: float, competitor: str = "Globex", days_ago: float = 3):
    return CompetitorPrice(
        time=AS_OF - days_ago * DAY,
        observation_id=f"{competitor}-{pid}-{days_ago}",
        competitor=competitor,
        product_id=pid,
        unit_price=price,
    )


def by_name(strategies):
    return {s.name: s for s in strategies}


@pytest.fixture
def shop() -> AccountContext:
    return make_context(
        [
            product("GTX Pro", 4821, unit_cost=3000, series="GTX", lead_time_days=21),
            product("GTX Basic", 550, unit_cost=300, series="GTX"),
            product("MG Special", 55, margin_floor=40, series="MG"),
        ],
        stocks=[stock("GTX Pro", 10, incoming=20, eta_days=5), stock("GTX Basic", 500)],
    )


# --- the three kinds --------------------------------------------------------------------


def test_three_strategies_differ_in_kind(shop: AccountContext) -> None:
    got = by_name(quote_strategies(shop, [("GTX Pro", 12)], 0.5, CURVE, SETTINGS))
    assert list(got) == ["value_premium", "volume_term", "phased_bundle"]

    premium = got["value_premium"]
    assert premium.discount == 0 and premium.unit_price == 4821 and premium.total == 12 * 4821
    assert "unit price held for 12 months" in premium.terms and "extended warranty" in premium.terms

    volume = got["volume_term"]
    assert [(ln.product_id, ln.quantity) for ln in volume.lines] == [("GTX Pro", 18)]
    assert volume.unit_price == round(4821 * 0.92, 2) and volume.discount == pytest.approx(0.08)
    assert any("24-month commitment" in t for t in volume.terms)

    bundle = got["phased_bundle"]
    # GTX Basic: same series, cheaper, with a floor; one per unit of the first product
    assert [(ln.product_id, ln.quantity) for ln in bundle.lines] == [
        ("GTX Pro", 12),
        ("GTX Basic", 12),
    ]
    assert all(ln.discount == pytest.approx(0.05) for ln in bundle.lines)
    assert bundle.terms[:2] == [
        "phase 1: 10 x GTX Pro, 12 x GTX Basic on 2018-01-08, invoiced on delivery",
        "phase 2: 2 x GTX Pro on 2018-01-13, invoiced on delivery",
    ]

    # Margin against the unit cost; expected value = likelihood x margin
    assert premium.margin_value == pytest.approx(12 * (4821 - 3000))
    assert volume.margin == pytest.approx((4435.32 - 3000) / 4435.32, abs=1e-6)
    for s in got.values():
        assert s.expected_margin_value == pytest.approx(s.win_likelihood * s.margin_value, abs=0.01)
        assert s.within_budget is None and s.risk == "low", s.risk_reasons


def test_the_bundle_adds_a_product_bought_before_else_one_in_stock() -> None:
    products = [
        product("Main", 1000, unit_cost=500, series="S"),
        product("Sibling", 200, unit_cost=100, series="S"),  # same series, no stock
        product("Stocked", 300, unit_cost=100, series="T"),
        product("Dearer", 2000, unit_cost=100, series="S"),  # never dearer than Main
        product("Bare", 50, series="S"),  # no floor to check: never bundled
    ]
    stocks = [stock("Main", 50), stock("Stocked", 50)]
    bundle = quote_strategies(make_context(products, stocks), [("Main", 5)], 0.5, CURVE, SETTINGS)
    assert [ln.product_id for ln in bundle[2].lines] == ["Main", "Stocked"]
    bought = [
        Order(
            time=AS_OF - 60 * DAY, order_id="o1", account_id="Acme", product_id="Sibling", total=1
        )
    ]
    ctx = make_context(products, stocks, orders=bought)
    bundle = quote_strategies(ctx, [("Main", 5)], 0.5, CURVE, SETTINGS)
    assert [ln.product_id for ln in bundle[2].lines] == ["Main", "Sibling"]


def test_win_likelihood_is_the_base_moved_by_the_curve_lift(shop: AccountContext) -> None:
    got = by_name(quote_strategies(shop, [("GTX Pro", 12)], 0.3, CURVE, SETTINGS))
    base_logit = math.log(0.3 / 0.7)
    for s in got.values():
        expected = 1 / (1 + math.exp(-(base_logit + CURVE.slope * s.discount)))
        assert s.win_likelihood == pytest.approx(expected, abs=1e-6)
    assert got["value_premium"].win_likelihood == pytest.approx(0.3)
    assert got["volume_term"].win_likelihood > got["phased_bundle"].win_likelihood > 0.3
    assert "carries over to this account" in got["volume_term"].rationale


def test_a_flat_curve_leaves_the_base_and_says_why(shop: AccountContext) -> None:
    flat = DiscountCurve(
        intercept=0.0,
        slope=0.0,
        support=(0.0, 0.0),
        n_dialogues=4,
        n_observations=4,
        n_accepted=3,
        data_hash="x",
        fitted=False,
        reason="only 3 deals and 1 no-deals",
    )
    for s in quote_strategies(shop, [("GTX Pro", 2)], 0.4, flat, SETTINGS):
        assert s.win_likelihood == pytest.approx(0.4)
        assert "not learned (only 3 deals and 1 no-deals)" in s.rationale


# --- hard limits --------------------------------------------------------------------------


def test_no_price_below_the_floor_even_when_the_floor_is_above_list() -> None:
    ctx = make_context(
        [product("Thin", 100, unit_cost=95), product("Floored", 100, margin_floor=97)],
        stocks=[stock("Thin", 100), stock("Floored", 100)],
    )
    assert floor_price(ctx.products["Thin"], SETTINGS) == pytest.approx(104.5)
    got = by_name(quote_strategies(ctx, [("Thin", 3), ("Floored", 3)], 0.5, CURVE, SETTINGS))
    for s in got.values():
        for line in s.lines:
            assert line.unit_price >= line.floor_price
    thin = got["volume_term"].lines[0]
    assert thin.unit_price == 104.5 and thin.discount == pytest.approx(-0.045)
    assert any("floor 104.50 is above its list price" in r for r in got["volume_term"].risk_reasons)
    floored = got["volume_term"].lines[1]
    assert floored.unit_price == 97
    assert (
        "Floored is priced at the floor 97.00, 3.0% off list 100.00, not at 8% off list"
        in got["volume_term"].rationale
    )


def test_when_the_floor_sets_the_price_the_quote_says_so_and_claims_no_discount() -> None:
    ctx = make_context(
        [product("F", 100, margin_floor=150), product("G", 80, unit_cost=40)],
        stocks=[stock("F", 100), stock("G", 100)],
    )
    got = by_name(quote_strategies(ctx, [("F", 3)], 0.5, CURVE, SETTINGS))
    premium, volume, bundle = got["value_premium"], got["volume_term"], got["phased_bundle"]
    floored = "F is priced at the floor 150.00, 50.0% above list 100.00"

    assert premium.unit_price == 150 and premium.discount == pytest.approx(-0.5)
    assert premium.title == "Value premium (at the floor, 50.0% above list)"
    assert premium.rationale.startswith(
        "priced at the floor, 50.0% above list and sold on value: price lock, service terms, "
        f"first call on stock; {floored}, not at list price;"
    )

    assert volume.unit_price == 150
    assert volume.terms[0] == "5 x F (asked: 3) at the floor 150.00, 50.0% above list 100.00"
    assert volume.rationale.startswith(
        "more volume and a 24-month term: 1.5x the quantity at 50.0% above list; "
        f"{floored}, not at 8% off list;"
    )

    # The add-on G got the bundle discount, F did not
    assert [(ln.product_id, ln.unit_price) for ln in bundle.lines] == [("F", 150), ("G", 76)]
    assert bundle.terms == [
        "phase 1: 3 x F, 3 x G on 2018-01-08, invoiced on delivery",
        "5% bundle discount on G",
        "F at the floor 150.00, 50.0% above list 100.00",
    ]
    assert f"{floored}, not at 5% off list" in bundle.rationale

    # No text calls a price above list a discount
    for s in got.values():
        for text in [s.title, *s.terms, s.rationale]:
            assert "-50.0%" not in text and "8% off for" not in text, (s.name, text)


def test_the_max_discount_cap_is_said_where_it_cuts_the_discount() -> None:
    ctx = make_context([product("P", 100, unit_cost=10)], [stock("P", 100)])
    capped = QuoteSettings(volume_discount=0.5, max_discount=0.3)
    volume = quote_strategies(ctx, [("P", 4)], 0.5, CURVE, capped)[1]
    assert volume.unit_price == 70 and volume.terms[0] == (
        "6 x P (asked: 4) at 70.00, 30.0% off list 100.00"
    )
    assert volume.rationale.startswith(
        "more volume and a 24-month term: 1.5x the quantity at 30.0% off list; "
        "P is priced at 70.00, 30.0% off list 100.00, not at 50% off list: max_discount is 30%;"
    )


def test_tiny_prices_keep_their_margin_and_claim_no_discount_lost_to_whole_cents() -> None:
    ctx = make_context(
        [product("T", 0.01, unit_cost=0.001), product("U", 0.01, unit_cost=0.001)],
        stocks=[stock("T", 100), stock("U", 100)],
    )
    got = by_name(quote_strategies(ctx, [("T", 3)], 0.5, CURVE, SETTINGS))
    for s in got.values():
        assert s.margin == pytest.approx(0.9), s.name  # (0.01 - 0.001) / 0.01
        assert all(ln.unit_price == 0.01 and ln.discount == 0 for ln in s.lines), s.name
    assert got["value_premium"].margin_value == 0.03  # 3 x 0.009, shown in cents

    bundle = got["phased_bundle"]
    assert not any("bundle discount" in t for t in bundle.terms), bundle.terms
    assert bundle.terms[-2:] == ["T at 0.01, list price 0.01", "U at 0.01, list price 0.01"]
    assert (
        "T is priced at 0.01, list price 0.01, not at 5% off list: prices are in whole cents"
        in bundle.rationale
    )
    volume = got["volume_term"]
    assert "8% off for" not in volume.rationale
    assert volume.terms[0] == "5 x T (asked: 3) at 0.01, list price 0.01"


def test_a_product_without_cost_or_floor_is_refused() -> None:
    ctx = make_context([product("Bare", 100)])
    with pytest.raises(StateError, match="'Bare'.*unit_cost or margin_floor"):
        quote_strategies(ctx, [("Bare", 1)], 0.5, CURVE, SETTINGS)


def test_unknown_product_and_bad_quantities(shop: AccountContext) -> None:
    with pytest.raises(NotFoundError, match="'GTX Ultra'.*GTX Basic, GTX Pro, MG Special"):
        quote_strategies(shop, [("GTX Ultra", 1)], 0.5, CURVE, SETTINGS)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="at least 1"):
            quote_strategies(shop, [("GTX Pro", bad)], 0.5, CURVE, SETTINGS)
    with pytest.raises(InputError, match="listed twice"):
        quote_strategies(shop, [("GTX Pro", 1), ("GTX Pro", 2)], 0.5, CURVE, SETTINGS)
    with pytest.raises(InputError, match="at least one"):
        quote_strategies(shop, [], 0.5, CURVE, SETTINGS)
    with pytest.raises(InputError, match="base win likelihood"):
        quote_strategies(shop, [("GTX Pro", 1)], 1.5, CURVE, SETTINGS)


def test_deliveries_never_promise_more_than_stock_incoming_and_lead_time() -> None:
    p = product("P", 10, unit_cost=5)
    plan = plan_deliveries(p, 45, stock("P", 10, incoming=20, eta_days=5, lead=14), AS_OF, 30)
    assert [(d.quantity, d.date, d.source) for d in plan] == [
        (10, "2018-01-08", "on_hand"),
        (20, "2018-01-13", "incoming"),
        (15, "2018-01-22", "replenishment"),
    ]
    # Incoming without an ETA is not counted on; an ETA already past ships now
    no_eta = plan_deliveries(p, 15, stock("P", 5, incoming=50), AS_OF, 30)
    assert [(d.quantity, d.source) for d in no_eta] == [(5, "on_hand"), (10, "replenishment")]
    late = plan_deliveries(p, 8, stock("P", 0, incoming=50, eta_days=-2), AS_OF, 30)
    assert [(d.quantity, d.date) for d in late] == [(8, "2018-01-08")]
    # No stock record: the price list's lead time, else the configured default
    assert plan_deliveries(p, 3, None, AS_OF, 30)[0].date == "2018-02-07"
    with_lead = product("Q", 10, unit_cost=5, lead_time_days=7)
    assert plan_deliveries(with_lead, 3, None, AS_OF, 30)[0].date == "2018-01-15"


def test_over_budget_is_flagged_never_hidden(shop: AccountContext) -> None:
    shop.budget_windows = [window(50_000)]
    got = by_name(quote_strategies(shop, [("GTX Pro", 12)], 0.5, CURVE, SETTINGS))
    premium = got["value_premium"]  # 57,852 at list
    assert premium.within_budget is False and premium.risk == "high"
    assert premium.risk_reasons == [
        "total 57,852.00 USD is over the known budget of 50,000.00 USD "
        "(budget window fy18-q1 (closes 2018-01-28))"
    ]
    # The volume strategy does not raise the quantity past the budget; the bundle drops its add-on
    volume = got["volume_term"]
    assert volume.lines[0].quantity == 12 and volume.within_budget is False
    assert "even the quantity asked is over budget" in volume.rationale
    assert [ln.product_id for ln in got["phased_bundle"].lines] == ["GTX Pro"]


def test_budget_room_cuts_the_volume_and_the_add_on(shop: AccountContext) -> None:
    # A live tender's budget is tighter than the window's: the tender's counts
    shop.budget_windows = [window(100_000)]
    shop.tenders = [tender(30, budget=60_000, products=["GTX Pro"])]
    got = by_name(quote_strategies(shop, [("GTX Pro", 12)], 0.5, CURVE, SETTINGS))
    volume, bundle = got["volume_term"], got["phased_bundle"]
    assert volume.within_budget and 12 < volume.lines[0].quantity < 18
    assert volume.total <= 60_000 and "cut to what the known budget holds" in volume.rationale
    assert bundle.within_budget and bundle.total <= 60_000
    add_on = bundle.lines[1]
    assert add_on.product_id == "GTX Basic" and add_on.quantity == 9  # (60000 - 54959.40) // 522.50
    assert "tender T-7 'Store refit'" in got["value_premium"].rationale


def test_delivery_after_a_tender_deadline_is_a_high_risk(shop: AccountContext) -> None:
    shop.tenders = [tender(3, products=["GTX Pro"])]
    got = by_name(quote_strategies(shop, [("GTX Pro", 12)], 0.5, CURVE, SETTINGS))
    premium = got["value_premium"]
    assert premium.risk == "high"
    assert premium.risk_reasons == [
        "2 units of GTX Pro arrive after the deadline of tender T-7 'Store refit' "
        "(2018-01-11); the last on 2018-01-13"
    ]


def test_deep_discounts_and_competitors_in_the_risk(shop: AccountContext) -> None:
    won = {"GTX Pro": WonDiscounts("GTX Pro", tuple(sorted([0.0] * 50 + [0.03] * 40 + [0.1] * 10)))}
    shop.competitor_prices = [rival("GTX Pro", 4500), rival("GTX Pro", 4700, "Initech")]
    got = by_name(quote_strategies(shop, [("GTX Pro", 12)], 0.5, CURVE, SETTINGS, won))
    premium, volume, bundle = got["value_premium"], got["volume_term"], got["phased_bundle"]
    assert premium.risk == "medium"
    assert premium.risk_reasons == [
        "GTX Pro at 4,821.00 is 7% above Globex's 4,500.00 (seen 2018-01-05)"
    ]
    assert volume.risk_reasons == [
        "GTX Pro at 8.0% off list is deeper than 90% of its 100 won deals "
        "(their 90th percentile is 3.7%)"
    ]
    assert "at or below every known competitor price (cheapest: Globex" in volume.rationale
    assert any("5.0% off list is deeper than 90%" in r for r in bundle.risk_reasons)


def test_unknown_cost_counts_the_floor_and_says_so() -> None:
    ctx = make_context([product("MG Special", 55, margin_floor=40)], [stock("MG Special", 99)])
    premium = quote_strategies(ctx, [("MG Special", 10)], 0.5, CURVE, SETTINGS)[0]
    assert premium.margin_value == pytest.approx(10 * (55 - 40))
    assert (
        "MG Special has no unit cost: its margin is counted against the floor" in premium.rationale
    )


def test_talking_points_are_attached_and_a_failing_writer_loses_nothing(shop) -> None:
    seen = []

    def writer(strategies, ctx):  # called once per quote, with all its strategies
        seen.append(([s.name for s in strategies], ctx.account.account_id))
        return [
            [TalkingPoint(f"{s.name} works", [Citation("c1", 1.0, 2.0, "ok")])] for s in strategies
        ]

    got = quote_strategies(shop, [("GTX Pro", 2)], 0.5, CURVE, SETTINGS, talking_points=writer)
    assert seen == [(["value_premium", "volume_term", "phased_bundle"], "Acme")]
    assert got[1].talking_points[0].text == "volume_term works"

    def short(strategies, ctx):
        return [[TalkingPoint("one list for three strategies", [])]]

    got = quote_strategies(shop, [("GTX Pro", 2)], 0.5, CURVE, SETTINGS, talking_points=short)
    assert [s.talking_points for s in got] == [[], [], []]

    def broken(strategies, ctx):
        raise RuntimeError("model on fire")

    got = quote_strategies(shop, [("GTX Pro", 2)], 0.5, CURVE, SETTINGS, talking_points=broken)
    assert [s.talking_points for s in got] == [[], [], []] and got[0].total == 2 * 4821


# --- the limits hold in every context -------------------------------------------------------


def random_case(rng: random.Random):
    n = rng.randint(1, 5)
    products, stocks = [], []
    for i in range(n):
        list_price = round(rng.uniform(5, 5000), 2)
        kind = rng.choice(["cost", "floor", "both"])
        fields = {"series": rng.choice(["A", "B", None]), "currency": "USD"}
        if kind in ("cost", "both"):
            fields["unit_cost"] = round(list_price * rng.uniform(0.2, 1.05), 2)
        if kind in ("floor", "both"):
            fields["margin_floor"] = round(list_price * rng.uniform(0.4, 1.05), 2)
        if rng.random() < 0.3:
            fields["lead_time_days"] = rng.randint(0, 90)
        pid = f"P{i}"
        products.append(product(pid, list_price, **fields))
        if rng.random() < 0.8:
            eta = rng.choice([None, rng.uniform(-10, 60)])
            stocks.append(
                stock(pid, rng.randint(0, 300), rng.randint(0, 300), eta, rng.randint(0, 60))
            )
    ctx = make_context(products, stocks)
    chosen = rng.sample([p.product_id for p in products], rng.randint(1, min(3, n)))
    items = [(pid, rng.randint(1, 400)) for pid in chosen]
    list_value = sum(ctx.products[pid].list_price * q for pid, q in items)
    if rng.random() < 0.5:
        ctx.budget_windows = [window(list_value * rng.uniform(0.3, 2.5), rng.uniform(-5, 60))]
    if rng.random() < 0.4:
        ctx.tenders = [
            tender(
                rng.uniform(-3, 40),
                rng.choice([None, list_value * rng.uniform(0.3, 2.5)]),
                rng.sample(chosen, 1) if rng.random() < 0.7 else (),
            )
        ]
    if rng.random() < 0.5:
        pid = rng.choice(chosen)
        ctx.competitor_prices = [rival(pid, ctx.products[pid].list_price * rng.uniform(0.6, 1.2))]
    if rng.random() < 0.3:
        ctx.orders = [
            Order(time=AS_OF - 90 * DAY, order_id="o1", account_id="Acme", product_id=p, total=1)
            for p in rng.sample([p.product_id for p in products], 1)
        ]
    settings = QuoteSettings(
        min_margin=rng.uniform(0, 0.4),
        max_discount=rng.uniform(0.02, 0.6),
        premium_uplift=rng.choice([0.0, rng.uniform(0, 0.15)]),
        volume_discount=rng.uniform(0, 0.5),
        volume_quantity_factor=rng.uniform(1, 3),
        bundle_discount=rng.uniform(0, 0.4),
        default_lead_time_days=rng.randint(0, 60),
    )
    return ctx, items, rng.random(), settings


def expected_budget(ctx: AccountContext, items) -> float | None:
    ids = {pid for pid, _ in items}
    amounts = [
        w.amount for w in ctx.budget_windows if w.opens <= ctx.as_of <= w.closes and w.amount
    ]
    amounts += [
        t.budget
        for t in ctx.tenders
        if t.budget is not None
        and t.deadline >= ctx.as_of
        and (not t.product_ids or ids & set(t.product_ids))
    ]
    return min(amounts) if amounts else None


def test_hard_limits_hold_for_every_strategy_in_400_random_contexts() -> None:
    rng = random.Random(20180108)
    checked = over_budget = replenished = 0
    for case in range(400):
        ctx, items, base, settings = random_case(rng)
        budget = expected_budget(ctx, items)
        strategies = quote_strategies(ctx, items, base, CURVE, settings)
        assert [s.name for s in strategies] == ["value_premium", "volume_term", "phased_bundle"]
        for s in strategies:
            where = f"case {case} {s.name}"
            asked = dict(items)
            assert {ln.product_id for ln in s.lines} >= set(asked), where
            for line in s.lines:
                p = ctx.products[line.product_id]
                # the floor, computed here from the price list
                floor = (
                    p.margin_floor
                    if p.unit_cost is None
                    else max(p.margin_floor or 0, p.unit_cost * (1 + settings.min_margin))
                )
                # in whole cents, rounded up (a millionth of a cent is float noise, not money)
                assert floor - 1e-6 <= line.floor_price < floor + 0.01, where
                assert line.unit_price >= line.floor_price, where
                assert line.discount <= settings.max_discount + 1e-6, where
                if line.product_id in asked:
                    assert line.quantity >= asked[line.product_id], where
                    if s.name != "volume_term":
                        assert line.quantity == asked[line.product_id], where
                # deliveries: every unit, each source within what it holds, at its date
                assert sum(d.quantity for d in line.deliveries) == line.quantity, where
                held = ctx.stock.get(line.product_id)
                lead = (
                    held.lead_time_days
                    if held
                    else p.lead_time_days
                    if p.lead_time_days is not None
                    else settings.default_lead_time_days
                )
                sources = [d.source for d in line.deliveries]
                assert len(sources) == len(set(sources)), where
                for d in line.deliveries:
                    assert d.quantity >= 1, where
                    if d.source == "on_hand":
                        assert d.quantity <= held.on_hand and d.date == "2018-01-08", where
                    elif d.source == "incoming":
                        assert held.incoming_eta is not None and d.quantity <= held.incoming
                        assert d.date == max(held.incoming_eta, AS_OF).date().isoformat(), where
                    else:
                        replenished += 1
                        assert d.date == (AS_OF + lead * DAY).date().isoformat(), where
            assert s.total == pytest.approx(sum(ln.unit_price * ln.quantity for ln in s.lines))
            assert s.margin_value >= -0.01 and 0 < s.win_likelihood < 1, where
            # the budget: known -> compared, over -> said, and the risk is high
            if budget is None:
                assert s.within_budget is None, where
            else:
                assert s.within_budget == (s.total <= budget + 1e-9), where
                if not s.within_budget:
                    over_budget += 1
                    assert s.risk == "high", where
                    assert any("over the known budget" in r for r in s.risk_reasons), where
            checked += 1
    # the random contexts do reach the limits
    assert checked == 1200 and over_budget > 50 and replenished > 100


def at_rate(lines, rate: float, settings: QuoteSettings) -> bool:
    """Every line at this discount, to the 0.1 % a quote shows, and the cap allows it."""
    fits = rate <= settings.max_discount + 1e-9
    return fits and all(f"{ln.discount:.1%}" == f"{rate + 0.0:.1%}" for ln in lines)


def test_price_claims_match_the_prices_in_400_random_contexts() -> None:
    rng = random.Random(20180108)
    said = Counter()
    for case in range(400):
        ctx, items, base, settings = random_case(rng)
        got = by_name(quote_strategies(ctx, items, base, CURVE, settings))
        premium, volume, bundle = got["value_premium"], got["volume_term"], got["phased_bundle"]

        # The planned price is said only where every line got it
        uplift = settings.premium_uplift
        planned = f"{uplift * 100:.1f}".removesuffix(".0") + "% above list" if uplift else ""
        if premium.title == f"Value premium (at {planned or 'list price'})":
            said["premium"] += 1
            assert at_rate(premium.lines, -uplift, settings), case
        else:
            assert not at_rate(premium.lines, -uplift, settings), case
        if " off for " in volume.rationale:
            said["volume"] += 1
            assert at_rate(volume.lines, settings.volume_discount, settings), case
        else:
            assert not at_rate(volume.lines, settings.volume_discount, settings), case
        if any(t.endswith("bundle discount on every line") for t in bundle.terms):
            said["bundle"] += 1
            assert at_rate(bundle.lines, settings.bundle_discount, settings), case
        else:
            assert not at_rate(bundle.lines, settings.bundle_discount, settings), case

        # A price above list is never called a discount
        for s in got.values():
            for text in [s.title, *s.terms, s.rationale]:
                assert not re.search(r"-\d+(\.\d+)?% off", text), (case, s.name, text)
    # the plan was stated, and not stated, often enough for the check to mean something
    assert min(said.values()) > 50 and max(said.values()) < 350, said
