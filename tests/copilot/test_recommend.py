"""Rules applied to signals: each default rule fires on its situation and not on a near miss."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from copilot.account_store import AccountStore
from copilot.context import (
    Account,
    AccountContext,
    BudgetWindow,
    CompetitorPrice,
    Contact,
    ContactChange,
    Opportunity,
    Order,
    PolicyChange,
    Product,
    SalesAgent,
    StockLevel,
    Tender,
)
from copilot.errors import InputError
from copilot.importers import import_paths
from copilot.recommend import _FILLERS, UNASSIGNED, recommend, recommendation_id
from copilot.rules import PLACEHOLDERS, RuleSet, load_rules, parse_rules
from copilot.schemas import Evidence, Signal
from copilot.settings import REPO_ROOT, OutcomeSettings, Settings, SignalSettings, load_settings
from copilot.signals import compute_signals, iso

SAMPLE_ACCOUNTS = REPO_ROOT / "data" / "sample" / "accounts"
SAMPLE_CLOCK = datetime(2018, 1, 8, 9, 0, tzinfo=UTC)  # the sample's latest record
AS_OF = datetime(2017, 12, 29, 9, 0, tzinfo=UTC)
OBSERVED = "2017-12-20T00:00:00Z"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(REPO_ROOT / "configs" / "rules.yaml")


def context(*, open_deal: bool = True, owner: str | None = "Moses Frase") -> AccountContext:
    t = datetime(2017, 12, 1, tzinfo=UTC)
    products = {
        "GTX Pro": Product(time=t, product_id="GTX Pro", name="GTX Pro", list_price=4821),
        "MG Special": Product(time=t, product_id="MG Special", name="MG Special", list_price=55),
    }
    return AccountContext(
        account=Account(
            time=t, account_id="acme", name="Acme Corporation", sector="technology", owner=owner
        ),
        as_of=AS_OF,
        agents={"Moses Frase": SalesAgent(time=t, agent="Moses Frase", manager="Dustin Brinkmann")},
        contacts=[
            Contact(
                time=t, contact_id="c1", account_id="acme", name="Wang Fang", role="采购负责人"
            ),
            Contact(
                time=t,
                contact_id="c2",
                account_id="acme",
                name="Anna Berg",
                role="CTO",
                champion=True,
                active=False,
            ),
            Contact(time=t, contact_id="c3", account_id="acme", name="Li Wei", role="engineer"),
        ],
        contact_changes=[
            ContactChange(
                time=t,
                change_id="cc1",
                contact_id="c1",
                account_id="acme",
                change="joined",
                new_role="采购负责人",
            ),
            ContactChange(
                time=t, change_id="cc2", contact_id="c2", account_id="acme", change="left"
            ),
        ],
        orders=[
            Order(time=t, order_id="o1", account_id="acme", product_id="MG Special", total=550)
        ],
        opportunities=(
            [
                Opportunity(
                    time=t,
                    opportunity_id="opp1",
                    account_id="acme",
                    product_id="GTX Pro",
                    stage="engaging",
                )
            ]
            if open_deal
            else []
        ),
        tenders=[
            Tender(
                time=t,
                tender_id="T-1",
                account_id="acme",
                title="Network refresh 2018",
                product_ids=["GTX Pro"],
                deadline=AS_OF + timedelta(days=9),
            )
        ]
        if open_deal
        else [],
        competitor_prices=[
            CompetitorPrice(
                time=t,
                observation_id="cp1",
                competitor="Globex",
                product_id="GTX Pro",
                unit_price=4242,
            )
        ],
        policies=[
            PolicyChange(
                time=t,
                policy_id="P-7",
                title="Data residency rule",
                sectors=["technology"],
                effective=t,
            )
        ],
        products=products,
    )


def replace_record(record, **changes):
    return record.model_copy(update=changes)


def signal(
    kind: str,
    value: float,
    unit: str,
    evidence: list[Evidence] | None = None,
    product_id: str | None = None,
) -> Signal:
    return Signal(
        type=kind,
        account_id="acme",
        value=value,
        unit=unit,
        time=OBSERVED,
        weight=0.5,
        direction=0,
        summary=f"{kind} {value} {unit}",
        evidence=evidence or [Evidence(kind="test", ref=f"{kind}-1", text=kind)],
        product_id=product_id,
    )


def tender(hours: float, ref: str = "T-1") -> Signal:
    return signal(
        "tender_countdown",
        hours,
        "hours",
        [Evidence("tender", ref, "Network refresh 2018 (announced)")],
        product_id="GTX Pro",
    )


def budget(days: float) -> Signal:
    return signal("budget_window_closing", days, "days", [Evidence("budget_window", "bw1", "")])


def new_lead(days: float) -> Signal:
    return signal("procurement_lead_changed", days, "days", [Evidence("contact_change", "cc1", "")])


def champion_gone(days: float) -> Signal:
    return signal("champion_departed", days, "days", [Evidence("contact_change", "cc2", "")])


def mentions(count: float) -> Signal:
    return signal(
        "competitor_mentioned", count, "count", [Evidence("call", "call-9", "Globex is cheaper")]
    )


def price_gap(share: float) -> Signal:
    return signal(
        "competitor_price_below",
        share,
        "share",
        [Evidence("competitor_price", "cp1", "Globex: GTX Pro 4,242 USD")],
        product_id="GTX Pro",
    )


def fired(recs: list) -> dict[str, object]:
    return {r.rule_id: r for r in recs}


def hours_after(iso_time: str) -> float:
    due = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    return (due - AS_OF).total_seconds() / 3600


# --- the critical example ------------------------------------------------------------------


def test_tender_budget_and_new_lead_is_critical_and_due_before_the_tender(rules) -> None:
    signals = [tender(60), budget(12), new_lead(5)]
    recs = recommend(context(), signals, rules)
    top = recs[0]
    assert top.rule_id == "tender-budget-new-lead"
    assert top.priority == "critical"
    assert top.owner == "Moses Frase"
    assert hours_after(top.due) == 36  # 60 h to the tender, less the 24 h margin
    assert top.due == "2017-12-30T21:00:00Z"
    assert "Network refresh 2018 is 60 h away" in top.action
    assert "closes in 12 days" in top.action
    assert "brief the new procurement lead, Wang Fang" in top.action
    assert top.signals == signals
    assert "tender_countdown=60 hours [GTX Pro]" in top.why
    assert "supersedes budget-closing-open-deal, procurement-lead-changed, tender-countdown" in (
        top.why
    )
    assert top.created_at == "2017-12-29T09:00:00Z"
    # The rules it supersedes do not repeat the same advice.
    assert not {"tender-countdown", "procurement-lead-changed", "budget-closing-open-deal"} & set(
        fired(recs)
    )


def test_tender_at_80_hours_is_no_critical_but_a_tender_countdown(rules) -> None:
    recs = fired(recommend(context(), [tender(80), budget(12), new_lead(5)], rules))
    assert "tender-budget-new-lead" not in recs
    assert recs["tender-countdown"].priority == "high"
    assert hours_after(recs["tender-countdown"].due) == 32  # 80 h less its 48 h margin


def test_earlier_budget_deadline_sets_the_due_time(rules) -> None:
    # The budget closes in 1.5 days (36 h), before the tender (60 h): due 36 - 24 = 12 h.
    (top, *_) = recommend(context(), [tender(60), budget(1.5), new_lead(5)], rules)
    assert top.rule_id == "tender-budget-new-lead"
    assert hours_after(top.due) == 12
    assert "budget_window_closing deadline 2017-12-30T21:00:00Z" in top.why


def test_a_margin_that_has_passed_means_due_now(rules) -> None:
    (top, *_) = recommend(context(), [tender(10), budget(5), new_lead(5)], rules)
    assert top.due == "2017-12-29T09:00:00Z"
    assert "due now" in top.why


# --- every default rule: fires, and a near miss that does not ------------------------------

CASES = {
    "tender-countdown": ([tender(100)], [tender(200)], {}),
    "budget-closing-open-deal": ([budget(12)], [budget(25)], {}),
    "champion-gone-competitor-circling": (
        [champion_gone(10), mentions(2)],
        [champion_gone(10), mentions(0)],
        {},
    ),
    "champion-departed": ([champion_gone(10)], [champion_gone(75)], {}),
    "procurement-lead-changed": ([new_lead(5)], [new_lead(45)], {}),
    "reorder-check-in": (
        [signal("purchase_rhythm_overdue", 12, "days")],
        [signal("purchase_rhythm_overdue", 3, "days")],
        {},
    ),
    "low-stock-in-play": (
        [signal("low_stock", 8, "units", product_id="GTX Pro")],
        [signal("low_stock", 8, "units", product_id="GTX Pro")],
        {"near_ctx": {"open_deal": False}},  # stock is short, but for no open deal or tender
    ),
    "competitor-price-defence": (
        [price_gap(0.12), mentions(3)],
        [price_gap(0.03), mentions(3)],
        {},
    ),
    "unresolved-objections": (
        [signal("unresolved_objection", 2, "count")],
        [signal("unresolved_objection", 0, "count")],
        {},
    ),
    "policy-change": (
        [signal("policy_change", 10, "days", [Evidence("policy", "P-7", "")])],
        [signal("policy_change", 75, "days", [Evidence("policy", "P-7", "")])],
        {},
    ),
    "no-activity": (
        [signal("no_activity", 40, "days")],
        [signal("no_activity", 20, "days")],
        {},
    ),
}


def test_every_default_rule_has_a_case(rules) -> None:
    assert set(CASES) | {"tender-budget-new-lead"} == {r.id for r in rules}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_its_situation_and_not_on_the_near_miss(rules, rule_id: str) -> None:
    fire, near, options = CASES[rule_id]
    recs = fired(recommend(context(), fire, rules))
    assert rule_id in recs
    rec = recs[rule_id]
    assert rec.priority == rules.get(rule_id).priority
    assert rec.signals and set(s.type for s in rec.signals) <= {s.type for s in fire}
    assert "{" not in rec.action and "—" not in rec.action

    near_recs = fired(recommend(context(**options.get("near_ctx", {})), near, rules))
    assert rule_id not in near_recs


def test_default_actions_fill_names_from_the_records(rules) -> None:
    ctx = context()
    recs = fired(
        recommend(
            ctx,
            [
                champion_gone(10),
                price_gap(0.12),
                mentions(3),
                signal("low_stock", 8, "units", product_id="GTX Pro"),
                signal("policy_change", 10, "days", [Evidence("policy", "P-7", "")]),
                signal(
                    "unresolved_objection",
                    2,
                    "count",
                    [
                        Evidence("call", "k1", "price: 太贵了"),
                        Evidence("call", "k2", "timing: later"),
                    ],
                ),
                signal("purchase_rhythm_overdue", 12.4, "days"),
            ],
            rules,
        )
    )
    circling = recs["champion-gone-competitor-circling"]
    assert circling.owner == "Dustin Brinkmann"  # owner: manager
    assert circling.action.startswith("Anna Berg left Acme Corporation")
    assert "with Li Wei (engineer), Wang Fang (采购负责人) within" in circling.action  # who to call
    assert "champion-departed" not in recs
    assert recs["competitor-price-defence"].action.startswith(
        "Globex is 12% below our list price on GTX Pro"
    )
    assert "only 8 x GTX Pro available" in recs["low-stock-in-play"].action
    assert "Share what Data residency rule means" in recs["policy-change"].action
    assert '"price: 太贵了"; "timing: later"' in recs["unresolved-objections"].action
    assert "12.4 days past its usual reorder" in recs["reorder-check-in"].action
    assert "reorder of GTX Pro" in recs["reorder-check-in"].action  # the product in play


def test_budget_rule_takes_a_due_purchase_instead_of_a_deal(rules) -> None:
    due_soon = signal("purchase_rhythm_due", 4, "days")
    without = fired(recommend(context(open_deal=False), [budget(12)], rules))
    assert "budget-closing-open-deal" not in without
    recs = fired(recommend(context(open_deal=False), [budget(12), due_soon], rules))
    rec = recs["budget-closing-open-deal"]
    # Due at the earlier of 72 h before the earliest deadline (the purchase, in 96 h) and 72 h.
    assert hours_after(rec.due) == 24
    assert "capped" not in rec.why


def test_reorder_supersedes_no_activity(rules) -> None:
    signals = [signal("purchase_rhythm_overdue", 12, "days"), signal("no_activity", 40, "days")]
    assert set(fired(recommend(context(), signals, rules))) == {"reorder-check-in"}


# --- owners, ordering, ids -------------------------------------------------------------------

RULE = """\
rules:
  - id: r
    when: {signal: no_activity, min: 1}
    priority: medium
    owner: OWNER
    due_in_hours: 10
    action: "{owner}: 联系 {account}, {idle_days} 天没有动静"
"""


def one_rule(owner: str, extra: str = "") -> RuleSet:
    text = extra + RULE.replace("OWNER", owner)
    return parse_rules(text.encode(), Path("r.yaml"))


def test_an_account_without_owner_goes_to_a_person_or_unassigned_never_the_role() -> None:
    idle = [signal("no_activity", 40, "days")]
    for role in ("account_owner", "manager"):
        # No owner, and the only deal names no agent: nobody to hand it to.
        (rec,) = recommend(context(owner=None), idle, one_rule(role))
        assert rec.owner == UNASSIGNED == "unassigned"
        assert rec.action.startswith("unassigned: ")
        assert (
            f"owner: the account has no owner on record (rule owner {role}) and no deal "
            "names an agent, so unassigned: assign an owner"
        ) in rec.why

    # The agent on the latest deal is known: their manager acts or assigns an owner.
    ctx = context(owner=None)
    (deal,) = ctx.opportunities
    ctx.opportunities = [
        replace_record(deal, opportunity_id="opp0", agent="Nobody Known"),
        replace_record(deal, agent="moses frase", time=deal.time + timedelta(days=1)),
    ]
    (rec,) = recommend(ctx, idle, one_rule("account_owner"))
    assert rec.owner == "Dustin Brinkmann"
    assert (
        "owner: the account has no owner on record (rule owner account_owner), so Dustin "
        "Brinkmann, the manager of moses frase (agent on the latest deal opp1), to act or "
        "assign an owner"
    ) in rec.why

    # That agent's manager is not on record either.
    ctx.opportunities = ctx.opportunities[:1]
    (rec,) = recommend(ctx, idle, one_rule("manager"))
    assert rec.owner == UNASSIGNED
    assert "the manager of Nobody Known (agent on the latest deal opp0) is not on record" in (
        rec.why
    )


def test_a_manager_not_on_record_falls_back_to_the_account_owner() -> None:
    idle = [signal("no_activity", 40, "days")]
    (rec,) = recommend(context(owner="Nobody Known"), idle, one_rule("manager"))
    assert rec.owner == "Nobody Known"
    assert "owner: Nobody Known's manager is not on record, so the account owner" in rec.why
    (rec,) = recommend(context(owner="moses frase"), idle, one_rule("Manager"))
    assert rec.owner == "Dustin Brinkmann"  # names match case-folded


def test_roles_map_to_people_from_the_file_and_the_caller() -> None:
    idle = [signal("no_activity", 40, "days")]
    rules = one_rule("bid_desk", extra="owners:\n  Bid_Desk: Li Wei\n")
    (rec,) = recommend(context(), idle, rules)
    assert rec.owner == "Li Wei"
    assert rec.action == "Li Wei: 联系 Acme Corporation, 40 天没有动静"
    (rec,) = recommend(context(), idle, rules, owner_of={"BID_DESK": "Zhang San"})
    assert rec.owner == "Zhang San"
    (rec,) = recommend(context(), idle, one_rule("Cheng Liu"))
    assert rec.owner == "Cheng Liu"  # a fixed name as written


def test_sorted_by_priority_then_due(rules) -> None:
    signals = [
        signal("no_activity", 40, "days"),  # low, 72 h
        new_lead(5),  # medium, 72 h
        signal("unresolved_objection", 2, "count"),  # medium, 72 h
        signal("policy_change", 10, "days", [Evidence("policy", "P-7", "")]),  # medium, 168 h
        champion_gone(10),  # high, 48 h
        tender(100),  # high, 52 h
    ]
    recs = recommend(context(), signals, rules)
    assert [(r.priority, r.rule_id) for r in recs] == [
        ("high", "champion-departed"),
        ("high", "tender-countdown"),
        ("medium", "procurement-lead-changed"),
        ("medium", "unresolved-objections"),
        ("medium", "policy-change"),
        ("low", "no-activity"),
    ]


def test_same_situation_later_keeps_the_id_and_a_new_fact_changes_it(rules) -> None:
    first = recommend(context(), [tender(60), budget(12), new_lead(5)], rules)[0]
    later_ctx = replace(context(), as_of=AS_OF + timedelta(hours=6))
    later = recommend(later_ctx, [tender(54), budget(11.75), new_lead(5.25)], rules)[0]
    assert later.recommendation_id == first.recommendation_id
    assert later.due == first.due  # the tender has not moved, so neither has the deadline

    other = recommend(context(), [tender(60, ref="T-2"), budget(12), new_lead(5)], rules)[0]
    assert other.recommendation_id != first.recommendation_id
    assert first.recommendation_id == recommendation_id(
        "acme", "tender-budget-new-lead", [tender(1), budget(2), new_lead(3)]
    )


def test_product_condition_matches_the_id_or_name_case_folded() -> None:
    text = RULE.replace(
        "when: {signal: no_activity, min: 1}", "when: {signal: low_stock, product: gtx pro}"
    ).replace("{idle_days}", "{stock_units}")
    rules = parse_rules(text.replace("OWNER", "account_owner").encode(), Path("r.yaml"))
    low = signal("low_stock", 3, "units", product_id="GTX Pro")
    other = signal("low_stock", 3, "units", product_id="MG Special")
    assert len(recommend(context(), [low], rules)) == 1
    assert recommend(context(), [other], rules) == []


def test_not_and_any_conditions_and_an_unmatched_placeholder() -> None:
    text = """\
rules:
  - id: quiet-no-tender
    when:
      all:
        - any: [no_activity, competitor_mentioned]
        - not: tender_countdown
    priority: low
    owner: account_owner
    due_in_hours: 1
    action: "{idle_days} / {mentions}"
"""
    rules = parse_rules(text.encode(), Path("r.yaml"))
    (rec,) = recommend(context(), [signal("no_activity", 40, "days")], rules)
    assert rec.action == "40 / —"
    assert recommend(context(), [signal("no_activity", 40, "days"), tender(30)], rules) == []


def test_disabled_rules_do_not_fire() -> None:
    rules = parse_rules(
        RULE.replace("OWNER", "account_owner")
        .replace("  - id: r\n", "  - id: r\n    enabled: no\n")
        .encode(),
        Path("r.yaml"),
    )
    assert len(rules) == 0
    assert recommend(context(), [signal("no_activity", 40, "days")], list(rules.rules)) == []


def test_signals_of_another_account_are_refused(rules) -> None:
    stray = replace(signal("no_activity", 40, "days"), account_id="globex")
    with pytest.raises(InputError, match="signals of accounts globex were passed for account acme"):
        recommend(context(), [stray], rules)


def test_signals_computed_from_records_fire_the_critical_rule(rules) -> None:
    ctx = context()
    opens = AS_OF + timedelta(hours=60)
    ctx.tenders = [replace_record(ctx.tenders[0], opens_at=opens)]
    ctx.budget_windows = [
        BudgetWindow(
            time=datetime(2017, 1, 1, tzinfo=UTC),
            window_id="fy17",
            account_id="acme",
            opens=datetime(2017, 1, 1, tzinfo=UTC),
            closes=datetime(2018, 1, 10, tzinfo=UTC),
        )
    ]
    signals = compute_signals(ctx, SignalSettings(), OutcomeSettings())
    by_type = {s.type: s for s in signals}
    assert by_type["tender_countdown"].value == 60
    assert by_type["procurement_lead_changed"].value == pytest.approx(28.375, abs=0.01)

    top = recommend(ctx, signals, rules)[0]
    assert top.rule_id == "tender-budget-new-lead"
    assert top.due == iso(opens - timedelta(hours=24))
    assert "brief the new procurement lead, Wang Fang" in top.action


def test_sample_accounts_fire_the_critical_tender_rule_at_the_store_clock(
    rules, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path)
    store = AccountStore(settings.db_path)
    import_paths([SAMPLE_ACCOUNTS], store, settings.accounts)
    clock = store.clock()
    (acme,) = [a.account_id for a in store.accounts() if a.name == "Acme Corporation"]
    ctx = store.context(acme, as_of=clock)

    recs = fired(recommend(ctx, compute_signals(ctx, settings.signals, settings.outcomes), rules))
    rec = recs["tender-budget-new-lead"]

    # The due time worked out from the records, not from the signals: the earliest of the
    # tender's next event and the budget window's close, less the rule's margin.
    (tender_record,) = ctx.tenders
    events = [m.due for m in tender_record.milestones if not m.done]
    events += [tender_record.opens_at, tender_record.deadline]
    next_event = min(e for e in events if e and e > clock)
    closes = min(w.closes for w in ctx.budget_windows if w.opens <= clock < w.closes)
    margin = timedelta(hours=rules.get("tender-budget-new-lead").due_margin_hours)
    assert rec.due == iso(max(clock, min(next_event, closes) - margin))
    assert rec.due == "2018-01-08T17:00:00Z"  # clarification questions due 01-09 17:00, less 24 h
    assert rec.priority == "critical"
    assert rec.owner == "Mara Quinlan"  # the agent on Acme's latest opportunity
    assert "Engineering workstation refresh 2018 is 32 h away" in rec.action
    assert "brief the new procurement lead, Ravi Menon" in rec.action
    assert {s.type for s in rec.signals} == {
        "tender_countdown",
        "budget_window_closing",
        "procurement_lead_changed",
    }
    assert "tender-countdown" not in recs  # superseded by the critical rule
    assert "only 6 x GTX Pro available" in recs["low-stock-in-play"].action


def test_every_placeholder_has_a_filler() -> None:
    assert _FILLERS.keys() == PLACEHOLDERS.keys()


# --- who to call, what is short ----------------------------------------------------------


@pytest.fixture
def sample(tmp_path: Path) -> tuple[AccountStore, Settings]:
    settings = load_settings(data_dir=tmp_path)
    store = AccountStore(settings.db_path)
    import_paths([SAMPLE_ACCOUNTS], store, settings.accounts)
    return store, settings


def sample_recs(sample, rules: RuleSet, account: str) -> dict[str, object]:
    store, settings = sample
    ctx = store.context(account, as_of=SAMPLE_CLOCK)
    return fired(recommend(ctx, compute_signals(ctx, settings.signals, settings.outcomes), rules))


def test_a_contact_who_left_is_not_offered_as_someone_to_call(rules, sample) -> None:
    store, _ = sample
    before = sample_recs(sample, rules, "Betatech")
    assert "call Omar Haddad (purchasing manager) and find out" in (
        before["champion-departed"].action
    )

    # Omar Haddad (C-BETA-2) leaves after his contact row was written; a departure
    # dated after the signals' time does not count yet.
    left = ContactChange(
        time="2018-01-05", change_id="CC-9", contact_id="C-BETA-2", account_id="Betatech",
        change="left", old_role="purchasing manager",
    )  # fmt: skip
    later = left.model_copy(update={"change_id": "CC-10", "time": SAMPLE_CLOCK.replace(day=9)})
    store.upsert([later])
    assert "Omar Haddad" in sample_recs(sample, rules, "Betatech")["policy-change"].action
    store.upsert([left])

    after = sample_recs(sample, rules, "Betatech")
    for rule_id in ("champion-departed", "policy-change"):
        assert "Omar Haddad" not in after[rule_id].action
    # Helen Brooks left as well: nobody is left to name.
    assert "Rebuild the relationship: call — and find out" in after["champion-departed"].action


def test_several_low_stock_products_each_keep_their_own_count(rules, sample) -> None:
    # The sample's Acme has 6 GTX Pro for its tender; MG Advanced, now in a deal too, has 1.
    store, _ = sample
    store.upsert(
        [
            Opportunity(
                time="2018-01-03", opportunity_id="S-900", account_id="Acme Corporation",
                product_id="MG Advanced", agent="Mara Quinlan", stage="engaging",
            ),
            StockLevel(time=SAMPLE_CLOCK, product_id="MG Advanced", on_hand=1),
        ]
    )  # fmt: skip
    action = sample_recs(sample, rules, "Acme Corporation")["low-stock-in-play"].action
    assert "6 x GTX Pro, 1 x MG Advanced" in action
    assert "Only 1 units" not in action

    # One short product reads the same way.
    one = fired(
        recommend(context(), [signal("low_stock", 1, "units", product_id="GTX Pro")], rules)
    )
    assert "only 1 x GTX Pro available" in one["low-stock-in-play"].action
    two = fired(
        recommend(
            context(),
            [
                signal("low_stock", 6, "units", product_id="GTX Pro"),
                signal("low_stock", 1, "units", product_id="MG Special"),
            ],
            rules,
        )
    )
    assert "6 x GTX Pro, 1 x MG Special" in two["low-stock-in-play"].action
