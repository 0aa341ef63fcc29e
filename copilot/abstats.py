"""The statistics behind the A/B dashboard: which variant converts, how sure we are, and
whether the experiment itself can be trusted.

``experiment_results(store, log, experiment_id)`` reads the experiment and its
exposures (suggestions logged with its id) and returns ``Results``:

- **Conversion** = exposures the rep accepted or edited / all exposures (an exposure
  without feedback counts as not converted), per variant, with a 95 % **Wilson score
  interval** (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``). Wilson
  keeps its coverage near 95 % at small n and near 0 or 1, where the textbook
  normal ("Wald") interval is too narrow and can leave [0, 1].
- **Chance to beat control**: P(p_variant > p_control) under independent Beta(1, 1)
  priors, i.e. Beta(1 + conversions, 1 + misses) posteriors, by numerical
  integration of f_variant(x) * F_control(x) over the variant's posterior with
  ``scipy.integrate.quad`` (absolute error under 1e-9; the tests check it against
  Evan Miller's closed-form sum).
- **Frequentist test** against control, two-sided: the pooled two-proportion z test,
  or Fisher's exact test when any expected cell of the 2x2 table is below 5 (the
  z test's normal approximation is poor there). ``test`` says which one ran. With
  several challengers the p-values are per comparison, not corrected (a warning says so).
- **Deal win rate**: won / (won + lost) over the deal results that followed an
  exposure of the variant on that account (each result counted once per variant),
  with its Wilson interval.
- **Sample-ratio mismatch (SRM)**: chi-square goodness of fit
  (``scipy.stats.chisquare``) of the *reps* exposed per variant against the weights,
  flagged at p < 0.001. Reps, not exposures, because reps are what is randomised: one
  busy rep adds hundreds of exposures to one arm, and a test on exposures would
  raise a false alarm in nearly every real team.
- **Daily series** per variant (UTC date of the exposure; a conversion is counted on
  its exposure's date): exposures, conversions and the cumulative rate, every date
  from the first exposure to the last, for the dashboard's plots.

Known shortcoming: exposures of one rep are not independent (the same rep, the same
habits), so with few reps the intervals and p-values above are too optimistic. The
``min_reps`` guard warns then; a rep-level (cluster) bootstrap or the delta method
on per-rep rates would remove the problem and should replace the per-exposure
intervals once teams run experiments with dozens of reps.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from scipy import integrate, stats

from copilot.decisions import Decision, DecisionLog
from copilot.experiments import Experiment, ExperimentStore

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
SRM_ALPHA = 0.001
# Below this expected count in a cell of the 2x2 table the z test's normal
# approximation is poor (the usual rule of thumb for chi-square tests).
MIN_EXPECTED_FOR_Z = 5.0
_TAIL = 1e-12  # posterior mass left out at each end of the integration range


@dataclass(frozen=True)
class Guards:
    """When the numbers are too thin to act on (each threshold with its reason).

    - ``min_exposures`` 100 per variant: below it a Wilson interval around a 20-30 %
      rate is still about +-9 points wide, wider than the effects worth detecting.
    - ``min_conversions`` 10 per variant: the normal approximations need about 10
      successes and 10 failures per arm.
    - ``min_reps`` 5 per variant: exposures of one rep are alike (see the module
      docstring); with fewer reps one rep's style decides the arm.
    - ``min_deals`` 10 per variant: below it a win rate says little (a Wilson
      interval at 5 of 10 spans 0.24-0.76).
    """

    min_exposures: int = 100
    min_conversions: int = 10
    min_reps: int = 5
    min_deals: int = 10


GUARDS = Guards()


@dataclass(frozen=True)
class VariantStats:
    name: str
    is_control: bool
    weight: float
    reps: int
    exposures: int
    accepted: int
    edited: int
    rejected: int
    no_feedback: int
    conversions: int
    conversion_rate: float | None
    conversion_ci: tuple[float, float] | None
    lift: float | None  # relative to control's rate: 0.1 = 10 % more conversions
    prob_beats_control: float | None
    test: Literal["z", "fisher"] | None
    z: float | None
    p_value: float | None
    deals_won: int
    deals_lost: int
    win_rate: float | None
    win_rate_ci: tuple[float, float] | None


@dataclass(frozen=True)
class SrmCheck:
    unit: str  # what was counted: "reps"
    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class DailyPoint:
    variant: str
    date: str
    exposures: int
    conversions: int
    cumulative_exposures: int
    cumulative_conversions: int
    cumulative_rate: float | None


@dataclass
class Results:
    experiment: Experiment
    variants: list[VariantStats]
    srm: SrmCheck | None
    warnings: list[str]
    daily: list[DailyPoint]
    computed_at: str
    methods: dict[str, str] = field(default_factory=dict)

    def variant(self, name: str) -> VariantStats:
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment.to_dict(),
            "variants": [asdict(v) for v in self.variants],
            "srm": asdict(self.srm) if self.srm else None,
            "warnings": list(self.warnings),
            "daily": [asdict(d) for d in self.daily],
            "computed_at": self.computed_at,
            "methods": dict(self.methods),
        }


METHODS = {
    "conversion": "accepted or edited feedback / exposures; no feedback counts as not converted",
    "interval": "95% Wilson score interval (scipy.stats.binomtest.proportion_ci)",
    "prob_beats_control": "P(p_variant > p_control), Beta(1,1) priors, numerical integration",
    "test": "two-sided pooled two-proportion z test; Fisher exact when an expected cell < 5",
    "srm": f"chi-square goodness of fit of reps per variant vs weights, flagged at p < {SRM_ALPHA}",
    "win_rate": "won / (won + lost) over deal results after an exposure on the account",
}


# --- the statistics, each usable alone ------------------------------------------------


def wilson_interval(successes: int, trials: int) -> tuple[float, float] | None:
    """95 % Wilson score interval of successes / trials; None for no trials."""
    if trials <= 0:
        return None
    ci = stats.binomtest(successes, trials).proportion_ci(
        confidence_level=CONFIDENCE, method="wilson"
    )
    return (float(ci.low), float(ci.high))


def prob_beats(control: tuple[int, int], variant: tuple[int, int]) -> float:
    """P(p_variant > p_control) for (successes, trials) pairs under Beta(1, 1) priors.

    P = integral of f_B(x) * F_A(x) dx, B the variant's posterior and A control's,
    taken over B's posterior between its 1e-12 and 1 - 1e-12 quantiles (the mass left
    out bounds the error with quad's own 1e-10), with B's mean as a break point so a
    narrow posterior is never stepped over.
    """
    a = stats.beta(1 + control[0], 1 + control[1] - control[0])
    b = stats.beta(1 + variant[0], 1 + variant[1] - variant[0])
    low, high = float(b.ppf(_TAIL)), float(b.isf(_TAIL))
    value, _ = integrate.quad(
        lambda x: b.pdf(x) * a.cdf(x),
        low,
        high,
        points=[float(b.mean())],
        limit=200,
        epsabs=1e-10,
        epsrel=1e-10,
    )
    return min(1.0, max(0.0, float(value)))


def compare_to_control(
    control: tuple[int, int], variant: tuple[int, int]
) -> tuple[Literal["z", "fisher"], float | None, float]:
    """(test, z statistic or None, two-sided p-value) for variant vs control conversions."""
    (k1, n1), (k2, n2) = control, variant
    pooled = (k1 + k2) / (n1 + n2)
    expected = [n * pooled for n in (n1, n2)] + [n * (1 - pooled) for n in (n1, n2)]
    if min(expected) < MIN_EXPECTED_FOR_Z:
        _, p_value = stats.fisher_exact([[k2, n2 - k2], [k1, n1 - k1]], alternative="two-sided")
        return "fisher", None, float(p_value)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (k2 / n2 - k1 / n1) / se
    return "z", z, float(2 * stats.norm.sf(abs(z)))


def weights_problem(weights: dict[str, float]) -> str | None:
    """Why ``weights`` give no expected count to test against, or None when they do.

    New experiments cannot get such weights (copilot/experiments.py refuses them), but
    one stored before that check, or edited in the database, can hold them.
    """
    share = sum(weights.values())
    if not weights or not math.isfinite(share) or share <= 0:
        return f"the weights sum to {share:g}"
    starved = [n for n, w in weights.items() if not (math.isfinite(w) and w / share > 0)]
    if starved:
        return f"variant {', '.join(repr(n) for n in starved)} has weight 0 or no number"
    return None


def srm_check(observed: dict[str, int], weights: dict[str, float]) -> SrmCheck | None:
    """Chi-square goodness of fit of ``observed`` counts against ``weights``; None if empty,
    or when the weights give no expected counts (``weights_problem`` says why)."""
    total = sum(observed.values())
    if total == 0 or weights_problem(weights) is not None:
        return None
    names = list(weights)
    counts = [observed.get(n, 0) for n in names]
    share = sum(weights.values())
    expected = [total * weights[n] / share for n in names]
    statistic, p_value = stats.chisquare(counts, expected)
    return SrmCheck(
        unit="reps",
        observed=dict(zip(names, counts, strict=True)),
        expected=dict(zip(names, expected, strict=True)),
        statistic=float(statistic),
        p_value=float(p_value),
        mismatch=bool(p_value < SRM_ALPHA),
    )


def daily_series(
    exposures: list[Decision], variants: list[str], today: date | None = None
) -> list[DailyPoint]:
    """Per variant and UTC date, from the first exposure's date to the last's."""
    if not exposures:
        return []
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in exposures:
        cell = counts[(e.variant or "", e.time[:10])]
        cell[0] += 1
        cell[1] += e.converted
    first = date.fromisoformat(min(e.time[:10] for e in exposures))
    last = date.fromisoformat(max(e.time[:10] for e in exposures))
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]

    series = []
    for name in variants:
        total = converted = 0
        for day in days:
            shown, won = counts.get((name, day), (0, 0))
            total += shown
            converted += won
            series.append(
                DailyPoint(
                    variant=name,
                    date=day,
                    exposures=shown,
                    conversions=won,
                    cumulative_exposures=total,
                    cumulative_conversions=converted,
                    cumulative_rate=converted / total if total else None,
                )
            )
    return series


# --- one experiment ----------------------------------------------------------------------


def experiment_results(
    store: ExperimentStore, log: DecisionLog, experiment_id: str, guards: Guards = GUARDS
) -> Results:
    """Every statistic the dashboard shows for one experiment, with its guard warnings."""
    experiment = store.get(experiment_id)
    names = [v.name for v in experiment.variants]
    exposures = log.query(experiment=experiment_id, limit=None)
    by_variant: dict[str, list[Decision]] = {n: [] for n in names}
    strays = 0
    for e in exposures:
        if e.variant in by_variant:
            by_variant[e.variant].append(e)
        else:
            strays += 1

    # Per variant: counts, conversion and its interval, deal results
    counted = {n: _counts(by_variant[n]) for n in names}
    control = counted[experiment.control]
    control_pair = (control["conversions"], control["exposures"])
    variants = []
    for v in experiment.variants:
        c = counted[v.name]
        pair = (c["conversions"], c["exposures"])
        rate = pair[0] / pair[1] if pair[1] else None
        is_control = v.name == experiment.control
        comparable = not is_control and pair[1] > 0 and control_pair[1] > 0
        test, z, p_value = (
            compare_to_control(control_pair, pair) if comparable else (None, None, None)
        )
        control_rate = control_pair[0] / control_pair[1] if control_pair[1] else None
        decided = c["won"] + c["lost"]
        variants.append(
            VariantStats(
                name=v.name,
                is_control=is_control,
                weight=v.weight,
                reps=c["reps"],
                exposures=pair[1],
                accepted=c["accepted"],
                edited=c["edited"],
                rejected=c["rejected"],
                no_feedback=c["none"],
                conversions=pair[0],
                conversion_rate=rate,
                conversion_ci=wilson_interval(*pair),
                lift=(rate / control_rate - 1)
                if comparable and rate is not None and control_rate
                else None,
                prob_beats_control=prob_beats(control_pair, pair) if comparable else None,
                test=test,
                z=z,
                p_value=p_value,
                deals_won=c["won"],
                deals_lost=c["lost"],
                win_rate=c["won"] / decided if decided else None,
                win_rate_ci=wilson_interval(c["won"], decided),
            )
        )

    # The experiment as a whole: SRM, guards, the daily series
    srm = srm_check({n: counted[n]["reps"] for n in names}, experiment.weights)
    warnings = _warnings(experiment, variants, srm, by_variant, strays, guards)
    results = Results(
        experiment=experiment,
        variants=variants,
        srm=srm,
        warnings=warnings,
        daily=daily_series([e for n in names for e in by_variant[n]], names),
        computed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        methods=dict(METHODS),
    )
    logger.info(
        "results of %s: %d exposures over %d variants, %d warnings",
        experiment_id,
        len(exposures),
        len(names),
        len(warnings),
    )
    return results


def _counts(exposures: list[Decision]) -> dict[str, int]:
    actions = Counter(e.action or "none" for e in exposures)
    # A deal result counts once per variant however many exposures preceded it.
    deals = {e.deal_result_id: e.deal_result for e in exposures if e.deal_result_id is not None}
    return {
        "exposures": len(exposures),
        "reps": len({e.rep_id for e in exposures}),
        "accepted": actions["accepted"],
        "edited": actions["edited"],
        "rejected": actions["rejected"],
        "none": actions["none"],
        "conversions": actions["accepted"] + actions["edited"],
        "won": sum(r == "won" for r in deals.values()),
        "lost": sum(r == "lost" for r in deals.values()),
    }


def _warnings(
    experiment: Experiment,
    variants: list[VariantStats],
    srm: SrmCheck | None,
    by_variant: dict[str, list[Decision]],
    strays: int,
    guards: Guards,
) -> list[str]:
    warnings = []
    if srm is not None and srm.mismatch:
        observed = ", ".join(f"{n} {c}" for n, c in srm.observed.items())
        expected = ", ".join(f"{n} {c:.1f}" for n, c in srm.expected.items())
        warnings.append(
            f"sample ratio mismatch: reps per variant ({observed}) are far from what the "
            f"weights give ({expected}), chi-square p = {srm.p_value:.2g} < {SRM_ALPHA}; "
            "assignment or logging is broken (a variant that fails to log, reps picking a "
            "variant by name), so do not trust these results until it is explained"
        )
    problem = weights_problem(experiment.weights)
    if problem is not None:
        shares = ", ".join(f"{n} {w:g}" for n, w in experiment.weights.items())
        warnings.append(
            f"the stored weights ({shares}) are unusable: {problem}; reps are not split as "
            "intended and the sample ratio is not checked. Stop this experiment and start "
            "one with weights on a small common scale, e.g. 1 and 3"
        )
    if experiment.weights_changed_at is not None:
        warnings.append(
            f"the weights were changed at {experiment.weights_changed_at}; reps assigned "
            "before keep their variant, so the SRM check against today's weights can flag "
            "a mismatch that the change explains"
        )
    if not any(v.exposures for v in variants):
        warnings.append(
            "no exposures yet: suggestions are logged as exposures once reps use the "
            "copilot while this experiment runs"
        )
        return warnings

    for v in variants:
        thin = []
        if v.exposures < guards.min_exposures:
            thin.append(f"{v.exposures} exposures (fewer than {guards.min_exposures})")
        if v.conversions < guards.min_conversions:
            thin.append(f"{v.conversions} conversions (fewer than {guards.min_conversions})")
        if v.reps < guards.min_reps:
            thin.append(f"{v.reps} reps (fewer than {guards.min_reps})")
        if thin:
            warnings.append(
                f"too little data in variant '{v.name}': {', '.join(thin)}; keep the "
                "experiment running before deciding"
            )
    short_of_deals = [v.name for v in variants if v.deals_won + v.deals_lost < guards.min_deals]
    if short_of_deals:
        warnings.append(
            f"fewer than {guards.min_deals} deal results after exposures in "
            f"{', '.join(short_of_deals)}; the win rates say little yet (report results "
            "with POST /v1/outcomes)"
        )

    challengers = len(variants) - 1
    if challengers > 1:
        warnings.append(
            f"{challengers} variants are each compared with control and the p-values are "
            f"not corrected; for a 5 % error rate over all of them, compare each p-value "
            f"with {0.05 / challengers:.3g} (Bonferroni)"
        )

    arms_of_rep = Counter(rep for es in by_variant.values() for rep in {e.rep_id for e in es})
    crossed = sum(1 for arms in arms_of_rep.values() if arms > 1)
    if crossed:
        warnings.append(
            f"{crossed} reps were exposed to more than one variant (a variant chosen by "
            "name, or an assignment lost); their exposures count in each variant"
        )
    if strays:
        warnings.append(
            f"{strays} exposures name a variant this experiment does not have; they are left out"
        )
    return warnings
