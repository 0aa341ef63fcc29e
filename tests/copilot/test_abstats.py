"""The A/B statistics against values computed another way: closed formulas written here
with ``math`` only, and published worked examples."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from copilot.abstats import (
    Guards,
    compare_to_control,
    daily_series,
    experiment_results,
    prob_beats,
    srm_check,
    weights_problem,
    wilson_interval,
)
from copilot.decisions import DecisionLog
from copilot.experiments import ExperimentStore
from tests.copilot.test_experiments import damage_weights

Z95 = 1.959963984540054  # the 97.5 % point of the standard normal


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 / denominator * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return centre - half, centre + half


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def prob_b_beats_a_evan_miller(a_k: int, a_n: int, b_k: int, b_n: int) -> float:
    """Evan Miller, "Formulas for Bayesian A/B Testing" (2014), for integer Beta parameters:
    P(pB > pA) = sum_{i=0}^{alpha_B - 1} B(alpha_A + i, beta_A + beta_B)
                 / ((beta_B + i) B(1 + i, beta_B) B(alpha_A, beta_A))."""
    alpha_a, beta_a = 1 + a_k, 1 + a_n - a_k
    alpha_b, beta_b = 1 + b_k, 1 + b_n - b_k
    total = 0.0
    for i in range(alpha_b):
        total += math.exp(
            log_beta(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - log_beta(1 + i, beta_b)
            - log_beta(alpha_a, beta_a)
        )
    return total


def fisher_two_sided_by_hand(k1: int, n1: int, k2: int, n2: int) -> float:
    """Sum of the hypergeometric probabilities of every table with the same margins that
    is no more likely than the observed one."""
    successes, total = k1 + k2, n1 + n2

    def probability(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, successes - x) / math.comb(total, successes)

    observed = probability(k1)
    low, high = max(0, successes - n2), min(n1, successes)
    return sum(
        probability(x) for x in range(low, high + 1) if probability(x) <= observed * (1 + 1e-7)
    )


# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison
# of seven methods", Statistics in Medicine 17:857-872, Table II, method 3 (score, no
# continuity correction), to the four decimals printed there.
NEWCOMBE_WILSON = [
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
]


@pytest.mark.parametrize(("k", "n", "published"), NEWCOMBE_WILSON)
def test_wilson_interval_matches_newcombe_and_the_closed_formula(k, n, published) -> None:
    low, high = wilson_interval(k, n)
    assert (round(low, 4), round(high, 4)) == published
    by_hand = wilson_by_hand(k, n)
    assert low == pytest.approx(by_hand[0], abs=1e-12)
    assert high == pytest.approx(by_hand[1], abs=1e-12)


def test_wilson_interval_of_nothing_is_none() -> None:
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize(
    ("control", "variant"),
    [
        ((3, 10), (5, 10)),
        ((0, 7), (2, 9)),
        ((40, 200), (52, 200)),
        ((200, 1000), (230, 1000)),
        ((1200, 5000), (1190, 5000)),
        ((9, 10), (1, 10)),
    ],
)
def test_prob_beats_matches_evan_millers_closed_form(control, variant) -> None:
    expected = prob_b_beats_a_evan_miller(*control, *variant)
    assert prob_beats(control, variant) == pytest.approx(expected, abs=1e-8)
    # The two orders are complementary (ties have probability zero).
    assert prob_beats(variant, control) == pytest.approx(1 - expected, abs=1e-8)


def test_prob_beats_with_identical_data_is_one_half() -> None:
    assert prob_beats((30, 100), (30, 100)) == pytest.approx(0.5, abs=1e-9)


def test_z_test_matches_the_pooled_formula_by_hand() -> None:
    k1, n1, k2, n2 = 120, 1000, 150, 1000
    pooled = (k1 + k2) / (n1 + n2)
    z = (k2 / n2 - k1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = math.erfc(abs(z) / math.sqrt(2))  # two-sided: 2 * (1 - Phi(|z|))

    test, z_stat, p = compare_to_control((k1, n1), (k2, n2))
    assert test == "z"
    assert z_stat == pytest.approx(z, rel=1e-12)
    assert z_stat == pytest.approx(1.9630, abs=1e-4)
    assert p == pytest.approx(p_value, rel=1e-9)
    assert p == pytest.approx(0.0496, abs=1e-4)


def test_fisher_exact_for_small_counts_matches_the_tea_tasting_experiment() -> None:
    # Fisher (1935), The Design of Experiments: the lady tasting tea, 3 of 4 cups right.
    # Tables as extreme as [[3, 1], [1, 3]]: (16 + 1) * 2 / 70 arrangements, p = 34/70.
    test, z, p = compare_to_control((1, 4), (3, 4))
    assert (test, z) == ("fisher", None)
    assert p == pytest.approx(34 / 70, abs=1e-12)


def test_srm_chi_square_by_hand() -> None:
    # Two variants, 50/50: 60 vs 40 reps -> (10^2 + 10^2) / 50 = 4, df 1.
    check = srm_check({"a": 60, "b": 40}, {"a": 0.5, "b": 0.5})
    assert check.statistic == pytest.approx(4.0)
    assert check.p_value == pytest.approx(math.erfc(math.sqrt(4.0 / 2)), rel=1e-9)  # 0.0455
    assert not check.mismatch

    # Three variants 50/25/25 over 400 reps, observed 230/80/90: df 2, p = exp(-x/2).
    check = srm_check({"a": 230, "b": 80, "c": 90}, {"a": 0.5, "b": 0.25, "c": 0.25})
    statistic = (230 - 200) ** 2 / 200 + (80 - 100) ** 2 / 100 + (90 - 100) ** 2 / 100
    assert statistic == pytest.approx(9.5)
    assert check.statistic == pytest.approx(statistic)
    assert check.p_value == pytest.approx(math.exp(-statistic / 2), rel=1e-9)
    assert check.expected == pytest.approx({"a": 200.0, "b": 100.0, "c": 100.0})
    assert not check.mismatch  # p = 0.0087

    flagged = srm_check({"a": 700, "b": 300}, {"a": 0.5, "b": 0.5})
    assert flagged.mismatch and flagged.p_value < 1e-30
    assert srm_check({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5}) is None


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({"a": 0.0, "b": 0.0}, "the weights sum to 0"),
        ({"a": 1e308, "b": 1e308}, "the weights sum to inf"),
        ({"a": 1.0, "b": 0.0}, "variant 'b' has weight 0 or no number"),
        ({"a": 1.0, "b": float("nan")}, "the weights sum to nan"),
    ],
)
def test_srm_check_of_degenerate_weights_is_none_with_the_reason(weights, problem) -> None:
    assert weights_problem(weights) == problem
    assert srm_check({"a": 3, "b": 4}, weights) is None
    assert weights_problem({"a": 0.5, "b": 0.5}) is None


# --- one experiment end to end ---------------------------------------------------------

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def stores(tmp_path: Path) -> tuple[ExperimentStore, DecisionLog]:
    db = tmp_path / "copilot.db"
    return ExperimentStore(db), DecisionLog(db)


def expose(log: DecisionLog, exp_id: str, variant: str, rep: str, at: datetime, **kw) -> str:
    return log.record_suggestion(
        kw.pop("kind", "objection"),
        rep_id=rep,
        team="Central",
        account_id=kw.pop("account_id", None),
        model=variant,
        input_text="价格太贵了",
        proposed="我们的方案包含三年维保，总成本更低。",
        citations=["call-1"],
        experiment_id=exp_id,
        variant=variant,
        at=at,
    )


def test_experiment_results_counts_rates_tests_and_deals(stores) -> None:
    store, log = stores
    exp = store.create("price", [{"name": "control"}, {"name": "dpo"}], created_by="maria")

    # control: 2 reps, 10 exposures, 3 accepted + 1 edited, 2 rejected, 4 no answer
    # dpo:     2 reps, 10 exposures, 6 accepted + 2 edited, 1 rejected, 1 no answer
    plan = {
        "control": ["accepted"] * 3 + ["edited"] + ["rejected"] * 2 + [None] * 4,
        "dpo": ["accepted"] * 6 + ["edited"] * 2 + ["rejected"] + [None],
    }
    for variant, actions in plan.items():
        for i, action in enumerate(actions):
            rep = f"{variant}-rep-{i % 2}"
            account = f"{variant}-acct-{i % 3}"
            sid = expose(log, exp.id, variant, rep, T0 + timedelta(days=i % 2), account_id=account)
            if action == "edited":
                log.record_feedback(sid, action, rep, text="改过的回复")
            elif action == "rejected":
                log.record_feedback(sid, action, rep, reason="语气太硬")
            elif action:
                log.record_feedback(sid, action, rep)
    # Deal results after the exposures: control won 1 of 3 accounts, dpo won 2 of 2.
    later = T0 + timedelta(days=5)
    for account, result in [
        ("control-acct-0", "won"),
        ("control-acct-1", "lost"),
        ("control-acct-2", "lost"),
        ("dpo-acct-0", "won"),
        ("dpo-acct-1", "won"),
    ]:
        log.record_deal_result(account, result, at=later)
    # A result before every exposure is no outcome of them.
    log.record_deal_result("dpo-acct-2", "lost", at=T0 - timedelta(days=1))

    results = experiment_results(store, log, exp.id)
    control, dpo = results.variant("control"), results.variant("dpo")

    assert (control.exposures, control.conversions, control.reps) == (10, 4, 2)
    assert (control.accepted, control.edited, control.rejected, control.no_feedback) == (3, 1, 2, 4)
    assert (dpo.exposures, dpo.conversions, dpo.reps) == (10, 8, 2)
    assert control.conversion_rate == pytest.approx(0.4)
    assert dpo.conversion_ci == pytest.approx(wilson_by_hand(8, 10), abs=1e-12)
    assert dpo.lift == pytest.approx(1.0)
    assert dpo.prob_beats_control == pytest.approx(
        prob_b_beats_a_evan_miller(4, 10, 8, 10), abs=1e-8
    )
    # Expected misses in dpo: 10 * 8/20 = 4 < 5, so Fisher's exact test ran.
    assert dpo.test == "fisher"
    assert dpo.p_value == pytest.approx(fisher_two_sided_by_hand(8, 10, 4, 10), rel=1e-9)
    assert control.is_control and control.prob_beats_control is None and control.p_value is None

    assert (control.deals_won, control.deals_lost) == (1, 2)
    assert control.win_rate == pytest.approx(1 / 3)
    assert (dpo.deals_won, dpo.deals_lost, dpo.win_rate) == (2, 0, 1.0)

    # 2 reps each at 50/50: no SRM; every guard on thin data fires.
    assert results.srm.observed == {"control": 2, "dpo": 2} and not results.srm.mismatch
    text = " ".join(results.warnings)
    assert "too little data in variant 'control'" in text
    assert "10 exposures (fewer than 100)" in text
    assert "2 reps (fewer than 5)" in text
    assert "fewer than 10 deal results" in text
    assert "sample ratio mismatch" not in text

    # Daily series: two days, exposures alternate between them.
    days = [(d.date, d.exposures, d.conversions, d.cumulative_rate) for d in results.daily]
    assert days == [
        ("2025-03-03", 5, 2, pytest.approx(2 / 5)),
        ("2025-03-04", 5, 2, pytest.approx(4 / 10)),
        ("2025-03-03", 5, 4, pytest.approx(4 / 5)),
        ("2025-03-04", 5, 4, pytest.approx(8 / 10)),
    ]
    assert [d.variant for d in results.daily] == ["control", "control", "dpo", "dpo"]
    body = results.to_dict()
    assert body["variants"][1]["name"] == "dpo" and body["srm"]["unit"] == "reps"


def test_sample_ratio_mismatch_is_flagged_over_reps(stores) -> None:
    store, log = stores
    exp = store.create("srm", [{"name": "a"}, {"name": "b"}])
    # 90 reps logged in a, 10 in b, against 50/50 weights: p far below 0.001.
    for i in range(100):
        expose(log, exp.id, "a" if i < 90 else "b", f"rep-{i}", T0)
    results = experiment_results(store, log, exp.id, Guards(min_exposures=1, min_reps=1))
    assert results.srm.mismatch
    assert results.srm.statistic == pytest.approx((40**2 + 40**2) / 50)
    assert results.warnings[0].startswith("sample ratio mismatch: reps per variant (a 90, b 10)")


def test_one_busy_rep_does_not_raise_a_false_srm_alarm(stores) -> None:
    store, log = stores
    exp = store.create("busy", [{"name": "a"}, {"name": "b"}])
    # 5 reps per arm, but one rep in a is ten times busier: exposures 140 vs 50.
    for i in range(10):
        arm = "a" if i < 5 else "b"
        for _ in range(100 if i == 0 else 10):
            expose(log, exp.id, arm, f"rep-{i}", T0)
    results = experiment_results(store, log, exp.id)
    assert (results.variant("a").exposures, results.variant("b").exposures) == (140, 50)
    assert results.srm.observed == {"a": 5, "b": 5} and results.srm.p_value == pytest.approx(1.0)
    assert not any("sample ratio" in w for w in results.warnings)


def test_no_exposures_yet_warns_and_has_no_series(stores) -> None:
    store, log = stores
    exp = store.create("empty", [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    results = experiment_results(store, log, exp.id)
    assert results.srm is None and results.daily == []
    assert all(v.conversion_rate is None and v.conversion_ci is None for v in results.variants)
    assert any(w.startswith("no exposures yet") for w in results.warnings)


def test_crossed_reps_and_several_challengers_are_warned(stores) -> None:
    store, log = stores
    exp = store.create("three", [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    expose(log, exp.id, "a", "rep-1", T0)
    expose(log, exp.id, "b", "rep-1", T0)
    expose(log, exp.id, "c", "rep-2", T0)
    expose(log, exp.id, "gone", "rep-3", T0)
    text = " ".join(experiment_results(store, log, exp.id).warnings)
    assert "1 reps were exposed to more than one variant" in text
    assert "compare each p-value with 0.025 (Bonferroni)" in text
    assert "1 exposures name a variant this experiment does not have" in text


def test_daily_series_fills_days_without_exposures(stores) -> None:
    store, log = stores
    exp = store.create("gaps", [{"name": "a"}, {"name": "b"}])
    sid = expose(log, exp.id, "a", "r", T0)
    log.record_feedback(sid, "accepted", "r")
    expose(log, exp.id, "a", "r", T0 + timedelta(days=2))
    rows = log.query(experiment=exp.id, limit=None)
    series = daily_series(rows, ["a", "b"])
    assert [(d.variant, d.date, d.exposures, d.cumulative_exposures) for d in series] == [
        ("a", "2025-03-03", 1, 1),
        ("a", "2025-03-04", 0, 1),
        ("a", "2025-03-05", 1, 2),
        ("b", "2025-03-03", 0, 0),
        ("b", "2025-03-04", 0, 0),
        ("b", "2025-03-05", 0, 0),
    ]
    assert [d.cumulative_rate for d in series[:3]] == [1.0, 1.0, 0.5]
    assert series[3].cumulative_rate is None


def test_results_of_stored_zero_weights_warn_instead_of_failing(stores) -> None:
    store, log = stores
    exp = store.create("price", [{"name": "control"}, {"name": "dpo"}])
    damage_weights(store, exp.id, [0.0, 0.0])
    expose(log, exp.id, "control", "rep-1", T0)
    expose(log, exp.id, "dpo", "rep-2", T0)

    results = experiment_results(store, log, exp.id)
    assert results.srm is None
    assert [v.exposures for v in results.variants] == [1, 1]
    [warning] = [w for w in results.warnings if "stored weights" in w]
    assert warning.startswith(
        "the stored weights (control 0, dpo 0) are unusable: the weights sum to 0;"
    )
    assert "start one with weights on a small common scale" in warning
