"""Judging an adapter: the statistics against independent formulas, then a real evaluation.

The slow tests judge the session's 20-step adapter (tests/training/conftest.py) on
the fixture calls: two held-out won calls and the lost call give the objections and
the real replies to compare with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from copilot.errors import InputError, StateError
from tests.training.conftest import PAIRS
from training.judge import (
    EVALUATION_FILE,
    K_NEAREST,
    bootstrap_mean_interval,
    evaluate_adapter,
    held_out_objections,
    load_evaluation,
    save_evaluation,
    select_objections,
    wilson_interval,
    won_likeness_margin,
)
from training.registry import AdapterInfo, AdapterRegistry

REPLIES = {call_id: set() for call_id, *_ in PAIRS}
for _call, _outcome, _type, _customer, _rep in PAIRS:
    REPLIES[_call].add(_rep)


# --- statistics, checked by hand or by an independent re-implementation ---------------


def test_margin_of_hand_made_vectors():
    reply = np.array([2.0, 0.0, 0.0])  # not unit length: the margin uses cosine similarity
    won = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    lost = np.array([[0.0, 0.0, 5.0], [0.8, 0.6, 0.0]])
    # cosines to won: 1, 0.6, 0, 0 -> nearest 3: (1 + 0.6 + 0) / 3; to lost: 0, 0.8 -> both
    expected = (1 + 0.6 + 0) / 3 - (0 + 0.8) / 2
    assert won_likeness_margin(reply, won, lost, k=3) == pytest.approx(expected)
    # k=1: nearest won 1.0, nearest lost 0.8
    assert won_likeness_margin(reply, won, lost, k=1) == pytest.approx(0.2)
    # A reply nearer the lost replies gets a negative margin.
    assert won_likeness_margin(np.array([0.0, 0.0, 1.0]), won, lost, k=1) == pytest.approx(0.0)
    assert won_likeness_margin(np.array([0.8, 0.6, 0.0]), won, lost, k=2) == pytest.approx(
        (0.96 + 0.8) / 2 - (1.0 + 0.0) / 2
    )
    with pytest.raises(ValueError):
        won_likeness_margin(reply, won, lost[:0])


def _bca_by_hand(x: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple:
    """BCa interval of the mean (Efron & Tibshirani 1993, ch. 14), written out in numpy."""
    normal = NormalDist()
    rng = np.random.default_rng(seed)
    theta = x.mean()
    boot = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    z0 = normal.inv_cdf(float((boot < theta).mean()))
    jackknife = np.array([np.delete(x, i).mean() for i in range(len(x))])
    d = jackknife.mean() - jackknife
    a = (d**3).sum() / (6 * (d**2).sum() ** 1.5)
    tail = (1 - confidence) / 2
    bounds = []
    for z in (normal.inv_cdf(tail), normal.inv_cdf(1 - tail)):
        bounds.append(np.quantile(boot, normal.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return tuple(bounds)


def test_bootstrap_interval_agrees_with_an_independent_bca():
    gains = np.array([0.12, -0.03, 0.05, 0.31, 0.02, -0.08, 0.07, 0.15, 0.0, 0.22, -0.01, 0.09])
    low, high = bootstrap_mean_interval(gains, 0.95, seed=13)
    ref_low, ref_high = _bca_by_hand(gains, 0.95, 200_000, seed=1)
    # Different random resamples: agreement within Monte Carlo error, far below the width.
    assert low == pytest.approx(ref_low, abs=0.002)
    assert high == pytest.approx(ref_high, abs=0.002)
    assert low < gains.mean() < high
    # Skewed data: BCa's bounds are not symmetric about the mean.
    assert (high - gains.mean()) > (gains.mean() - low)
    # Seeded: the same interval again.
    assert bootstrap_mean_interval(gains, 0.95, seed=13) == (low, high)
    # No spread, no interval width.
    assert bootstrap_mean_interval([0.1, 0.1, 0.1], 0.95) == (pytest.approx(0.1),) * 2


def test_wilson_interval_matches_the_formula():
    for successes, n in ((7, 12), (0, 6), (6, 6), (31, 40)):
        z = NormalDist().inv_cdf(0.975)
        p = successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = wilson_interval(successes, n, 0.95)
        assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
        assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)


def test_objections_are_taken_across_types_and_seeded(objections):
    chosen = select_objections(objections, 9, seed=13)
    assert len(chosen) == 9
    counts = {t: sum(o.type == t for o in chosen) for t in {o.type for o in objections}}
    assert max(counts.values()) - min(counts.values()) <= 1  # 8 types, 9 picks
    assert select_objections(objections, 9, seed=13) == chosen
    assert select_objections(objections, 9, seed=14) != chosen
    assert len(select_objections(objections, 100, seed=13)) == len(objections)


def test_only_calls_the_adapter_never_trained_on_are_judged_or_compared_with(objections, tmp_path):
    info = AdapterInfo("price-v1", tmp_path, "2025-01-01T00:00:00+00:00", "base@0")
    sft_train = {"won-acme", "won-birch", "won-cedar", "won-delta", "won-elm", "won-fir"}
    won, lost, candidates = held_out_objections(info, objections, sft_train)
    assert {o.call_id for o in won} == {"won-gale", "won-hazel"}
    assert {o.call_id for o in lost} == {"lost-iris"}
    # The lost call's objections have no other lost call to compare with; the open
    # call has no outcome to learn from.
    assert {o.call_id for o in candidates} == {"won-gale", "won-hazel"}
    assert len(candidates) == 8

    # A DPO adapter trained on the lost call too: nothing lost-like is left to compare with.
    with pytest.raises(StateError, match="ingest lost calls"):
        held_out_objections(info, objections, sft_train | {"lost-iris"})
    # One unseen won call: its objections have no won reply from another call to compare with.
    with pytest.raises(StateError, match="only 0 objections"):
        held_out_objections(info, objections, sft_train | {"won-gale"})


# --- a real evaluation of the session's adapter ---------------------------------------


@pytest.fixture(scope="module")
def short_settings(settings):
    generator = settings.models.generator.model_copy(update={"max_new_tokens": 32})
    return settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": generator})}
    )


@pytest.fixture(scope="module")
def adapter(settings, trained):
    return AdapterRegistry(settings.adapters_dir).get(trained[0].name)


@pytest.fixture(scope="module")
def meta(adapter):
    return json.loads((adapter.path / "copilot_adapter.json").read_text())


@pytest.fixture(scope="module")
def evaluation(short_settings, adapter, objections):
    return evaluate_adapter(short_settings, adapter, objections, limit=6)


@pytest.mark.slow
def test_losses_are_the_trainers_held_out_losses(evaluation, meta):
    # Same split, same examples: the trainer's before/after losses, measured again
    # from the saved adapter with the adapter disabled and enabled.
    assert evaluation.base_loss == pytest.approx(meta["metrics"]["eval_loss_before"], rel=1e-4)
    assert evaluation.adapter_loss == pytest.approx(meta["metrics"]["eval_loss_after"], rel=1e-4)
    assert evaluation.adapter_loss < evaluation.base_loss
    assert evaluation.eval_examples == meta["eval_examples"]


@pytest.mark.slow
def test_win_likeness_summarises_the_rows(evaluation):
    win = evaluation.win_likeness
    gains = [r.adapter_margin - r.base_margin for r in evaluation.rows]
    assert win.n == len(evaluation.rows) == 6
    assert win.mean_gain == pytest.approx(np.mean(gains))
    assert win.ci_low <= win.mean_gain <= win.ci_high
    assert win.share_better == sum(g > 0 for g in gains) / len(gains)
    assert win.share_ci_low <= win.share_better <= win.share_ci_high
    assert (win.share_ci_low, win.share_ci_high) == wilson_interval(
        sum(g > 0 for g in gains), len(gains)
    )
    assert win.base_margin == pytest.approx(np.mean([r.base_margin for r in evaluation.rows]))
    assert win.confidence == 0.95 and f"{K_NEAREST} nearest" in win.method


@pytest.mark.slow
def test_rows_compare_with_real_replies_from_unseen_won_and_lost_calls(evaluation, meta):
    trained_on = set(meta["train_calls"])
    for row in evaluation.rows:
        # Held-out objections only, from the won calls the adapter never saw (the lost
        # call's objections have no other lost call to compare with).
        assert row.call_id in meta["eval_calls"] and row.outcome == "won"
        assert row.base_reply.strip() and row.adapter_reply.strip()
        assert 1 <= len(row.won_replies) <= 3 and 1 <= len(row.lost_replies) <= 2
        for call_id, reply in zip(row.won_call_ids, row.won_replies, strict=True):
            assert call_id in meta["eval_calls"] and call_id != row.call_id
            assert call_id not in trained_on and reply in REPLIES[call_id]
        for call_id, reply in zip(row.lost_call_ids, row.lost_replies, strict=True):
            assert call_id == "lost-iris" and reply in REPLIES[call_id]
        assert -2 <= row.base_margin <= 2 and -2 <= row.adapter_margin <= 2
    assert len({(r.call_id, r.objection) for r in evaluation.rows}) == 6


@pytest.mark.slow
def test_json_document_and_saved_file(evaluation, adapter):
    doc = evaluation.to_dict()
    assert {"base", "adapter", "win_likeness", "rows"} <= set(doc)
    assert doc["base"]["loss"] == evaluation.base_loss
    assert doc["adapter"] == {
        "name": adapter.name,
        "loss": evaluation.adapter_loss,
        "perplexity": pytest.approx(math.exp(evaluation.adapter_loss)),
    }
    assert doc["win_likeness"]["n"] == len(doc["rows"]) == 6
    assert set(doc["rows"][0]) >= {"call_id", "type", "objection", "base_reply", "adapter_reply"}

    save_evaluation(evaluation, adapter)
    assert (adapter.path / EVALUATION_FILE).is_file()
    assert load_evaluation(adapter) == json.loads(json.dumps(doc))
    assert load_evaluation(dataclasses.replace(adapter, path=adapter.path.parent)) is None


@pytest.mark.slow
def test_eval_command_prints_one_json_document(
    settings, adapter, objections, tmp_path, monkeypatch
):
    """The CLI on the session's data dir (it lives here to reuse the trained adapter)."""
    from typer.testing import CliRunner

    from copilot.store import Store
    from serve import cli

    Store(settings.db_path).replace_objections(objections)
    config = tmp_path / "short.yaml"
    config.write_text("models:\n  generator:\n    max_new_tokens: 16\n", encoding="utf-8")
    monkeypatch.setattr(cli.state, "_settings", None)
    monkeypatch.setattr(cli.state, "_service", None)
    args = ["--data-dir", str(settings.data_dir), "--config", str(config), "eval", adapter.name]
    result = CliRunner().invoke(cli.app, [*args, "--json", "--limit", "5"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["adapter"]["name"] == adapter.name
    assert doc["win_likeness"]["n"] == len(doc["rows"]) == 5
    assert doc["adapter"]["loss"] < doc["base"]["loss"]
    assert load_evaluation(adapter)["rows"] == doc["rows"]  # saved for the UI


@pytest.mark.slow
def test_readable_summary(evaluation, adapter):
    from serve.commands.evaluate import summary

    text = summary(evaluation, adapter)
    assert text.startswith(f"adapter {adapter.name} against the base model {adapter.base_model}")
    assert f"base {evaluation.base_loss:.3f} -> adapter {evaluation.adapter_loss:.3f}" in text
    win = evaluation.win_likeness
    assert (
        f"mean gain {win.mean_gain:+.4f} (95% CI {win.ci_low:+.4f} to {win.ci_high:+.4f})" in text
    )
    assert evaluation.rows[0].adapter_reply in text
    assert str(adapter.path / EVALUATION_FILE) in text


# --- refusals (checked before any model loads) ---------------------------------------------


@pytest.mark.slow
def test_adapter_on_another_base_is_refused(short_settings, adapter, objections):
    foreign = dataclasses.replace(adapter, base_model="Qwen2.5-0.5B-Instruct@0123456789")
    with pytest.raises(InputError, match="Qwen2.5-0.5B-Instruct@0123456789") as info:
        evaluate_adapter(short_settings, foreign, objections)
    assert "SmolLM2-135M-Instruct" in str(info.value) and "train a new adapter" in str(info.value)


@pytest.mark.slow
def test_missing_held_out_data_is_a_state_error(short_settings, adapter, objections, meta):
    no_lost = [o for o in objections if o.polarity != -1]
    with pytest.raises(StateError, match="ingest lost calls"):
        evaluate_adapter(short_settings, adapter, no_lost)

    gone = set(meta["eval_calls"])
    without_held_out = [o for o in objections if o.call_id not in gone]
    with pytest.raises(StateError, match="held-out calls of adapter") as info:
        evaluate_adapter(short_settings, adapter, without_held_out)
    assert all(call in str(info.value) for call in gone)
    assert "re-ingest those calls" in str(info.value)

    with pytest.raises(InputError, match="at least 5"):
        evaluate_adapter(short_settings, adapter, objections, limit=3)
