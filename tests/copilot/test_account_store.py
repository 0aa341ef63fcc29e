"""The account store: stale and unchanged records, context at a time, the cache across
threads and processes, and the data clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from copilot.account_store import AccountStore
from copilot.context import (
    Account,
    CompetitorPrice,
    Contact,
    Opportunity,
    Order,
    PolicyChange,
    Product,
    SalesAgent,
    StockLevel,
)
from copilot.errors import InputError, NotFoundError


def _t(day: int, month: int = 1, year: int = 2018) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _opportunity(key: str, day: int, stage: str = "engaging", account: str | None = "A1"):
    return Opportunity(
        time=_t(day), opportunity_id=key, account_id=account, product_id="P1", stage=stage
    )


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    store = AccountStore(tmp_path / "copilot.sqlite3")
    store.upsert(
        [
            Account(time=_t(1, 1, 2016), account_id="A1", name="A1", sector="Medical"),
            Account(time=_t(1, 1, 2016), account_id="A2", name="A2", sector="retail"),
            Product(time=_t(1, 1, 2016), product_id="P1", name="P1", list_price=100.0),
            SalesAgent(time=_t(1, 1, 2016), agent="Rep One", team="East"),
        ]
    )
    return store


def test_a_record_older_than_the_stored_one_is_stale_and_not_applied(store) -> None:
    first = store.upsert([_opportunity("O1", 10, "engaging")])
    assert first.kinds["opportunity"].inserted == 1 and first.changed_accounts == {"A1"}

    # The deal was won on the 12th; the event saying it was engaging on the 11th arrives late.
    won = store.upsert([_opportunity("O1", 12, "won")])
    late = store.upsert([_opportunity("O1", 11, "engaging")])

    assert won.kinds["opportunity"].updated == 1
    assert late.kinds["opportunity"].stale == 1 and late.stale_keys == {"opportunity": ["O1"]}
    assert not late.changed
    (stored,) = store.records("opportunity")
    assert stored.stage == "won" and stored.time == _t(12)
    assert store.context("A1").opportunities[0].stage == "won"


def test_the_same_record_again_is_unchanged_and_a_batch_keeps_its_newest(store) -> None:
    again = store.upsert(store.records("account"))
    assert again.kinds["account"].unchanged == 2 and not again.changed

    # One key twice in a batch, newest first: the older copy is stale within the batch.
    report = store.upsert([_opportunity("O2", 20, "won"), _opportunity("O2", 15, "lost")])
    counts = report.kinds["opportunity"]
    assert (counts.inserted, counts.stale) == (1, 1)
    assert [o.stage for o in store.records("opportunity")] == ["won"]


def test_context_leaves_out_dated_rows_after_as_of_but_keeps_descriptive_ones(store) -> None:
    store.upsert(
        [
            _opportunity("O1", 5),
            _opportunity("O2", 20),
            _opportunity("O-other", 6, account="A2"),
            Order(time=_t(8), order_id="R1", account_id="A1", product_id="P1", total=90.0),
            Contact(time=_t(9), contact_id="C1", account_id="A1", name="Li", role="采购负责人"),
            PolicyChange(
                time=_t(3), policy_id="POL-1", title="t", sectors=["MEDICAL"], effective=_t(1)
            ),
            PolicyChange(
                time=_t(3), policy_id="POL-2", title="t", sectors=["retail"], effective=_t(1)
            ),
            CompetitorPrice(
                time=_t(4),
                observation_id="CP-A1",
                competitor="V",
                product_id="P1",
                unit_price=88,
                account_id="A1",
            ),
            CompetitorPrice(
                time=_t(4),
                observation_id="CP-A2",
                competitor="V",
                product_id="P1",
                unit_price=85,
                account_id="A2",
            ),
            CompetitorPrice(
                time=_t(7),
                observation_id="CP-market",
                competitor="V",
                product_id="P1",
                unit_price=90,
            ),
            StockLevel(time=_t(15), product_id="P1", on_hand=4),
            # Written down after as_of, but an account's name is not an event: it stays.
            Account(time=_t(25), account_id="A1", name="A1 renamed", sector="medical"),
        ]
    )

    ctx = store.context("A1", as_of=_t(10))

    assert ctx.as_of == _t(10) and ctx.account.name == "A1 renamed"
    assert [o.opportunity_id for o in ctx.opportunities] == ["O1"]
    assert [o.order_id for o in ctx.orders] == ["R1"] and [c.role for c in ctx.contacts] == [
        "采购负责人"
    ]
    assert [p.policy_id for p in ctx.policies] == ["POL-1"]  # sector matched case-folded
    assert [c.observation_id for c in ctx.competitor_prices] == ["CP-A1", "CP-market"]
    assert ctx.stock == {}  # the only stock snapshot is from the 15th
    assert set(ctx.products) == {"P1"} and set(ctx.agents) == {"Rep One"}
    assert ctx.calls == []

    # Without as_of the context is seen at the data clock: the latest dated row (O2, 20th),
    # not the account row of the 25th.
    latest = store.context("A1")
    assert latest.as_of == _t(20) == store.clock()
    assert [o.opportunity_id for o in latest.opportunities] == ["O1", "O2"]
    assert latest.stock["P1"].on_hand == 4


def test_clock_ignores_accounts_agents_and_products(store) -> None:
    assert store.clock() is None  # the fixture stored only descriptive rows
    store.upsert([Product(time=_t(1, 6, 2030), product_id="P2", name="P2", list_price=5.0)])
    assert store.clock() is None
    store.upsert([_opportunity("O1", 3)])
    assert store.clock() == _t(3)


def test_unknown_account_and_product_name_the_id_and_the_fix(store) -> None:
    with pytest.raises(NotFoundError) as exc:
        store.context("Nobody Inc")
    message = str(exc.value)
    assert "'Nobody Inc'" in message and "copilot accounts import PATH" in message
    assert "A1, A2" in message and not store.has_account("Nobody Inc")

    with pytest.raises(NotFoundError, match=r"no product 'P9' .*known: P1\)"):
        store.product("P9")
    assert store.product("P1").list_price == 100.0


def test_upsert_refuses_what_is_not_a_record(store) -> None:
    with pytest.raises(InputError, match="expected one of the record types"):
        store.upsert([{"kind": "account", "account_id": "A3"}])  # type: ignore[list-item]
    assert store.account_ids() == ["A1", "A2"]


def test_a_row_moving_to_another_account_leaves_the_first_context(store) -> None:
    store.upsert([_opportunity("O1", 5, account=None)])
    assert store.context("A1").opportunities == []  # cached now, without O1

    store.upsert([_opportunity("O1", 6, account="A1")])
    assert [o.opportunity_id for o in store.context("A1").opportunities] == ["O1"]

    store.upsert([_opportunity("O1", 7, account="A2")])
    assert store.context("A1").opportunities == []
    assert [o.opportunity_id for o in store.context("A2").opportunities] == ["O1"]


def test_a_write_by_another_store_on_the_same_file_reaches_the_cache(store, tmp_path) -> None:
    assert store.context("A1").opportunities == []
    other = AccountStore(tmp_path / "copilot.sqlite3")  # e.g. the CLI beside the server

    other.upsert([_opportunity("O1", 9)])

    assert [o.opportunity_id for o in store.context("A1").opportunities] == ["O1"]
    assert store.clock() == _t(9)


def test_threads_writing_and_reading_lose_nothing(store) -> None:
    errors: list[Exception] = []

    def write(prefix: str) -> None:
        try:
            for i in range(40):
                store.upsert([_opportunity(f"{prefix}-{i}", 1 + i % 28)])
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(80):
                store.context("A1")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in ("w1", "w2")]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(store.context("A1", as_of=_t(28)).opportunities) == 80
    assert store.counts()["opportunity"] == 80


def test_the_file_is_in_wal_mode(store, tmp_path) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_a_batch_that_fails_midway_leaves_nothing_behind(store, monkeypatch) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    import copilot.account_store as account_store

    before = store.counts()
    # The revision bump is the batch's last statement: failing there, after the rows were
    # written in the same transaction, must take the rows back too.
    monkeypatch.setattr(account_store, "_SET_REVISION", text("UPDATE missing_table SET x = 1"))
    with pytest.raises(OperationalError):
        store.upsert([_opportunity("O1", 5), _opportunity("O2", 6)])
    monkeypatch.undo()

    assert store.counts() == before and store.context("A1").opportunities == []
    assert store.upsert([_opportunity("O1", 5)]).kinds["opportunity"].inserted == 1
