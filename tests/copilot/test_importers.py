"""Importing account data: the real Maven CRM export, the project's sample in both layouts,
written amounts and dates, and errors that name file, line and column and store nothing."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from copilot.account_store import AccountStore
from copilot.errors import InputError
from copilot.importers import (
    import_paths,
    parse_money,
    parse_time,
    read_path,
    record_from_dict,
)
from copilot.settings import AccountSettings, load_settings
from tests.conftest import SAMPLE, SHARED_DATA

CRM = SHARED_DATA / "crm" / "opportunities"
SAMPLE_ACCOUNTS = SAMPLE / "accounts"
SAMPLE_CLOCK = datetime(2018, 1, 8, 9, 0, tzinfo=UTC)


def require_crm() -> None:
    if not (CRM / "sales_pipeline.csv").is_file():
        pytest.skip(f"the Maven CRM export was not found at {CRM} (the ../shared checkout)")


@pytest.fixture
def settings(tmp_path: Path) -> AccountSettings:
    return load_settings(data_dir=tmp_path / "data").accounts  # the aliases of default.yaml


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    return AccountStore(tmp_path / "data" / "copilot.sqlite3")


def _copy_sample(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SAMPLE_ACCOUNTS, tmp_path / "sample"))


def _edit_cell(file: Path, line: int, column: str, value: str) -> None:
    with file.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[line - 1][rows[0].index(column)] = value
    with file.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


# --- written amounts and dates ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [
        ("1200", "USD", 1200.0),
        ("1,200.50", "USD", 1200.5),
        ("$1,200.50", "USD", 1200.5),
        ("US$ 900", "USD", 900.0),
        ("1200 usd", "USD", 1200.0),
        ("¥8,000", "CNY", 8000.0),
        ("8000 CNY", "CNY", 8000.0),
        ("CNY 8000", "CNY", 8000.0),
        ("8,000元", "CNY", 8000.0),
        ("RMB 8,000.25", "CNY", 8000.25),
    ],
)
def test_parse_money_reads_written_amounts(text: str, currency: str, amount: float) -> None:
    assert parse_money(text, currency) == amount


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("¥8,000", "USD", "is in CNY or JPY, not USD"),
        ("8000 CNY", "USD", "is in CNY, not USD"),
        ("$1,200", "CNY", "not CNY"),
        ("1.200,50", "USD", "is not an amount"),
        ("12,00", "USD", "is not an amount"),
        ("about 5", "USD", "is not an amount"),
        ("", "USD", "is not an amount"),
    ],
)
def test_parse_money_refuses_other_currencies_and_odd_numbers(
    text: str, currency: str, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        parse_money(text, currency)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-03-01", datetime(2017, 3, 1, tzinfo=UTC)),
        ("2017-03-01T09:30:00Z", datetime(2017, 3, 1, 9, 30, tzinfo=UTC)),
        ("2017-03-01T17:30:00+08:00", datetime(2017, 3, 1, 9, 30, tzinfo=UTC)),
        ("2017-03-01 09:30", datetime(2017, 3, 1, 9, 30, tzinfo=UTC)),  # naive = UTC
        ("2017/03/01", datetime(2017, 3, 1, tzinfo=UTC)),
        ("2017/3/1", datetime(2017, 3, 1, tzinfo=UTC)),
        ("2017年3月1日", datetime(2017, 3, 1, tzinfo=UTC)),
        ("2017年12月28日 10:00", datetime(2017, 12, 28, 10, 0, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_iso_slashed_and_chinese_dates(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["03/01/2017", "2017/02/30", "March 1, 2017", "next week", ""])
def test_parse_time_refuses_anything_else(text: str) -> None:
    with pytest.raises(InputError, match="is not a date or time: expected"):
        parse_time(text)


# --- the real CRM export ---------------------------------------------------------------


@pytest.mark.real_data
def test_the_real_crm_imports_whole_and_reimports_unchanged(store, settings) -> None:
    require_crm()

    report = import_paths([CRM], store, settings)

    counts = store.counts()
    assert counts == {
        "account": 85,
        "product": 7,
        "agent": 35,
        "opportunity": 8800,
        "order": 4238,
    }
    assert report.kinds["opportunity"].inserted == 8800 and report.upsert.stale == 0
    assert any("'GTXPro' -> 'GTX Pro' (1480)" in w for w in report.warnings)
    assert any("'technolgy' -> 'technology' (12)" in w for w in report.warnings)
    assert "data_dictionary.csv" not in " ".join(report.files)

    opportunities = {o.opportunity_id: o for o in store.records("opportunity")}
    deal = opportunities["1C1I7A6R"]
    assert (deal.agent, deal.product_id, deal.account_id, deal.stage) == (
        "Moses Frase",
        "GTX Plus Basic",
        "Cancity",
        "won",
    )
    assert deal.close_date == deal.time == datetime(2017, 3, 1, tzinfo=UTC)
    assert deal.engage_date == datetime(2016, 10, 20, tzinfo=UTC) and deal.value == 1054.0
    assert sum(o.product_id == "GTX Pro" for o in opportunities.values()) == 1480
    assert "GTXPro" not in store.products()
    assert sum(o.account_id is None for o in opportunities.values()) == 1425

    # Each won deal is an order at its close value and date.
    orders = {o.order_id: o for o in store.records("order")}
    assert orders["1C1I7A6R"].total == 1054.0 and orders["1C1I7A6R"].time == deal.close_date
    assert sum(o.total for o in orders.values()) == sum(
        o.value for o in opportunities.values() if o.stage == "won"
    )

    # The owner is the agent of the account's latest deal; the team, that agent's office.
    acme = next(a for a in store.accounts() if a.account_id == "Acme Corporation")
    latest = max(
        (o for o in opportunities.values() if o.account_id == "Acme Corporation"),
        key=lambda o: (o.time, o.opportunity_id),
    )
    agents = {a.agent: a for a in store.records("agent")}
    assert acme.owner == latest.agent and acme.team == agents[latest.agent].team
    assert acme.sector == "technology" and acme.revenue_musd == 1100.04
    assert store.clock() == datetime(2017, 12, 31, tzinfo=UTC)

    again = import_paths([CRM], store, settings)
    assert again.upsert.unchanged == again.records == 13165
    assert not again.upsert.changed and store.counts() == counts


@pytest.mark.real_data
def test_the_sample_lands_on_the_real_crm_accounts(store, settings) -> None:
    require_crm()
    import_paths([CRM], store, settings)

    report = import_paths([SAMPLE_ACCOUNTS], store, settings)

    # The CRM dates its accounts by its first deal (2016-10-20), the sample by 2016-10-03:
    # the four shared accounts keep the CRM's figures, the sample's are stale.
    assert report.kinds["account"].stale == 4 and report.kinds["account"].inserted == 2
    assert sorted(report.upsert.stale_keys["account"]) == [
        "Acme Corporation",
        "Betatech",
        "Codehow",
        "Isdom",
    ]
    assert report.kinds["product"].updated == 7  # prices.csv adds costs and floors
    assert store.product("GTX Pro").margin_floor == 3600.0
    assert store.clock() == SAMPLE_CLOCK

    acme = store.context("Acme Corporation")
    ids = {o.opportunity_id for o in acme.opportunities}
    assert "S-010" in ids and len(ids) > 12  # the sample's deals beside the CRM's
    assert acme.account.revenue_musd == 1100.04 and [t.tender_id for t in acme.tenders] == [
        "T-ACME-2018-01"
    ]


# --- the project's sample -------------------------------------------------------------


def test_the_sample_imports_alone_with_its_scenario(store, settings) -> None:
    report = import_paths([SAMPLE_ACCOUNTS], store, settings)

    assert store.counts() == {
        "account": 6,
        "agent": 4,
        "product": 7,
        "opportunity": 100,
        "order": 59,
        "contact": 9,
        "contact_change": 3,
        "tender": 2,
        "stock": 7,
        "competitor_price": 3,
        "policy": 3,
        "budget_window": 3,
    }
    assert report.warnings == [
        f"{SAMPLE_ACCOUNTS / 'sales_pipeline.csv'}: product renamed by "
        "accounts.product_aliases in 1 rows: 'GTXPro' -> 'GTX Pro' (1)"
    ]
    assert store.clock() == SAMPLE_CLOCK

    # Acme: tender within 72 h, budget closing at month end, new procurement lead, low stock
    # of a product in play, a competitor 12 % under list.
    acme = store.context("Acme Corporation")
    assert acme.as_of == SAMPLE_CLOCK and acme.account.owner == "Mara Quinlan"
    (tender,) = acme.tenders
    assert tender.opens_at - SAMPLE_CLOCK == timedelta(hours=48) and tender.budget == 480000.0
    assert [m.name for m in tender.milestones][1] == "bid opening"
    assert acme.budget_windows[0].closes.date().isoformat() == "2018-01-31"
    (joined,) = acme.contact_changes
    assert (joined.change, joined.new_role) == ("joined", "procurement lead")
    assert joined.time == datetime(2017, 12, 20, 10, 0, tzinfo=UTC)
    assert "GTX Pro" in acme.products_in_play() and acme.stock["GTX Pro"].on_hand == 6
    (quote,) = [c for c in acme.competitor_prices if c.account_id == "Acme Corporation"]
    assert round(1 - quote.unit_price / acme.products[quote.product_id].list_price, 4) == 0.12
    assert [p.policy_id for p in acme.policies] == ["POL-003"]

    # Betatech: champion gone, a medical policy published on 2017-12-01.
    beta = store.context("Betatech")
    (left,) = beta.contact_changes
    assert left.change == "left" and left.time == datetime(2017, 12, 15, tzinfo=UTC)
    assert any(
        p.time == datetime(2017, 12, 1, tzinfo=UTC) and "medical" in p.sectors
        for p in beta.policies
    )

    # 华信医疗: the procurement role (in Chinese) changed hands; the Chinese policy applies.
    hx = store.context("华信医疗")
    assert [(c.old_role, c.new_role) for c in hx.contact_changes] == [("设备科主任", "采购负责人")]
    assert hx.contact_changes[0].time == datetime(2017, 12, 28, 2, 0, tzinfo=UTC)
    assert {p.policy_id for p in hx.policies} == {"POL-001", "POL-002"}

    # Isdom orders about every 30 days; Keystone has been quiet for over 60 days.
    isdom = store.context("Isdom")
    gaps = [(b.time - a.time).days for a, b in zip(isdom.orders, isdom.orders[1:], strict=False)]
    assert len(isdom.orders) == 12 and 28 <= statistics.median(gaps) <= 32
    keystone = store.context("Keystone Logistics")
    last = max(
        r.time
        for r in [*keystone.opportunities, *keystone.orders, *keystone.contacts]
        if r.time is not None
    )
    assert (SAMPLE_CLOCK - last).days >= 60

    again = import_paths([SAMPLE_ACCOUNTS], store, settings)
    assert again.upsert.unchanged == again.records == 206


def test_read_path_parses_without_storing(settings, tmp_path) -> None:
    records = read_path(SAMPLE_ACCOUNTS, settings)

    by_kind: dict[str, int] = {}
    for r in records:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    assert by_kind["opportunity"] == 100 and by_kind["order"] == 59
    gtx_pro = next(r for r in records if r.kind == "product" and r.key == "GTX Pro")
    # products.csv gave the list price, prices.csv the cost and floor (and the later time).
    assert (gtx_pro.list_price, gtx_pro.unit_cost, gtx_pro.margin_floor) == (4821, 3134, 3600)
    assert gtx_pro.time == datetime(2018, 1, 2, tzinfo=UTC)
    assert not (tmp_path / "data").exists()


# --- other shapes of our layout -------------------------------------------------------


def test_a_json_file_may_map_kinds_to_lists(store, settings, tmp_path) -> None:
    path = tmp_path / "feed.json"
    path.write_text(
        json.dumps(
            {
                "accounts": [
                    {"account_id": "Q1", "name": "Q1", "sector": "technolgy", "time": "2018-01-01"}
                ],
                "products": [{"product_id": "W", "name": "W", "list_price": "¥120"}],
                "orders": [
                    {
                        "order_id": "R1",
                        "account_id": "Q1",
                        "product_id": "w-alias",
                        "total": "CNY 360",
                        "quantity": 3,
                        "time": "2018年1月3日",
                    }
                ],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    cny = settings.model_copy(update={"currency": "CNY", "product_aliases": {"W-Alias": "W"}})

    report = import_paths([path], store, cny)

    assert report.records == 3
    order = store.context("Q1").orders[0]
    assert (order.product_id, order.total, order.currency) == ("W", 360.0, "CNY")
    assert store.accounts()[0].sector == "technology"
    # The product has no time of its own: it is dated by the earliest dated row (the order).
    assert store.product("W").time == datetime(2018, 1, 3, tzinfo=UTC)


def test_csv_list_cells_and_a_json_milestones_cell(store, settings, tmp_path) -> None:
    import_paths([SAMPLE_ACCOUNTS], store, settings)
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "tenders.csv").write_text(
        "tender_id,account_id,title,product_ids,deadline,milestones,time\n"
        'T-9,Codehow,Laptops,GTX Basic; MG Special,2018/02/01,"[{""name"": ""Q&A"", '
        '""due"": ""2018-01-20""}]",2018-01-07\n',
        encoding="utf-8",
    )
    (folder / "notes.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (folder / "data_dictionary.csv").write_text("Table,Field\n", encoding="utf-8")

    report = import_paths([folder], store, settings)

    (tender,) = store.context("Codehow").tenders
    assert tender.product_ids == ["GTX Basic", "MG Special"]
    assert tender.milestones[0].due == datetime(2018, 1, 20, tzinfo=UTC)
    assert tender.deadline == datetime(2018, 2, 1, tzinfo=UTC)
    (warning,) = report.warnings
    assert "notes.csv" in warning and "data_dictionary" not in warning


def test_an_event_body_is_read_like_a_json_item(settings) -> None:
    record = record_from_dict(
        "competitor_prices",
        {
            "observation_id": "CP-9",
            "competitor": "北辰科技",
            "product_id": "GTXPro",
            "unit_price": "$4,100",
            "time": "2018年1月9日",
        },
        settings,
    )
    assert (record.kind, record.product_id, record.unit_price) == (
        "competitor_price",
        "GTX Pro",
        4100.0,
    )
    assert record.time == datetime(2018, 1, 9, tzinfo=UTC) and record.currency == "USD"

    with pytest.raises(InputError, match=r"event: unknown record kind 'deal'"):
        record_from_dict("deal", {}, settings)
    with pytest.raises(InputError, match=r"event: field 'colour': a stock has no field"):
        record_from_dict("stock", {"product_id": "P", "colour": "red"}, settings)
    with pytest.raises(InputError, match=r"event: field 'time': missing or blank"):
        record_from_dict("stock", {"product_id": "P", "on_hand": 3}, settings)


# --- errors: file, line and column named; nothing stored --------------------------------


@pytest.mark.parametrize(
    ("file", "line", "column", "value", "message"),
    [
        ("budget_windows.csv", 3, "amount", "¥150,000", "budget_windows.csv:3: column 'amount': "),
        ("contacts.csv", 5, "time", "12/15/2017", "contacts.csv:5: column 'time': '12/15/2017'"),
        (
            "sales_pipeline.csv",
            4,
            "close_date",
            "2017-13-01",
            "sales_pipeline.csv:4: column 'close_date': '2017-13-01' is not a date",
        ),
        (
            "stock.csv",
            2,
            "product_id",
            "GTX Ultra",
            "stock.csv:2: column 'product_id': unknown product 'GTX Ultra' \\(known: GTK 500, ",
        ),
        (
            "sales_pipeline.csv",
            7,
            "product",
            "GTX Mega",
            "sales_pipeline.csv:7: column 'product': unknown product 'GTX Mega'",
        ),
        (
            "contacts.csv",
            3,
            "account_id",
            "Acme Corp",
            "contacts.csv:3: column 'account_id': unknown account 'Acme Corp'",
        ),
        (
            "sales_pipeline.csv",
            2,
            "account",
            "Nowhere Ltd",
            "sales_pipeline.csv:2: column 'account': unknown account 'Nowhere Ltd'",
        ),
        ("stock.csv", 3, "on_hand", "-4", "stock.csv:3: column 'on_hand': .*greater than or"),
        ("sales_pipeline.csv", 9, "deal_stage", "Pending", "column 'deal_stage': .*'pending'"),
    ],
)
def test_a_bad_cell_names_file_line_column_and_stores_nothing(
    store, settings, tmp_path, file, line, column, value, message
) -> None:
    import_paths([SAMPLE_ACCOUNTS], store, settings)
    before = store.counts()
    folder = _copy_sample(tmp_path)
    _edit_cell(folder / file, line, column, value)

    with pytest.raises(InputError, match=message) as exc:
        import_paths([folder], store, settings)

    assert str(folder / file) in str(exc.value)
    assert store.counts() == before
    # The good rows of the same import were not applied either.
    assert store.clock() == SAMPLE_CLOCK


def test_a_bad_file_in_a_later_path_stores_the_earlier_paths_neither(
    store, settings, tmp_path
) -> None:
    folder = _copy_sample(tmp_path)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "orders.csv").write_text(
        "order_id,account_id,product_id,total,time\nX1,Isdom,GTX Basic,$550,yesterday\n",
        encoding="utf-8",
    )

    with pytest.raises(InputError, match=r"orders.csv:2: column 'time': 'yesterday'"):
        import_paths([folder, tmp_path / "extra"], store, settings)

    assert store.counts() == {}


def test_a_currency_column_other_than_the_configured_one_is_refused(store, settings, tmp_path):
    folder = tmp_path / "cny"
    folder.mkdir()
    (folder / "products.json").write_text(
        '[{"product_id": "P", "name": "P", "list_price": 10, "currency": "CNY",'
        ' "time": "2018-01-01"}]',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"item 1: field 'currency': 'CNY' is not USD"):
        import_paths([folder], store, settings)


def test_missing_paths_and_empty_folders_are_refused(store, settings, tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        import_paths([tmp_path / "nope"], store, settings)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("notes", encoding="utf-8")
    with pytest.raises(InputError, match="holds nothing importable"):
        import_paths([tmp_path / "empty"], store, settings)
    (tmp_path / "undated").mkdir()
    (tmp_path / "undated" / "accounts.csv").write_text("account_id,name\nZ,Z\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"accounts.csv:2: column 'time': missing"):
        import_paths([tmp_path / "undated"], store, settings)


def test_the_configured_currency_must_be_an_iso_code() -> None:
    from pydantic import ValidationError

    assert AccountSettings(currency=" cny ").currency == "CNY"
    with pytest.raises(ValidationError, match="ISO 4217 code such as USD; got '¥'"):
        AccountSettings(currency="¥")


# --- conflicts inside one file ----------------------------------------------------------


def test_a_key_given_twice_in_one_file_is_kept_once_and_named_in_a_warning(
    store, settings, tmp_path
) -> None:
    folder = _copy_sample(tmp_path)
    contacts = folder / "contacts.csv"
    text = contacts.read_text(encoding="utf-8")
    assert text.splitlines()[4].startswith("C-BETA-2,") and len(text.splitlines()) == 10
    # Omar Haddad again on a new last line (11), now the champion; the same time as line 5.
    contacts.write_text(
        text + "C-BETA-2,Betatech,Omar Haddad,head of purchasing,true,true,2017-03-10\n",
        encoding="utf-8",
    )

    report = import_paths([folder], store, settings)

    assert report.warnings[-1] == (
        f"{contacts}: contact 'C-BETA-2' is given twice, line 5 and line 11; one is stored: "
        "the one of the later time, line 11 if the times are equal; remove the other row"
    )
    assert report.kinds["contact"].inserted == 9 and report.kinds["contact"].updated == 1
    (omar,) = [c for c in store.context("Betatech").contacts if c.contact_id == "C-BETA-2"]
    assert (omar.role, omar.champion) == ("head of purchasing", True)  # the last row won


def test_a_key_given_twice_in_a_json_file_names_both_items(store, settings, tmp_path) -> None:
    folder = _copy_sample(tmp_path)
    tenders = folder / "tenders.json"
    items = json.loads(tenders.read_text(encoding="utf-8"))
    tenders.write_text(json.dumps([*items, items[0]], ensure_ascii=False), encoding="utf-8")

    report = import_paths([folder], store, settings)

    key = items[0]["tender_id"]
    assert report.warnings[-1].startswith(
        f"{tenders}: tender '{key}' is given twice, item 1 and item {len(items) + 1}; "
    )


def test_a_column_named_twice_is_refused_and_nothing_stored(store, settings, tmp_path) -> None:
    folder = _copy_sample(tmp_path)
    contacts = folder / "contacts.csv"
    lines = contacts.read_text(encoding="utf-8").splitlines()
    lines[0] += ",name"
    lines[1:] = [line + ",Someone Else" for line in lines[1:]]
    contacts.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(InputError) as exc:
        import_paths([folder], store, settings)

    assert str(exc.value) == (
        f"{contacts}: the header has column 'name' twice (columns 3 and 8); rename or remove "
        "one of them"
    )
    assert store.counts() == {}
