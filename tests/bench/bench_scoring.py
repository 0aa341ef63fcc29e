"""Win-model figures on the real CRM export (`make bench`): test-period AUC and Brier of the
model against the stage-only and account-history baselines, fit time, and the time to score
every account (the model alone, and the whole `copilot accounts score` path).

Run alone: ``.venv/bin/python -m pytest -q -s tests/bench/bench_scoring.py -o
python_files='bench_*.py'``. Reads ``../shared/data/crm/opportunities`` and skips without it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from copilot.account_store import AccountStore
from copilot.importers import read_path
from copilot.scoring import WinModel
from copilot.settings import load_settings
from copilot.store import Store
from serve.accounts import AccountsService

CRM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crm" / "opportunities"


def test_win_model_figures(bench_report, tmp_path: Path) -> None:
    if not (CRM / "sales_pipeline.csv").is_file():
        pytest.skip(f"real CRM data not found at {CRM}")
    settings = load_settings(data_dir=tmp_path / "data")
    store = AccountStore(tmp_path / "accounts.db")
    store.upsert(read_path(CRM, settings.accounts))
    contexts = {a: store.context(a) for a in store.account_ids()}
    opportunities = store.records("opportunity")

    started = time.perf_counter()
    model, report = WinModel.fit(contexts, opportunities, settings.win_model)
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    for ctx in contexts.values():
        model.score_account(ctx, [])
    score_s = time.perf_counter() - started

    clock = max(ctx.as_of for ctx in contexts.values())
    orphans = [o for o in opportunities if o.account_id is None]
    started = time.perf_counter()
    for deal in orphans:
        model.score_opportunity(None, deal, [], at=clock)
    orphan_s = time.perf_counter() - started

    m, stage, account = report.model, report.stage_baseline, report.account_baseline
    split = f"train {report.n_train} / calibrate {report.n_calibration} / test {report.n_test}"
    bench_report("win model test AUC", m.auc, "", baseline=stage.auc, note=split)
    bench_report("account-history baseline test AUC", account.auc, "")
    bench_report("win model test Brier", m.brier, "", baseline=stage.brier, note="vs stage only")
    bench_report("account-history baseline test Brier", account.brier, "")
    bench_report(
        "win model mean predicted - observed (test)", m.mean_predicted - m.observed, "win rate"
    )
    bench_report("win model fit", fit_s, "s", note=f"{len(opportunities)} opportunities")
    bench_report("score every account", score_s, "s", note=f"{len(contexts)} accounts")
    bench_report("score deals without an account", orphan_s, "s", note=f"{len(orphans)} deals")
    assert m.auc > stage.auc


def test_score_every_crm_account_end_to_end(bench_report, tmp_path: Path) -> None:
    """What `copilot accounts score` does: each account's context, its signals, its score.

    Baseline, same process: the model's scoring alone over the same contexts, so the ratio
    says what reading the store and computing the signals add."""
    if not (CRM / "sales_pipeline.csv").is_file():
        pytest.skip(f"real CRM data not found at {CRM}")
    settings = load_settings(data_dir=tmp_path / "data")
    accounts = AccountsService(settings, Store(settings.db_path))
    accounts.import_paths([CRM])
    model = accounts.model  # fitted by the import

    started = time.perf_counter()
    scores = accounts.score_all()
    full_s = time.perf_counter() - started

    contexts = [accounts.context(a) for a in accounts.store.account_ids()]
    started = time.perf_counter()
    for ctx in contexts:
        model.score_account(ctx, [])
    model_s = time.perf_counter() - started

    signals = sum(len(s.signals) for s in scores)
    note = f"{len(scores)} accounts, {signals} signals"
    bench_report("score all CRM accounts (context + signals + model)", full_s, "s", model_s, note)
    assert len(scores) == len(contexts) and all(0 <= s.win.win_likelihood <= 1 for s in scores)
