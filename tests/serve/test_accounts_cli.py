"""`copilot accounts import|score|model`, `recommend` and `quote` in real subprocesses.

The bundled sample (data/sample/accounts, clock 2018-01-08T09:00Z) needs no shared
data; the score and quote tests run on the real CRM with the sample on top
(real_data), where the four shared accounts carry real histories; the HTTP tests
(test_accounts_api.py) quote on the sample alone too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLE, SHARED_DATA

COPILOT = [sys.executable, "-m", "serve.cli"]
SAMPLE_ACCOUNTS = SAMPLE / "accounts"
CRM = SHARED_DATA / "crm" / "opportunities"
SAMPLE_DAY = date(2018, 1, 8)  # the sample's clock: its stock snapshot, 2018-01-08T09:00Z
NO_TALKING_POINTS = "--no-talking-points"  # keeps every quote here free of the language model


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COPILOT_DATA_DIR": str(data_dir)}
    env.pop("COPILOT_CONFIG", None)
    return subprocess.run([*COPILOT, *args], capture_output=True, text=True, env=env, timeout=300)


def run_json(data_dir: Path, *args: str) -> Any:
    result = run(data_dir, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def require_crm() -> None:
    if not (CRM / "sales_pipeline.csv").is_file():
        pytest.skip(f"the Maven CRM export was not found at {CRM} (the ../shared checkout)")


def csv_rows(name: str) -> list[dict[str, str]]:
    with (SAMPLE_ACCOUNTS / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def signal_values(signals: list[dict]) -> dict[str, list[float]]:
    by_type: dict[str, list[float]] = {}
    for s in signals:
        by_type.setdefault(s["type"], []).append(s["value"])
    return by_type


def assert_within_limits(quote: dict, product: str, quantity: int) -> None:
    """Three strategies of different kinds, each priced at or above the margin floor of
    prices.csv and delivered from the stock of stock.csv plus what can be replenished."""
    floors = {r["product_id"]: float(r["margin_floor"]) for r in csv_rows("prices.csv")}
    costs = {r["product_id"]: float(r["unit_cost"]) for r in csv_rows("prices.csv")}
    stock = {r["product_id"]: r for r in csv_rows("stock.csv")}
    strategies = quote["strategies"]

    assert len(strategies) == 3
    assert len({s["name"] for s in strategies}) == 3
    assert len({s["title"] for s in strategies}) == 3
    for s in strategies:
        first = s["lines"][0]
        assert (first["product_id"], s["unit_price"]) == (product, first["unit_price"])
        assert first["quantity"] >= quantity, s["name"]
        assert 0.0 <= s["win_likelihood"] <= 1.0 and s["talking_points"] == []
        assert s["total"] == pytest.approx(
            sum(li["quantity"] * li["unit_price"] for li in s["lines"])
        )
        cost = sum(li["quantity"] * costs[li["product_id"]] for li in s["lines"])
        assert s["margin_value"] == pytest.approx(s["total"] - cost, abs=0.01)
        for line in s["lines"]:
            pid = line["product_id"]
            assert line["floor_price"] == floors[pid]
            assert line["unit_price"] >= floors[pid], (s["name"], pid)
            assert line["unit_price"] <= line["list_price"]
            assert_deliverable(line, stock[pid])


def assert_deliverable(line: dict, stock: dict[str, str]) -> None:
    """Units on hand ship now, incoming ones after their ETA, the rest after the lead time."""
    deliveries = line["deliveries"]
    assert sum(d["quantity"] for d in deliveries) == line["quantity"]
    by_source = Counter()
    for d in deliveries:
        by_source[d["source"]] += d["quantity"]
        shipped = date.fromisoformat(d["date"])
        if d["source"] == "on_hand":
            assert shipped >= SAMPLE_DAY
        elif d["source"] == "incoming":
            assert shipped >= date.fromisoformat(stock["incoming_eta"])
        else:
            assert d["source"] == "replenishment"
            assert shipped >= SAMPLE_DAY + timedelta(days=int(stock["lead_time_days"]))
    assert by_source["on_hand"] <= int(stock["on_hand"])
    assert by_source["incoming"] <= int(stock["incoming"])


# --- the bundled sample (no shared data) -------------------------------------------


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory) -> Path:
    """A data dir with the sample imported once; the tests below only read it."""
    data = tmp_path_factory.mktemp("accounts-cli") / "data"
    run_json(data, "accounts", "import", str(SAMPLE_ACCOUNTS))
    return data


def test_import_stores_what_the_files_hold_and_a_reimport_changes_nothing(tmp_path: Path) -> None:
    pipeline = csv_rows("sales_pipeline.csv")
    with (SAMPLE_ACCOUNTS / "tenders.json").open(encoding="utf-8") as f:
        tenders = json.load(f)
    expected = {
        "account": len(csv_rows("accounts.csv")),
        "agent": len(csv_rows("sales_teams.csv")),
        "product": len(csv_rows("products.csv")),  # prices.csv completes the same 7
        "opportunity": len(pipeline),
        "order": sum(r["deal_stage"] == "Won" for r in pipeline),  # each won deal
        "contact": len(csv_rows("contacts.csv")),
        "contact_change": len(csv_rows("contact_changes.csv")),
        "tender": len(tenders),
        "stock": len(csv_rows("stock.csv")),
        "competitor_price": len(csv_rows("competitor_prices.csv")),
        "policy": len(csv_rows("policies.csv")),
        "budget_window": len(csv_rows("budget_windows.csv")),
    }
    assert (expected["account"], expected["opportunity"], expected["order"]) == (6, 100, 59)

    first = run_json(tmp_path, "accounts", "import", str(SAMPLE_ACCOUNTS))["import"]

    assert {k: c["inserted"] for k, c in first["kinds"].items()} == expected
    assert first["records"] == sum(expected.values()) == 206
    assert len(first["files"]) == 12
    (warning,) = first["warnings"]
    assert warning.endswith(
        "sales_pipeline.csv: product renamed by accounts.product_aliases in 1 rows: "
        "'GTXPro' -> 'GTX Pro' (1)"
    )

    again = run_json(tmp_path, "accounts", "import", str(SAMPLE_ACCOUNTS))["import"]

    assert again["records"] == 206
    assert {k: c["unchanged"] for k, c in again["kinds"].items()} == expected
    assert not any(c["inserted"] or c["updated"] or c["stale"] for c in again["kinds"].values()), (
        again["kinds"]
    )


def test_import_readable_summary_and_a_missing_path(tmp_path: Path) -> None:
    result = run(tmp_path, "accounts", "import", str(SAMPLE_ACCOUNTS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported 206 records from 12 files")
    assert "  opportunity      100 new, 0 updated, 0 unchanged, 0 stale" in result.stdout

    missing = run(tmp_path, "accounts", "import", str(tmp_path / "nope"), "--json")
    assert missing.returncode == 1 and missing.stdout == ""
    assert f"{tmp_path / 'nope'} does not exist" in missing.stderr


def test_recommend_acme_briefs_the_new_lead_before_the_tender(sample_data: Path) -> None:
    doc = run_json(sample_data, "recommend", "Acme Corporation")

    assert doc["account_id"] == "Acme Corporation" and doc["rules_error"] is None
    first = doc["recommendations"][0]
    assert (first["rule_id"], first["priority"], first["owner"]) == (
        "tender-budget-new-lead",
        "critical",
        "Mara Quinlan",
    )
    # 24 h before the tender's first milestone (clarification questions, 2018-01-09 17:00).
    assert first["due"] == "2018-01-08T17:00:00Z"
    assert "brief the new procurement lead, Ravi Menon" in first["action"]
    assert "Engineering workstation refresh 2018 is 32 h away" in first["action"]
    assert {s["type"] for s in first["signals"]} == {
        "tender_countdown",
        "budget_window_closing",
        "procurement_lead_changed",
    }
    # The critical rule supersedes the three it combines; the others still fire.
    rules = [(r["rule_id"], r["priority"]) for r in doc["recommendations"]]
    assert rules == [
        ("tender-budget-new-lead", "critical"),
        ("low-stock-in-play", "high"),
        ("reorder-check-in", "medium"),
    ]
    signals = signal_values(doc["signals"])
    assert signals["tender_countdown"] == [32.0]
    assert signals["low_stock"] == [6.0]
    assert signals["competitor_price_below"] == [0.12]


def test_recommend_readable_lists_priority_action_owner_and_due(sample_data: Path) -> None:
    result = run(sample_data, "recommend", "Keystone Logistics")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[low] Keystone Logistics has been quiet for 73.4 days.")
    assert "owner Tomas Ferreira, due 2018-01-11T09:00:00Z; rule no-activity" in result.stdout


@pytest.mark.parametrize(
    ("account", "signal", "value", "rule"),
    [
        # Ordered about every 30 days, last on 2017-12-08: expected 2018-01-07, within tolerance.
        ("Isdom", "purchase_rhythm_due", -1.38, "no-activity"),
        ("Keystone Logistics", "no_activity", 73.38, "no-activity"),
        ("华信医疗", "procurement_lead_changed", 11.29, "procurement-lead-changed"),
    ],
)
def test_recommend_other_sample_accounts(
    sample_data: Path, account: str, signal: str, value: float, rule: str
) -> None:
    doc = run_json(sample_data, "recommend", account)

    assert doc["account_id"] == account
    assert signal_values(doc["signals"])[signal] == [value]
    assert rule in {r["rule_id"] for r in doc["recommendations"]}
    assert all(r["account_id"] == account for r in doc["recommendations"])


def test_unknown_account_or_product_exits_1_naming_it(sample_data: Path) -> None:
    for args in (
        ["recommend", "Nope Inc", "--json"],
        ["quote", "Nope Inc", "--product", "GTX Pro", "--quantity", "2", NO_TALKING_POINTS],
    ):
        result = run(sample_data, *args)
        assert result.returncode == 1 and result.stdout == ""
        assert "error: no account 'Nope Inc' is stored" in result.stderr
        assert "Acme Corporation" in result.stderr  # the known accounts are listed

    result = run(
        sample_data,
        *["quote", "Acme Corporation", "--product", "GTX Ultra", "--quantity", "2"],
        *["--json", NO_TALKING_POINTS],
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "error: unknown product 'GTX Ultra'; known products: GTK 500, GTX Basic" in result.stderr


def test_quote_arguments_that_do_not_pair_up(sample_data: Path) -> None:
    acme = ["quote", "Acme Corporation", NO_TALKING_POINTS]

    mismatched = run(
        sample_data, *acme, "--product", "GTX Pro", "--product", "GTX Basic", "--quantity", "2"
    )
    assert mismatched.returncode == 1
    assert (
        "error: 2 --product but 1 --quantity; give one --quantity per --product"
        in mismatched.stderr
    )

    zero = run(sample_data, *acme, "--product", "GTX Pro", "--quantity", "0")
    assert zero.returncode == 1
    assert "error: quantity for 'GTX Pro' must be from 1 to 10,000,000, got 0" in zero.stderr

    huge = run(sample_data, *acme, "--product", "GTX Pro", "--quantity", "99999999999999999999")
    assert huge.returncode == 1
    assert "must be from 1 to 10,000,000, got 99,999,999,999,999,999,999" in huge.stderr

    no_product = run(sample_data, *acme)
    assert no_product.returncode == 2 and "Missing option '--product'" in no_product.stderr

    not_a_number = run(sample_data, *acme, "--product", "GTX Pro", "--quantity", "many")
    assert not_a_number.returncode == 2
    assert "Invalid value for '--quantity'" in not_a_number.stderr


def test_bad_as_of_exits_1_with_an_example(sample_data: Path) -> None:
    result = run(sample_data, "recommend", "Acme Corporation", "--as-of", "next tuesday")
    assert result.returncode == 1
    assert "--as-of 'next tuesday' is not an ISO 8601 date or time" in result.stderr


# --- the real CRM (with the sample on top) ----------------------------------------------


@pytest.fixture(scope="module")
def crm_and_sample(tmp_path_factory) -> tuple[Path, dict]:
    """The CRM and the sample imported in one command, as the sample's README suggests."""
    require_crm()
    data = tmp_path_factory.mktemp("accounts-crm") / "data"
    return data, run_json(data, "accounts", "import", str(CRM), str(SAMPLE_ACCOUNTS))


@pytest.mark.real_data
def test_the_sample_lands_on_the_crm_accounts(crm_and_sample) -> None:
    _, doc = crm_and_sample

    accounts = doc["import"]["kinds"]["account"]
    # The four CRM names in the sample keep the CRM's newer figures; two accounts are new.
    assert (accounts["inserted"], accounts["stale"]) == (85 + 2, 4)
    assert sorted(doc["import"]["stale_keys"]["account"]) == [
        "Acme Corporation",
        "Betatech",
        "Codehow",
        "Isdom",
    ]
    assert doc["import"]["kinds"]["opportunity"]["inserted"] == 8800 + 100
    assert doc["model"] is not None and doc["model_skipped"] is None


@pytest.mark.real_data
def test_score_json_gives_every_account_its_likelihood_and_signals(crm_and_sample) -> None:
    data, _ = crm_and_sample

    scores = run_json(data, "accounts", "score")["accounts"]

    assert len(scores) == 87
    likelihoods = [s["win_likelihood"] for s in scores]
    assert all(0.0 <= p <= 1.0 for p in likelihoods)
    assert likelihoods == sorted(likelihoods, reverse=True)  # most likely to win first
    assert all(s["score"]["win_likelihood"] == s["win_likelihood"] for s in scores)
    assert all(s["score"]["contributions"] for s in scores)
    by_id = {s["account_id"]: s for s in scores}

    acme = signal_values(by_id["Acme Corporation"]["signals"])
    assert acme["tender_countdown"] == [32.0]
    assert acme["budget_window_closing"] == [23.62]
    assert acme["low_stock"] == [6.0]
    assert 0.12 in acme["competitor_price_below"]
    # The tender and budget priors raise Acme's score, and say so.
    names = [c["name"] for c in by_id["Acme Corporation"]["score"]["contributions"]]
    assert any(n.startswith("tender T-ACME-2018-01") for n in names)

    # The CRM adds Isdom's own orders, so its rhythm is past the tolerance here.
    assert signal_values(by_id["Isdom"]["signals"])["purchase_rhythm_overdue"] == [5.38]
    assert signal_values(by_id["Keystone Logistics"]["signals"])["no_activity"] == [73.38]
    assert "procurement_lead_changed" in signal_values(by_id["华信医疗"]["signals"])
    assert "champion_departed" in signal_values(by_id["Betatech"]["signals"])


@pytest.mark.real_data
def test_quote_acme_gtx_pro_three_strategies_within_floor_and_stock(crm_and_sample) -> None:
    data, _ = crm_and_sample

    quote = run_json(
        data,
        *["quote", "Acme Corporation", "--product", "GTX Pro", "--quantity", "20"],
        NO_TALKING_POINTS,
    )

    assert quote["account_id"] == "Acme Corporation"
    assert quote["as_of"] == "2018-01-08T09:00:00+00:00"
    assert 0.0 <= quote["base_win_likelihood"] <= 1.0
    assert_within_limits(quote, "GTX Pro", 20)
    assert {s["name"] for s in quote["strategies"]} == {
        "value_premium",
        "volume_term",
        "phased_bundle",
    }
    # 6 GTX Pro on hand, nothing incoming, 14 days to replenish.
    premium = next(s for s in quote["strategies"] if s["name"] == "value_premium")
    assert premium["lines"][0]["deliveries"] == [
        {"quantity": 6, "date": "2018-01-08", "source": "on_hand"},
        {"quantity": 14, "date": "2018-01-22", "source": "replenishment"},
    ]
    # The tender's budget ($480,000) bounds every strategy; Vertex's lower price is a risk.
    assert all(s["within_budget"] is True for s in quote["strategies"])
    assert all(s["total"] <= 480_000 for s in quote["strategies"])
    assert any("Vertex Systems" in r for r in premium["risk_reasons"])
    # No negotiations are stored: the curve is flat, says why, and moves no strategy.
    curve = quote["discount_curve"]
    assert curve["fitted"] is False and "craigslist" in curve["reason"]
    base = pytest.approx(quote["base_win_likelihood"], abs=1e-6)
    assert [s["win_likelihood"] for s in quote["strategies"]] == [base] * 3


@pytest.mark.real_data
def test_real_crm_import_and_the_model_report(tmp_path: Path) -> None:
    require_crm()

    doc = run_json(tmp_path, "accounts", "import", str(CRM))

    kinds = doc["import"]["kinds"]
    assert {k: c["inserted"] for k, c in kinds.items()} == {
        "account": 85,
        "agent": 35,
        "product": 7,
        "opportunity": 8800,
        "order": 4238,
    }
    assert any("'GTXPro' -> 'GTX Pro' (1480)" in w for w in doc["import"]["warnings"])
    fitted = doc["model"]

    report = run_json(tmp_path, "accounts", "model")

    # The saved model carries the report of the fit the import made.
    assert report == fitted
    assert (report["n_train"], report["n_calibration"], report["n_test"]) == (3330, 1702, 1679)
    model, stage = report["model"], report["stage_baseline"]
    assert model["n"] == stage["n"] == report["n_test"]
    # Every closed CRM deal was Engaging before it closed: the stage-only baseline is the
    # base rate, AUC 0.5 by construction. Measured: AUC 0.526, Brier 0.2349 vs 0.2351.
    assert stage["auc"] == 0.5
    assert model["auc"] > stage["auc"] + 0.02
    assert 0.0 < model["brier"] < stage["brier"] < 0.25
    assert "account_baseline" in report

    readable = run(tmp_path, "accounts", "model")
    assert readable.returncode == 0, readable.stderr
    assert "Test AUC" in readable.stdout and "stage-only baseline" in readable.stdout


@pytest.mark.real_data
@pytest.mark.slow  # the ingest embeds the negotiations with MiniLM
def test_four_sample_negotiations_are_too_few_to_learn_the_curve(tmp_path: Path) -> None:
    require_crm()
    run_json(tmp_path, "accounts", "import", str(CRM), str(SAMPLE_ACCOUNTS))

    ingested = run_json(tmp_path, "ingest", str(SAMPLE / "craigslist"))
    quote = run_json(
        tmp_path,
        *["quote", "Acme Corporation", "--product", "GTX Pro", "--quantity", "20"],
        NO_TALKING_POINTS,
    )

    assert len(ingested["stored"]) == 4
    curve = quote["discount_curve"]
    assert (curve["fitted"], curve["n_dialogues"], curve["n_accepted"]) == (False, 4, 3)
    assert curve["reason"].startswith("only 3 deals and 1 no-deals among the stored negotiations")
    assert_within_limits(quote, "GTX Pro", 20)
