"""Account store figures on the real Maven CRM export: the import, one event's upsert and
one account's context, the two calls the events path makes per event.

Run alone: ``.venv/bin/python -m pytest -q -s tests/bench/bench_account_store.py
-o python_files='bench_*.py'``. Targets on 2 cores: upsert < 2 ms, warm context < 5 ms.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from copilot.account_store import AccountStore
from copilot.context import Opportunity
from copilot.importers import import_paths
from copilot.settings import load_settings

CRM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crm" / "opportunities"
REPEATS = 300


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    if not (CRM / "sales_pipeline.csv").is_file():
        pytest.skip(f"the Maven CRM export was not found at {CRM}")
    settings = load_settings(data_dir=tmp_path_factory.mktemp("bench-accounts"))
    store = AccountStore(settings.db_path)
    first = import_paths([CRM], store, settings.accounts)
    again = import_paths([CRM], store, settings.accounts)
    return settings, store, first, again


def test_import_of_the_real_crm(loaded, bench_report) -> None:
    _, _, first, again = loaded
    note = f"{first.records} records, {len(first.files)} files"
    bench_report("accounts: import of the real CRM", first.wall_s, "s", note=note)
    bench_report(
        "accounts: re-import (all unchanged)", again.wall_s, "s", baseline=first.wall_s, note=note
    )
    assert again.upsert.unchanged == first.records


def test_one_event_upsert_and_the_biggest_accounts_context(loaded, bench_report) -> None:
    settings, store, _, _ = loaded
    biggest, deals = Counter(
        o.account_id for o in store.records("opportunity") if o.account_id
    ).most_common(1)[0]

    # Cold: a fresh store parses the account's rows from the file.
    started = time.perf_counter()
    AccountStore(settings.db_path).context(biggest)
    cold_ms = (time.perf_counter() - started) * 1000

    store.context(biggest)
    started = time.perf_counter()
    for _ in range(REPEATS):
        ctx = store.context(biggest)
    warm_ms = (time.perf_counter() - started) * 1000 / REPEATS
    note = f"{biggest}: {deals} opportunities, {len(ctx.orders)} orders"
    bench_report("accounts: context, warm", warm_ms, "ms", baseline=cold_ms, note=note)

    # One event = one changed opportunity, newer each time (as the events path sends them).
    open_deal = next(o for o in ctx.opportunities if o.stage == "engaging")
    started = time.perf_counter()
    for i in range(REPEATS):
        event = open_deal.model_copy(
            update={"time": open_deal.time + timedelta(minutes=i + 1), "value": float(i)}
        )
        report = store.upsert([Opportunity.model_validate(event.model_dump())])
    upsert_ms = (time.perf_counter() - started) * 1000 / REPEATS
    bench_report("accounts: upsert of 1 record", upsert_ms, "ms", note="WAL, synchronous=NORMAL")
    assert report.kinds["opportunity"].updated == 1

    started = time.perf_counter()
    for _ in range(REPEATS):
        ctx = store.context(biggest)
    after_ms = (time.perf_counter() - started) * 1000 / REPEATS
    bench_report("accounts: context after upserts", after_ms, "ms", baseline=warm_ms, note=note)
    assert next(o for o in ctx.opportunities if o.key == open_deal.key).value == REPEATS - 1
