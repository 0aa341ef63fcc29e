"""Account signals on small hand-built contexts: real values computed from the dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from copilot.context import (
    Account,
    AccountContext,
    BudgetWindow,
    CallNote,
    CompetitorPrice,
    Contact,
    ContactChange,
    Milestone,
    Opportunity,
    Order,
    PolicyChange,
    Product,
    StockLevel,
    Tender,
)
from copilot.settings import DEFAULT_CONFIG, OutcomeSettings, SignalSettings, load_settings
from copilot.signals import (
    DEFAULT_WEIGHTS,
    DETECTORS,
    SIGNAL_TYPES,
    compute_signals,
    departed_contacts,
)
from tests.conftest import SAMPLE, SHARED_DATA

AS_OF = datetime(2018, 1, 8, 9, 0, tzinfo=UTC)
ACCOUNT = Account(time="2016-01-01", account_id="acme", name="Acme", sector="technology")
OUTCOMES = OutcomeSettings()
SETTINGS = SignalSettings()
GTX_PRO = Product(time="2016-01-01", product_id="gtx-pro", name="GTX Pro", list_price=4821)
MG_SPECIAL = Product(time="2016-01-01", product_id="mg-special", name="MG Special", list_price=55)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def days(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds() / 86400


def context(**records) -> AccountContext:
    return AccountContext(account=ACCOUNT, as_of=AS_OF, **records)


def order(order_id: str, when: str, product: str = "gtx-pro", quantity: int = 1) -> Order:
    return Order(
        time=when,
        order_id=order_id,
        account_id="acme",
        product_id=product,
        quantity=quantity,
        total=4821.0 * quantity,
    )


def of_type(signals, signal_type: str):
    return [s for s in signals if s.type == signal_type]


def signals_of(ctx: AccountContext, settings: SignalSettings = SETTINGS):
    return compute_signals(ctx, settings, OUTCOMES)


# --- the registry and the config ------------------------------------------------------


def test_every_type_has_a_detector_a_default_weight_and_a_configured_weight():
    configured = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))["signals"]["weights"]
    assert set(DETECTORS) == set(SIGNAL_TYPES) == set(DEFAULT_WEIGHTS) == set(configured)
    assert configured == DEFAULT_WEIGHTS
    assert all(len(text) > 10 for text in SIGNAL_TYPES.values())


def test_unknown_or_out_of_range_weights_are_refused():
    with pytest.raises(ValueError, match="unknown signal type.*tender_countdwn"):
        SignalSettings(weights={"tender_countdwn": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SignalSettings(weights={"no_activity": 1.5})


def test_an_empty_context_raises_no_signal():
    assert signals_of(context()) == []
    # Products and policies alone say nothing about this account either.
    assert signals_of(context(products={"gtx-pro": GTX_PRO})) == []


# --- purchase rhythm ----------------------------------------------------------------


def test_rhythm_overdue_counts_days_past_last_order_plus_median_gap():
    orders = [
        order("o1", "2017-10-01"),
        order("o2", "2017-10-15"),
        order("o3", "2017-10-29"),
        order("o4", "2017-11-12"),
        order("o4b", "2017-11-12T15:00"),  # same day: one purchase, no zero gap
    ]
    signals = signals_of(context(orders=orders))
    (overdue,) = of_type(signals, "purchase_rhythm_overdue")
    expected = t("2017-11-12T15:00") + timedelta(days=14)
    assert overdue.value == pytest.approx(days(AS_OF, expected), abs=0.01)  # 42.75 d
    assert overdue.value == pytest.approx(42.75, abs=0.01)
    assert overdue.direction == -1 and overdue.unit == "days"
    assert [e.ref for e in overdue.evidence] == ["o4b", "o4", "o3"]
    assert overdue.time == "2017-11-12T15:00:00Z"
    assert "median gap 14 d over 4 purchases" in overdue.summary
    assert of_type(signals, "purchase_rhythm_due") == []


def test_rhythm_due_within_inactivity_days_and_not_overdue():
    orders = [order("o1", "2017-12-04"), order("o2", "2017-12-18"), order("o3", "2018-01-01")]
    signals = signals_of(context(orders=orders))
    (due,) = of_type(signals, "purchase_rhythm_due")
    assert due.value == pytest.approx(days(t("2018-01-15"), AS_OF), abs=0.01)  # 6.625 d
    assert due.direction == 1
    assert of_type(signals, "purchase_rhythm_overdue") == []


def test_slightly_late_within_tolerance_is_still_due_not_overdue():
    # Median gap 20 d, expected 2018-01-05: 3.4 d late is within 25 % of the gap (5 d).
    orders = [order("o1", "2017-11-26"), order("o2", "2017-12-16"), order("o3", "2017-12-16T00:00")]
    orders.insert(0, order("o0", "2017-11-06"))
    signals = signals_of(context(orders=orders))
    (due,) = of_type(signals, "purchase_rhythm_due")
    assert due.value == pytest.approx(-days(AS_OF, t("2018-01-05")), abs=0.01)
    assert due.summary.startswith("next order expected 3.4 d ago (2018-01-05; median gap 20 d")
    assert of_type(signals, "purchase_rhythm_overdue") == []


def test_no_rhythm_from_too_few_orders():
    orders = [order("o1", "2017-10-01"), order("o2", "2017-10-15")]
    signals = signals_of(context(orders=orders))
    assert not of_type(signals, "purchase_rhythm_overdue")
    assert not of_type(signals, "purchase_rhythm_due")
    # Two orders are enough when configured so.
    two = SignalSettings(rhythm_min_orders=2)
    (overdue,) = of_type(signals_of(context(orders=orders), two), "purchase_rhythm_overdue")
    assert overdue.value == pytest.approx(days(AS_OF, t("2017-10-29")), abs=0.01)


# --- tenders and budget windows ---------------------------------------------------


def tender(tender_id: str, **fields) -> Tender:
    defaults = dict(
        time="2017-12-20",
        tender_id=tender_id,
        account_id="acme",
        title="Fleet renewal",
        product_ids=["gtx-pro"],
        deadline="2018-01-20T12:00",
        budget=120000,
    )
    return Tender(**{**defaults, **fields})


def test_tender_countdown_hours_until_opening():
    tenders = [
        tender("T-17", opens_at="2018-01-10T07:00"),
        tender("T-18", opens_at="2018-01-09T07:00", status="awarded"),  # done with
        tender("T-19", opens_at="2018-02-10T07:00", deadline="2018-03-01"),  # beyond 168 h
    ]
    (signal,) = signals_of(context(tenders=tenders))
    assert signal.type == "tender_countdown"
    assert signal.value == pytest.approx(46.0)  # 2018-01-08 09:00 -> 2018-01-10 07:00
    assert signal.summary == "tender T-17 opens in 46 h"
    assert signal.unit == "hours" and signal.direction == 0
    assert signal.product_id == "gtx-pro"
    assert signal.evidence[0].kind == "tender" and signal.evidence[0].ref == "T-17"
    assert "120,000 USD" in signal.evidence[0].text


def test_tender_countdown_takes_the_next_open_milestone_or_the_deadline():
    milestones = [
        Milestone(name="site visit", due="2018-01-08T12:00", done=True),
        Milestone(name="questions due", due="2018-01-09T09:30"),
    ]
    tenders = [
        tender("T-20", opens_at="2018-01-05", milestones=milestones, status="open"),
        tender("T-21", opens_at="2018-01-01", deadline="2018-01-11T09:00", product_ids=[]),
    ]
    by_ref = {s.evidence[0].ref: s for s in signals_of(context(tenders=tenders))}
    assert by_ref["T-20"].value == pytest.approx(24.5)
    assert by_ref["T-20"].summary == "tender T-20 milestone 'questions due' due in 24.5 h"
    assert by_ref["T-21"].value == pytest.approx(72.0)
    assert by_ref["T-21"].summary == "tender T-21 deadline in 72 h"
    assert by_ref["T-21"].product_id is None


def test_budget_window_closing_only_for_an_open_window_closing_soon():
    windows = [
        BudgetWindow(
            time="2017-11-01",
            window_id="FY17-Q4",
            account_id="acme",
            opens="2017-12-01",
            closes="2018-01-20",
            amount=120000,
        ),
        BudgetWindow(  # not open yet
            time="2017-11-01",
            window_id="FY18-Q1",
            account_id="acme",
            opens="2018-01-20",
            closes="2018-02-01",
        ),
        BudgetWindow(  # open, but closes in 83 d
            time="2017-11-01",
            window_id="FY18",
            account_id="acme",
            opens="2018-01-01",
            closes="2018-04-01",
        ),
    ]
    (signal,) = signals_of(context(budget_windows=windows))
    assert signal.type == "budget_window_closing"
    assert signal.value == pytest.approx(days(t("2018-01-20"), AS_OF), abs=0.01)  # 11.625
    assert signal.summary == "budget window FY17-Q4 (120,000 USD) closes in 11.6 d"
    assert signal.evidence[0].ref == "FY17-Q4"


# --- people -------------------------------------------------------------------------


def contact(contact_id: str, name: str, role: str, **fields) -> Contact:
    return Contact(
        time="2017-12-20", contact_id=contact_id, account_id="acme", name=name, role=role, **fields
    )


def change(change_id: str, contact_id: str, kind: str, when: str, **roles) -> ContactChange:
    return ContactChange(
        time=when,
        change_id=change_id,
        contact_id=contact_id,
        account_id="acme",
        change=kind,
        **roles,
    )


def test_new_procurement_lead_found_by_a_chinese_role_and_an_english_one():
    contacts = [
        contact("c1", "王芳", "采购负责人"),
        contact("c2", "Dana Ortiz", "Head of Purchasing"),
        contact("c3", "Sam Lee", "Senior Buyer"),
        contact("c4", "Ivo Berg", "engineer"),
    ]
    changes = [
        change("ch1", "c1", "joined", "2017-12-20T09:00"),  # role read from the contact
        change(
            "ch2",
            "c2",
            "role_changed",
            "2018-01-02",
            old_role="engineer",
            new_role="Head of Purchasing",
        ),
        change(
            "ch3", "c3", "role_changed", "2018-01-03", old_role="Buyer", new_role="Senior Buyer"
        ),  # a move inside procurement: the person we know
        change("ch4", "c4", "joined", "2018-01-04"),  # not a procurement role
        change("ch5", "c3", "joined", "2017-09-01"),  # too long ago
    ]
    found = of_type(
        signals_of(context(contacts=contacts, contact_changes=changes)),
        "procurement_lead_changed",
    )
    by_ref = {s.evidence[0].ref: s for s in found}
    assert set(by_ref) == {"ch1", "ch2"}
    assert by_ref["ch1"].value == pytest.approx(19.0)
    assert "王芳" in by_ref["ch1"].summary and "采购负责人" in by_ref["ch1"].summary
    assert by_ref["ch2"].value == pytest.approx(days(AS_OF, t("2018-01-02")), abs=0.01)
    assert all(s.direction == -1 for s in found)


def test_champion_departed_only_for_a_champion():
    contacts = [
        contact("c1", "Lena Park", "CTO", champion=True, active=False),
        contact("c2", "Ravi Shah", "analyst", active=False),
    ]
    changes = [
        change("ch1", "c1", "left", "2018-01-02T09:00", old_role="CTO"),
        change("ch2", "c2", "left", "2018-01-03"),
    ]
    signals = signals_of(context(contacts=contacts, contact_changes=changes))
    (departed,) = of_type(signals, "champion_departed")
    assert departed.value == pytest.approx(6.0)
    assert departed.direction == -1
    assert departed.evidence[0].ref == "ch1" and "Lena Park" in departed.summary


def test_a_champion_who_left_long_ago_does_not_depart_again():
    contacts = [contact("c1", "Lena Park", "CTO", champion=True, active=False)]  # row 2017-12-20
    changes = [change("ch1", "c1", "left", "2017-09-01", old_role="CTO")]
    signals = signals_of(context(contacts=contacts, contact_changes=changes))
    assert not of_type(signals, "champion_departed")


def test_inactive_champion_without_a_change_departs_at_the_rows_time():
    contacts = [
        Contact(
            time="2018-01-05T09:00",
            contact_id="c1",
            account_id="acme",
            name="李明",
            role="技术总监",
            champion=True,
            active=False,
        )
    ]
    (departed,) = of_type(signals_of(context(contacts=contacts)), "champion_departed")
    assert departed.value == pytest.approx(3.0)
    assert departed.evidence[0].kind == "contact" and "李明" in departed.summary


def test_departed_contacts_follow_the_newest_fact_up_to_as_of():
    contacts = [  # every row written 2017-12-20 and active unless said
        contact("c1", "Omar Haddad", "purchasing manager"),  # left later: gone
        contact("c2", "Lena Park", "CTO"),  # left, then joined again: here
        contact("c3", "Ravi Shah", "analyst"),  # leaves after as_of: here
        contact("c4", "王芳", "采购负责人", active=False),  # marked inactive, no change: gone
        contact("c5", "Sam Lee", "buyer"),  # left before the row was written: here
        contact("c6", "Ivo Berg", "engineer", active=False),  # same time as a join: gone
    ]
    changes = [
        change("ch1", "c1", "left", "2018-01-05"),
        change("ch2", "c2", "left", "2017-12-22"),
        change("ch3", "c2", "joined", "2018-01-02", new_role="CTO"),
        change("ch4", "c3", "left", "2018-01-09"),
        change("ch5", "c5", "left", "2017-11-01"),
        change("ch6", "c6", "joined", "2017-12-20"),
    ]
    ctx = context(contacts=contacts, contact_changes=changes)
    assert departed_contacts(ctx) == {"c1", "c4", "c6"}
    assert departed_contacts(ctx, as_of=t("2018-01-10")) == {"c1", "c3", "c4", "c6"}
    assert departed_contacts(ctx, as_of=t("2017-12-25")) == {"c2", "c4", "c6"}


def test_a_procurement_lead_who_left_again_is_no_new_lead():
    contacts = [contact("c1", "王芳", "采购负责人")]  # the row still says active
    joined = change("ch1", "c1", "joined", "2017-12-28")
    found = signals_of(context(contacts=contacts, contact_changes=[joined]))
    assert [s.evidence[0].ref for s in of_type(found, "procurement_lead_changed")] == ["ch1"]

    left = change("ch2", "c1", "left", "2018-01-06")
    found = signals_of(context(contacts=contacts, contact_changes=[joined, left]))
    assert of_type(found, "procurement_lead_changed") == []


# --- stock --------------------------------------------------------------------------


def opportunity(opp_id: str, product: str, value: float | None = None, stage="engaging"):
    return Opportunity(
        time="2017-12-01",
        opportunity_id=opp_id,
        account_id="acme",
        product_id=product,
        stage=stage,
        engage_date="2017-11-20",
        value=value,
    )


def test_low_stock_below_what_open_deals_need_and_high_stock_above_usual_orders():
    ctx = context(
        products={"gtx-pro": GTX_PRO, "mg-special": MG_SPECIAL},
        # 15 units of GTX Pro at list; MG Special without a value counts as a usual order.
        opportunities=[opportunity("op1", "gtx-pro", 4821 * 15), opportunity("op2", "mg-special")],
        orders=[
            order("o1", "2017-06-01", "mg-special", 10),
            order("o2", "2017-07-01", "mg-special", 12),
        ],
        stock={
            "gtx-pro": StockLevel(time="2018-01-07", product_id="gtx-pro", on_hand=8, incoming=4),
            "mg-special": StockLevel(time="2018-01-07", product_id="mg-special", on_hand=400),
        },
    )
    settings = SignalSettings(low_stock_units=5)  # 12 units clear the floor, not the need
    signals = signals_of(ctx, settings)
    (low,) = of_type(signals, "low_stock")
    assert (low.product_id, low.value, low.direction) == ("gtx-pro", 12.0, -1)
    assert "need ~15" in low.summary
    (high,) = of_type(signals, "high_stock")
    assert (high.product_id, high.value, high.direction) == ("mg-special", 400.0, 1)
    assert "36.4x the usual order of 11" in high.summary
    # The default floor of 20 units alone makes GTX Pro low.
    (low,) = of_type(signals_of(ctx), "low_stock")
    assert low.product_id == "gtx-pro"


def test_stock_short_of_open_deals_is_low_never_high():
    ctx = context(
        products={"mg-special": MG_SPECIAL},
        opportunities=[opportunity("op1", "mg-special", 55 * 150)],
        orders=[order("o1", "2017-06-01", "mg-special", 10)],
        stock={"mg-special": StockLevel(time="2018-01-07", product_id="mg-special", on_hand=100)},
    )
    signals = signals_of(ctx)
    (low,) = of_type(signals, "low_stock")
    assert low.value == 100.0 and "need ~150" in low.summary
    assert not of_type(signals, "high_stock")  # 100 units is 10x the usual order, yet short


def test_no_stock_signal_without_a_stock_row():
    ctx = context(products={"gtx-pro": GTX_PRO}, opportunities=[opportunity("op1", "gtx-pro")])
    assert not of_type(signals_of(ctx), "low_stock")


# --- market -------------------------------------------------------------------------


def policy(policy_id: str, published: str, impact: str) -> PolicyChange:
    return PolicyChange(
        time=published,
        policy_id=policy_id,
        title="数据安全法实施细则",
        sectors=["technology"],
        effective="2018-03-01",
        impact=impact,
    )


def test_recent_policies_with_their_impact_as_direction():
    ctx = context(
        policies=[
            policy("P-1", "2017-12-09T09:00", "risk"),
            policy("P-2", "2018-01-01T09:00", "opportunity"),
            policy("P-3", "2017-06-01", "risk"),  # older than 90 d
        ]
    )
    by_ref = {s.evidence[0].ref: s for s in of_type(signals_of(ctx), "policy_change")}
    assert set(by_ref) == {"P-1", "P-2"}
    assert (by_ref["P-1"].value, by_ref["P-1"].direction) == (30.0, -1)
    assert (by_ref["P-2"].value, by_ref["P-2"].direction) == (7.0, 1)


def competitor_price(obs_id: str, competitor: str, price: float, when: str, account=None):
    return CompetitorPrice(
        time=when,
        observation_id=obs_id,
        competitor=competitor,
        product_id="gtx-pro",
        unit_price=price,
        account_id=account,
    )


def test_cheapest_latest_competitor_price_below_list():
    ctx = context(
        products={"gtx-pro": GTX_PRO},
        opportunities=[opportunity("op1", "gtx-pro")],
        competitor_prices=[
            competitor_price("cp1", "华为", 3000, "2017-10-01"),  # replaced by cp2
            competitor_price("cp2", "华为", 4200, "2017-12-01"),
            competitor_price("cp3", "Globex", 4500, "2017-12-15", account="acme"),
            competitor_price("cp4", "Initech", 2000, "2017-12-15", account="other"),
        ],
    )
    (signal,) = of_type(signals_of(ctx), "competitor_price_below")
    assert signal.value == pytest.approx(1 - 4200 / 4821, abs=1e-4)  # 0.1288
    assert signal.product_id == "gtx-pro" and signal.evidence[0].ref == "cp2"
    assert "华为" in signal.summary and "12.9 % below list" in signal.summary


def test_no_price_signal_when_competitors_are_dearer():
    ctx = context(
        products={"gtx-pro": GTX_PRO},
        opportunities=[opportunity("op1", "gtx-pro")],
        competitor_prices=[competitor_price("cp1", "Globex", 5000, "2017-12-01")],
    )
    assert not of_type(signals_of(ctx), "competitor_price_below")


# --- calls --------------------------------------------------------------------------


def call(call_id: str, when: str | None, outcome: str | None, turns=(), objections=()):
    return CallNote(
        call_id=call_id,
        time=t(when) if when else None,
        outcome=outcome,
        polarity=OUTCOMES.polarity(outcome),
        turns=list(turns),
        objections=list(objections),
    )


def test_competitor_mentions_in_chinese_and_english_customer_turns():
    long_turn = "We compared a lot of vendors this quarter. " * 8 + "Globex Cloud was cheaper."
    calls = [
        call(
            "c1",
            "2017-12-20",
            None,
            turns=[
                ("customer", 12.5, "我们也在考虑华为的方案，他们报价更低。"),
                ("rep", 20.0, "Globex is not in your budget anyway."),  # the rep, not the customer
            ],
        ),
        call("c2", "2018-01-05", None, turns=[("customer", 40.0, long_turn)]),
        call("c3", "2017-08-01", None, turns=[("customer", 3.0, "Globex called us")]),  # old
        call("c4", None, None, turns=[("customer", 3.0, "华为 again")]),  # undated
    ]
    ctx = context(
        calls=calls,
        competitor_prices=[competitor_price("cp1", "华为", 5000, "2017-12-01")],
    )
    settings = SignalSettings(competitors=["globex", "Globex Cloud"])
    (signal,) = of_type(signals_of(ctx, settings), "competitor_mentioned")
    assert signal.value == 2.0  # "Globex" inside "Globex Cloud" is one mention
    assert [(e.ref, e.start) for e in signal.evidence] == [("c1", 12.5), ("c2", 40.0)]
    assert "华为" in signal.evidence[0].text
    assert "Globex Cloud" in signal.evidence[1].text and len(signal.evidence[1].text) <= 202
    assert signal.time == "2018-01-05T00:00:00Z"
    assert signal.summary == "competitors named 2 times on 2 calls: Globex Cloud x1, 华为 x1"


def test_unresolved_objections_are_those_after_the_last_won_call():
    calls = [
        call("c1", "2017-11-01", "lost", objections=[("price", "too expensive", 30.0)]),
        call("c2", "2017-11-15", "won"),
        call(
            "c3",
            "2017-12-10",
            None,
            objections=[
                ("timing", "not before next quarter", 61.0),
                ("budget", "预算已经用完了", 95.5),
            ],
        ),
        call("c4", "2017-12-12", "won", objections=[("price", "a bit high", 5.0)]),
        call("c5", "2017-12-20", "lost", objections=[("authority", "my boss decides", 14.0)]),
    ]
    (signal,) = of_type(signals_of(context(calls=calls)), "unresolved_objection")
    # c3 came before the won c4, so only c5's objection is still open.
    assert signal.value == 1.0
    assert [(e.ref, e.start) for e in signal.evidence] == [("c5", 14.0)]
    assert signal.direction == -1

    (signal,) = of_type(signals_of(context(calls=calls[:3])), "unresolved_objection")
    assert signal.value == 2.0
    assert [e.ref for e in signal.evidence] == ["c3", "c3"]
    assert signal.evidence[1].text == "budget: 预算已经用完了"


def test_no_activity_counts_from_the_latest_fact_not_a_planned_close():
    ctx = context(
        orders=[order("o1", "2017-11-20")],
        opportunities=[
            Opportunity(
                time="2017-10-01",
                opportunity_id="op1",
                account_id="acme",
                product_id="gtx-pro",
                stage="won",
                engage_date="2017-09-01",
                close_date="2017-11-10",
            )
        ],
        contact_changes=[change("ch1", "c9", "joined", "2017-11-01")],
    )
    (signal,) = of_type(signals_of(ctx), "no_activity")
    assert signal.value == pytest.approx(days(AS_OF, t("2017-11-20")), abs=0.01)  # 49.375
    assert signal.evidence[0].kind == "order" and signal.evidence[0].ref == "o1"
    # A recent call is activity.
    ctx.calls = [call("c1", "2018-01-02", None)]
    assert not of_type(signals_of(ctx), "no_activity")


def test_signals_are_ordered_by_weight_then_type():
    ctx = context(
        orders=[order("o1", "2017-10-01"), order("o2", "2017-10-15"), order("o3", "2017-10-29")],
        policies=[policy("P-1", "2017-12-09T09:00", "risk")],
    )
    types = [s.type for s in signals_of(ctx)]
    assert types == ["purchase_rhythm_overdue", "policy_change", "no_activity"]
    reweighted = SignalSettings(weights={"no_activity": 0.95, "policy_change": 0.6})
    signals = signals_of(ctx, reweighted)
    assert [(s.type, s.weight) for s in signals] == [
        ("no_activity", 0.95),
        ("policy_change", 0.6),
        ("purchase_rhythm_overdue", 0.6),
    ]


# --- the bundled sample and the real CRM ----------------------------------------------


@pytest.fixture(scope="module")
def sample_signals(tmp_path_factory):
    from copilot.account_store import AccountStore
    from copilot.importers import import_paths

    root = tmp_path_factory.mktemp("accounts")
    store = AccountStore(root / "copilot.sqlite3")
    import_paths([SAMPLE / "accounts"], store, load_settings(data_dir=root).accounts)
    assert store.clock() == AS_OF  # the stock snapshot is the sample's latest fact
    return {a: signals_of(store.context(a)) for a in store.account_ids()}


def one(signals, signal_type: str):
    (signal,) = of_type(signals, signal_type)
    return signal


def test_sample_acme_tender_budget_new_buyer_low_stock_and_cheaper_competitor(sample_signals):
    acme = sample_signals["Acme Corporation"]
    tender_signal = one(acme, "tender_countdown")
    # The next open milestone of T-ACME-2018-01 comes before its opening on 2018-01-10.
    assert tender_signal.value == pytest.approx(32.0)  # to 2018-01-09T17:00Z
    assert tender_signal.value <= 72 and tender_signal.evidence[0].ref == "T-ACME-2018-01"
    budget = one(acme, "budget_window_closing")
    assert budget.value == pytest.approx(days(t("2018-01-31T23:59:59"), AS_OF), abs=0.01)
    assert "500,000 USD" in budget.summary
    lead = one(acme, "procurement_lead_changed")
    assert lead.evidence[0].ref == "CC-002"
    assert lead.value == pytest.approx(days(AS_OF, t("2017-12-20T10:00")), abs=0.01)
    low = one(acme, "low_stock")
    assert (low.product_id, low.value) == ("GTX Pro", 6.0)
    cheaper = one(acme, "competitor_price_below")
    assert cheaper.product_id == "GTX Pro" and cheaper.evidence[0].ref == "CP-001"
    assert cheaper.value == pytest.approx(1 - 4242.48 / 4821, abs=1e-4)
    # The heaviest signal leads.
    assert acme[0].type == "tender_countdown"


def test_sample_betatech_champion_left_and_policy_published(sample_signals):
    betatech = sample_signals["Betatech"]
    departed = one(betatech, "champion_departed")
    assert departed.evidence[0].ref == "CC-001"
    assert departed.value == pytest.approx(days(AS_OF, t("2017-12-15")), abs=0.01)
    policies = {s.evidence[0].ref: s for s in of_type(betatech, "policy_change")}
    assert policies["POL-001"].value == pytest.approx(days(AS_OF, t("2017-12-01")), abs=0.01)
    assert policies["POL-001"].direction == 1  # impact "opportunity"


def test_sample_chinese_role_rhythm_and_silence(sample_signals):
    lead = one(sample_signals["华信医疗"], "procurement_lead_changed")
    assert lead.evidence[0].ref == "CC-003" and "采购负责人" in lead.summary
    # 2017-12-28 10:00 +08:00 is 02:00 UTC.
    assert lead.value == pytest.approx(days(AS_OF, t("2017-12-28T02:00")), abs=0.01)
    due = one(sample_signals["Isdom"], "purchase_rhythm_due")
    assert "median gap 30 d over 12 purchases" in due.summary
    silent = one(sample_signals["Keystone Logistics"], "no_activity")
    assert silent.value == pytest.approx(days(AS_OF, t("2017-10-27")), abs=0.01)  # 73.4 d


CRM = SHARED_DATA / "crm" / "opportunities"


@pytest.mark.real_data
def test_real_crm_signals_for_every_account(tmp_path):
    if not CRM.is_dir():
        pytest.skip(f"the real CRM export is not at {CRM} (the ../shared checkout beside the repo)")
    import csv
    import statistics
    import time
    from itertools import pairwise

    from copilot.account_store import AccountStore
    from copilot.importers import read_path

    store = AccountStore(tmp_path / "copilot.sqlite3")
    store.upsert(read_path(CRM, load_settings(data_dir=tmp_path).accounts))
    contexts = [store.context(a) for a in store.account_ids()]
    assert len(contexts) == 85

    started = time.perf_counter()
    by_account = {c.account.account_id: signals_of(c) for c in contexts}
    elapsed_s = time.perf_counter() - started
    assert elapsed_s < 2.0  # measured 0.03 s on the 2-core box

    # The CRM has orders and deals only: no tender, stock, contact, call or policy signal.
    fired = {s.type for signals in by_account.values() for s in signals}
    assert fired <= {"purchase_rhythm_overdue", "purchase_rhythm_due", "no_activity"}

    # Acme's rhythm, recomputed from the raw pipeline: won deals, one purchase per close day.
    with (CRM / "sales_pipeline.csv").open(encoding="utf-8", newline="") as f:
        closes = sorted(
            {
                t(r["close_date"])
                for r in csv.DictReader(f)
                if r["account"] == "Acme Corporation" and r["deal_stage"] == "Won"
            }
        )
    gap_days = statistics.median(days(b, a) for a, b in pairwise(closes))
    expected = closes[-1] + timedelta(days=gap_days)
    as_of = contexts[0].as_of
    assert as_of == t("2017-12-31")
    acme = by_account["Acme Corporation"]
    if days(as_of, expected) > 0.25 * gap_days:
        assert one(acme, "purchase_rhythm_overdue").value == pytest.approx(
            days(as_of, expected), abs=0.01
        )
    else:
        assert one(acme, "purchase_rhythm_due").value == pytest.approx(
            days(expected, as_of), abs=0.01
        )
