"""The win-versus-discount curve on the real negotiations, and the discounts of won CRM deals.

Figures: the curve at 0, 5, 10, 20 and 30 % off with bootstrap intervals; its
cross-validated AUC and Brier score against the base rate (the baseline); how often
the no-deal price read from the seller's turns agrees with the dataset's own price
annotation (and how often "held at list" would); two checks on the selection effect
(the slope with the buyer's private target as a control, and without the no-deals
where the seller never named a price); the realised discounts of won deals per
product in the CRM.

Run: BENCH_OUT=/tmp/bench-pricing.json .venv/bin/python -m pytest -q -s \
    tests/bench/bench_pricing.py -o python_files='bench_*.py'
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from copilot.context import Opportunity, Product
from copilot.pricing import (
    REPORTED_DISCOUNTS,
    DiscountCurve,
    observations_from_calls,
    won_discounts,
)
from tests.copilot.test_pricing import CRAIGSLIST, CRM, parsed_calls

pytestmark = [pytest.mark.real_data]


@pytest.fixture(scope="module")
def calls():
    if not CRAIGSLIST.is_dir():
        pytest.skip(f"real data not found at {CRAIGSLIST}")
    return parsed_calls(CRAIGSLIST)


def test_curve_figures(calls, bench_report) -> None:
    curve = DiscountCurve.from_calls(calls, bootstrap=1000)
    bench_report("curve dialogues", curve.n_dialogues, "dialogues")
    left_out = ", ".join(f"{n} {why}" for why, n in curve.left_out.items())
    bench_report("curve observations", curve.n_observations, "points", note=f"left out: {left_out}")
    bench_report("curve deals", curve.n_accepted, "deals")
    for source, n in sorted(curve.price_sources.items()):
        bench_report(f"price from {source}", n, "points")
    for d in REPORTED_DISCOUNTS:
        low, high = curve.interval(d)
        bench_report(
            f"P(deal) at {d:.0%} off",
            curve.win_probability(d),
            "probability",
            note=f"95% bootstrap {low:.3f}-{high:.3f}; lift {curve.lift(d):+.2f} log-odds",
        )
    lo, hi = curve.slope_interval
    bench_report("slope", curve.slope, "log-odds per unit discount", note=f"95% {lo:.2f}-{hi:.2f}")
    bench_report("support high", curve.support[1], "discount", note="95th pct of the data")
    assert lo > 0


def test_curve_predicts_better_than_the_base_rate(calls, bench_report) -> None:
    obs = observations_from_calls(calls)
    x = np.array([[o.discount] for o in obs])
    y = np.array([int(o.accepted) for o in obs])
    predicted, base = np.zeros(len(y)), np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=13).split(x, y):
        model = LogisticRegression(C=np.inf).fit(x[train], y[train])
        predicted[test] = model.predict_proba(x[test])[:, 1]
        base[test] = y[train].mean()
    auc = roc_auc_score(y, predicted)
    brier, brier_base = brier_score_loss(y, predicted), brier_score_loss(y, base)
    bench_report("curve AUC (5-fold)", auc, "AUC", baseline=0.5, note="base rate = 0.5")
    bench_report("curve Brier (5-fold)", brier, "Brier", baseline=brier_base, note="vs base rate")
    assert auc > 0.75 and brier < brier_base


def _raw_seller_prices() -> dict[str, float | None]:
    """The dataset's own reading of the seller's last price: the price the origin's parser
    annotated on the seller's messages (metadata.price) and the seller's formal offers."""
    dialogues = json.loads((CRAIGSLIST / "dialogues.json").read_text(encoding="utf-8"))
    prices = {}
    for d in dialogues:
        roles = {i: kb["personal"]["Role"] for i, kb in enumerate(d["scenario"]["kbs"])}
        last = None
        for event in d["events"]:
            if roles.get(event.get("agent")) != "seller":
                continue
            if event["action"] == "offer":
                last = float(event["data"]["price"])
            elif event["action"] == "message" and (event.get("metadata") or {}).get("price"):
                last = float(event["metadata"]["price"])
        prices[f"craigslist-{d['uuid']}"] = last
    return prices


def test_no_deal_prices_agree_with_the_datasets_annotation(calls, bench_report) -> None:
    annotated = _raw_seller_prices()
    listed = {c.call_id: c.extra["list_price"] for c in calls}
    no_deals = [o for o in observations_from_calls(calls) if not o.accepted]
    ours = at_list = 0
    for o in no_deals:
        list_price = listed[o.source]
        truth = annotated[o.source] or list_price
        price = list_price * (1 - o.discount)
        ours += abs(price - truth) <= 0.01 * list_price
        at_list += abs(list_price - truth) <= 0.01 * list_price
    bench_report(
        "no-deal price agrees with annotation",
        ours / len(no_deals),
        "share",
        baseline=at_list / len(no_deals),
        note=f"within 1 % of list, {len(no_deals)} no-deals; baseline = always at list",
    )
    assert ours > at_list


def test_selection_effect_checks(calls, bench_report) -> None:
    obs = observations_from_calls(calls)
    by_id = {c.call_id: c for c in calls}
    x = np.array([o.discount for o in obs])
    y = np.array([int(o.accepted) for o in obs])
    gap = np.array(
        [
            1 - by_id[o.source].extra["buyer_target"] / by_id[o.source].extra["list_price"]
            for o in obs
        ]
    )
    plain = LogisticRegression(C=np.inf).fit(x.reshape(-1, 1), y).coef_[0, 0]
    controlled = LogisticRegression(C=np.inf).fit(np.column_stack([x, gap]), y).coef_[0]
    bench_report(
        "slope with buyer-target control",
        controlled[0],
        "log-odds per unit discount",
        baseline=plain,
        note=f"buyer gap coefficient {controlled[1]:+.2f}",
    )
    named = np.array([o.price_from != "list" for o in obs])
    without = LogisticRegression(C=np.inf).fit(x[named].reshape(-1, 1), y[named]).coef_[0, 0]
    bench_report(
        "slope without no-deals held at list",
        without,
        "log-odds per unit discount",
        baseline=plain,
        note=f"{int((~named).sum())} points dropped",
    )


def test_won_deal_discounts_in_the_crm(bench_report) -> None:
    if not CRM.is_dir():
        pytest.skip(f"real data not found at {CRM}")
    t0 = datetime(2017, 1, 1, tzinfo=UTC)
    with (CRM / "products.csv").open(encoding="utf-8") as f:
        products = [
            Product(
                time=t0, product_id=r["product"], name=r["product"], list_price=r["sales_price"]
            )
            for r in csv.DictReader(f)
        ]
    with (CRM / "sales_pipeline.csv").open(encoding="utf-8") as f:
        deals = [
            Opportunity(
                time=t0,
                opportunity_id=r["opportunity_id"],
                product_id=r["product"],
                stage=r["deal_stage"].lower(),
                value=float(r["close_value"]) if r["close_value"] else None,
            )
            for r in csv.DictReader(f)
        ]
    for pid, won in sorted(won_discounts(deals, products).items()):
        row = won.to_dict()
        bench_report(
            f"won discount p90 {pid}",
            row["p90"],
            "discount",
            note=f"{won.deals} deals; p10 {row['p10']:+.3f} p25 {row['p25']:+.3f} "
            f"p50 {row['p50']:+.3f} p75 {row['p75']:+.3f}",
        )
