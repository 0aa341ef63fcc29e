"""Account data files -> typed records (copilot.context), and the import that stores them.

Two layouts are read, also side by side in one folder:

* The Maven Analytics CRM export as it is (``accounts.csv``, ``products.csv``,
  ``sales_teams.csv``, ``sales_pipeline.csv``; ``data_dictionary.csv`` is ignored),
  recognised by its header.
* The project's own layout: one file per kind, named after it (``contacts.csv``,
  ``tenders.json``, ...; see ``KIND_FILES``). CSV columns are the record's field
  names, list fields are ``;``-separated; JSON is a list of objects, or an object
  mapping kinds to lists.

``read_path`` only parses. ``import_paths`` also checks that every row refers to a
known account and product and stores everything in one transaction, so a bad row
anywhere stores nothing. Errors name the file, the line (the item for JSON), the
column, the bad value, what was expected and how to fix it.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time as timer
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from copilot.account_store import DESCRIPTIVE_KINDS, AccountStore, KindCounts, UpsertReport
from copilot.context import RECORD_TYPES, Record
from copilot.errors import InputError
from copilot.settings import AccountSettings

logger = logging.getLogger(__name__)

# File stems of the project's layout -> record kind (the kind's own name works too).
KIND_FILES: dict[str, str] = {
    "accounts": "account",
    "agents": "agent",
    "sales_teams": "agent",
    "contacts": "contact",
    "contact_changes": "contact_change",
    "products": "product",
    "prices": "product",
    "orders": "order",
    "opportunities": "opportunity",
    "sales_pipeline": "opportunity",
    "tenders": "tender",
    "stock": "stock",
    "competitor_prices": "competitor_price",
    "policies": "policy",
    "budget_windows": "budget_window",
    **{kind: kind for kind in RECORD_TYPES},
}

# The Maven CRM files, told from ours of the same name by these header columns.
MAVEN_COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": (
        "account",
        "sector",
        "year_established",
        "revenue",
        "employees",
        "office_location",
        "subsidiary_of",
    ),
    "products": ("product", "series", "sales_price"),
    "sales_teams": ("sales_agent", "manager", "regional_office"),
    "sales_pipeline": (
        "opportunity_id",
        "sales_agent",
        "product",
        "account",
        "deal_stage",
        "engage_date",
        "close_date",
        "close_value",
    ),
}
_MAVEN_IGNORED = {"data_dictionary"}
_DOC_SUFFIXES = {".md", ".txt", ".rst", ".pdf"}  # notes beside the data, never data

_KEY_FIELDS = {
    "account": "account_id",
    "agent": "agent",
    "contact": "contact_id",
    "contact_change": "change_id",
    "product": "product_id",
    "order": "order_id",
    "opportunity": "opportunity_id",
    "tender": "tender_id",
    "stock": "product_id",
    "competitor_price": "observation_id",
    "policy": "policy_id",
    "budget_window": "window_id",
}
# How a written cell becomes a value, by field name (the same names across kinds).
_MONEY = {"list_price", "unit_cost", "margin_floor", "total", "value", "budget", "unit_price"}
_MONEY |= {"amount"}
_TIMES = {"time", "engage_date", "close_date", "opens_at", "deadline", "incoming_eta"}
_TIMES |= {"effective", "opens", "closes"}
_INTS = {"employees", "quantity", "on_hand", "incoming", "lead_time_days"}
_NUMBERS = {"revenue_musd"}
_BOOLS = {"champion", "active"}
_LISTS = {"product_ids", "sectors"}
_TRUE = {"true", "yes", "y", "1", "是", "真"}
_FALSE = {"false", "no", "n", "0", "否", "假"}
# Kinds whose rows must name a stored or imported account / product.
_ACCOUNT_REFS = {"opportunity", "order", "contact", "contact_change", "tender", "budget_window"}
_ACCOUNT_REFS |= {"competitor_price"}
_PRODUCT_REFS = {"opportunity", "order", "stock", "competitor_price", "tender"}
_DUPLICATES_NAMED = 5  # per file; the rest are counted in one more warning


@dataclass
class ImportReport:
    """What ``import_paths`` read and stored; ``kinds`` holds the per-kind upsert counts."""

    files: list[str]
    records: int
    upsert: UpsertReport
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def kinds(self) -> dict[str, KindCounts]:
        return self.upsert.kinds

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": self.records,
            "kinds": {k: vars(c) for k, c in sorted(self.kinds.items())},
            "stale_keys": self.upsert.stale_keys,
            "warnings": self.warnings,
            "wall_s": round(self.wall_s, 3),
        }

    def summary(self) -> str:
        """A few lines for people: totals, then one line per kind, then the warnings."""
        lines = [
            f"imported {self.records} records from {len(self.files)} files in {self.wall_s:.1f} s"
        ]
        for kind, c in sorted(self.kinds.items()):
            lines.append(
                f"  {kind:<16} {c.inserted} new, {c.updated} updated, {c.unchanged} unchanged, "
                f"{c.stale} stale"
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --- cells ------------------------------------------------------------------

# Which currencies a written sign may stand for; a sign that could be the expected one passes.
_CURRENCY_SIGNS: dict[str, set[str]] = {
    "$": {"USD", "AUD", "CAD", "HKD", "NZD", "SGD", "TWD", "MXN"},
    "US$": {"USD"},
    "HK$": {"HKD"},
    "NT$": {"TWD"},
    "¥": {"CNY", "JPY"},
    "￥": {"CNY", "JPY"},
    "元": {"CNY"},
    "RMB": {"CNY"},
    "€": {"EUR"},
    "£": {"GBP"},
}
_MONEY_RE = re.compile(r"^(?P<pre>[^\d.,\s-]*)\s*(?P<num>-?[\d.,]+)\s*(?P<post>[^\d.,\s]*)$")
_NUMBER_RE = re.compile(r"^-?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")
_SLASH_DATE_RE = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_CJK_DATE_RE = re.compile(
    r"^(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日(?:\s*(\d{1,2})[:：](\d{2})(?:[:：](\d{2}))?)?$"
)
_TIME_FORMS = (
    "2017-03-01, 2017-03-01T09:00:00Z, 2017-03-01T17:00:00+08:00, 2017/03/01 or 2017年3月1日"
)


def parse_money(text: str | float | int, expected_currency: str) -> float:
    """A written amount ("1,200.50", "$1,200.50", "¥8,000", "8000 CNY", "8,000元") as a float.

    A currency sign or code that cannot be ``expected_currency`` is refused: amounts
    are never converted, since a silent exchange rate would skew every quote.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    written = str(text).strip()
    match = _MONEY_RE.match(written)
    if not written or match is None or not _NUMBER_RE.match(match["num"]):
        raise InputError(
            f"'{written}' is not an amount: expected a number such as 1200, 1,200.50, "
            f"$1,200.50 or 1200 {expected_currency}"
        )
    expected = expected_currency.upper()
    for sign in (match["pre"], match["post"]):
        if not sign:
            continue
        currencies = _CURRENCY_SIGNS.get(sign) or _CURRENCY_SIGNS.get(sign.upper())
        if currencies is None and re.fullmatch(r"[A-Za-z]{3}", sign):
            currencies = {sign.upper()}
        if currencies is None:
            raise InputError(
                f"'{written}' is not an amount: '{sign}' is no currency sign or code; write "
                f"a number, optionally with {expected} or its sign"
            )
        if expected not in currencies:
            raise InputError(
                f"'{written}' is in {' or '.join(sorted(currencies))}, not {expected}: amounts "
                f"are not converted; convert it to {expected} or set accounts.currency"
            )
    return float(match["num"].replace(",", ""))


def parse_time(text: str | date | datetime) -> datetime:
    """An ISO date or time (naive = UTC), "2017/03/01" or "2017年3月1日" as an aware UTC datetime."""
    if isinstance(text, datetime):
        value = text
    elif isinstance(text, date):
        value = datetime(text.year, text.month, text.day)
    else:
        written = str(text).strip()
        value = _written_time(written)
        if value is None:
            raise InputError(f"'{written}' is not a date or time: expected {_TIME_FORMS}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _written_time(written: str) -> datetime | None:
    if not written:
        return None
    try:
        return datetime.fromisoformat(written)
    except ValueError:
        pass
    match = _SLASH_DATE_RE.match(written) or _CJK_DATE_RE.match(written)
    if match is None:
        return None
    try:
        return datetime(*(int(g) for g in match.groups() if g is not None))
    except ValueError:  # 2017/02/30
        return None


def _parse_number(text: str) -> float:
    if not _NUMBER_RE.match(text):
        raise InputError(f"'{text}' is not a number: expected digits such as 1100 or 1,100.04")
    return float(text.replace(",", ""))


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"-?(\d{1,3}(,\d{3})+|\d+)", text):
        raise InputError(f"'{text}' is not a whole number: expected digits such as 12 or 1,200")
    return int(text.replace(",", ""))


def _parse_bool(text: str) -> bool:
    folded = text.casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise InputError(f"'{text}' is not true or false: expected true/false, yes/no, 1/0 or 是/否")


# --- where a row came from ------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    file: str
    line: int | None = None  # CSV line
    item: str | None = None  # JSON: "item 3" or "tenders[2]"

    def at(self, column: str | None = None) -> str:
        place = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.item:
            place += f" {self.item}"
        # A CSV has columns; a JSON item or an event body has fields.
        label = "column" if self.line is not None else "field"
        return f"{place}: {label} '{column}'" if column else place


def _cell_error(where: _Where, column: str, exc: InputError) -> InputError:
    return InputError(f"{where.at(column)}: {exc}; fix the cell or remove the row")


@dataclass
class _Draft:
    """A row's fields, parsed but not yet validated as a record."""

    kind: str
    fields: dict[str, Any]
    where: _Where
    columns: dict[str, str] = field(default_factory=dict)  # field -> the source's column name

    @property
    def key(self) -> str | None:
        value = self.fields.get(_KEY_FIELDS[self.kind])
        return None if value is None else str(value)


@dataclass
class _Reading:
    """Everything one path yielded: drafts in file order, the files read, the warnings."""

    settings: AccountSettings
    drafts: list[_Draft] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first_date: datetime | None = None  # of the Maven pipeline: when descriptive rows were written

    def warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.warnings.append(message)


class _Aliases:
    """Applies the configured renames (case-folded) and counts them for one warning per file."""

    def __init__(self, aliases: dict[str, str], setting: str):
        self.table = {k.strip().casefold(): v for k, v in aliases.items()}
        self.setting = setting
        self.done: Counter[tuple[str, str]] = Counter()

    def __call__(self, value: str) -> str:
        target = self.table.get(value.strip().casefold())
        if target is None or target == value:
            return value
        self.done[(value, target)] += 1
        return target

    def report(self, reading: _Reading, file: str, what: str) -> None:
        if self.done:
            pairs = ", ".join(f"'{a}' -> '{b}' ({n})" for (a, b), n in sorted(self.done.items()))
            reading.warn(
                f"{file}: {what} renamed by {self.setting} in {sum(self.done.values())} rows: "
                f"{pairs}"
            )
            self.done.clear()


# --- public entry points -------------------------------------------------------------


def read_path(path: Path, settings: AccountSettings) -> list[Record]:
    """The records in a file or folder of either layout; nothing is stored."""
    return [record for record, _ in _read(Path(path), settings)[0]]


def record_from_dict(
    kind: str, fields: dict[str, Any], settings: AccountSettings, source: str = "event"
) -> Record:
    """One record from a JSON-like mapping (an event body), read as a JSON file's item is:
    written amounts and dates, aliases, the currency check. ``kind`` may be plural."""
    record_kind = KIND_FILES.get(kind)
    if record_kind is None:
        raise InputError(
            f"{source}: unknown record kind '{kind}'; expected one of "
            f"{', '.join(sorted(RECORD_TYPES))}"
        )
    where = _Where(source)
    return _validate(_json_draft(record_kind, fields, where, settings, _kind_aliases(settings)))


def import_paths(paths: list[Path], store: AccountStore, settings: AccountSettings) -> ImportReport:
    """Read every path, check references, then store all of it in one transaction."""
    started = timer.perf_counter()
    if not paths:
        raise InputError("no path to import: give a folder or file of account data")

    rows: list[tuple[Record, _Draft]] = []
    files: list[str] = []
    warnings: list[str] = []
    for path in paths:
        read, reading = _read(Path(path), settings)
        rows += read
        files += reading.files
        warnings += reading.warnings

    _check_references(rows, store)
    report = store.upsert(record for record, _ in rows)

    wall_s = timer.perf_counter() - started
    logger.info(
        "imported %d records from %d files in %.2f s: %d inserted, %d updated, %d unchanged, "
        "%d stale",
        len(rows),
        len(files),
        wall_s,
        report.inserted,
        report.updated,
        report.unchanged,
        report.stale,
    )
    return ImportReport(files, len(rows), report, warnings, wall_s)


# --- reading a path -------------------------------------------------------------------


def _read(path: Path, settings: AccountSettings) -> tuple[list[tuple[Record, _Draft]], _Reading]:
    if not path.exists():
        raise InputError(
            f"{path} does not exist; give a folder or a .csv/.json file of account data"
        )
    reading = _Reading(settings)
    maven, ours, unknown = _sort_files(path)
    if unknown:
        reading.warn(
            f"{path}: skipped files whose names say no record kind: "
            f"{', '.join(p.name for p in unknown)} (expected names: "
            f"{', '.join(sorted(k for k in KIND_FILES if k not in RECORD_TYPES))}, .csv or .json)"
        )

    if maven:
        _read_maven(maven, reading)
    for kind, file in ours:
        reading.files.append(str(file))
        if file.suffix.casefold() == ".json":
            _read_json(file, kind, reading)
        elif kind is not None:
            _read_csv(file, kind, reading)
    _warn_duplicate_keys(reading)

    drafts = _merge_descriptive(_date_descriptive(reading))
    rows = [(_validate(d), d) for d in drafts]
    if not rows:
        raise InputError(
            f"{path} holds nothing importable: expected the CRM export (accounts.csv, "
            "sales_pipeline.csv, ...) or files named after a record kind "
            f"({', '.join(sorted(KIND_FILES))}) with at least one row"
        )
    return rows, reading


def _warn_duplicate_keys(reading: _Reading) -> None:
    """Warn of a key given twice in one file, which the per-kind counts alone would hide.

    Both rows go to the store, which keeps the newer by time, else the later row, just
    as a later import would replace an earlier one.
    """
    first: dict[tuple[str, str, str], _Where] = {}
    found: dict[str, dict[tuple[str, str, str], str]] = {}
    for draft in reading.drafts:
        if draft.key is None:
            continue  # reported as missing when the row is checked
        k = (draft.where.file, draft.kind, draft.key)
        earlier = first.get(k)
        first[k] = draft.where
        if earlier is None:
            continue
        # A won deal gives an opportunity and an order from one row: one warning for both.
        pair = (draft.key, _position(earlier), _position(draft.where))
        found.setdefault(draft.where.file, {}).setdefault(
            pair,
            f"{draft.where.file}: {draft.kind} '{draft.key}' is given twice, {pair[1]} and "
            f"{pair[2]}; one is stored: the one of the later time, {pair[2]} if the times "
            "are equal; remove the other row",
        )
    for file, by_pair in found.items():
        messages = list(by_pair.values())
        for message in messages[:_DUPLICATES_NAMED]:
            reading.warn(message)
        if len(messages) > _DUPLICATES_NAMED:
            reading.warn(
                f"{file}: {len(messages) - _DUPLICATES_NAMED} more keys given twice; "
                "check the file for repeated rows"
            )


def _position(where: _Where) -> str:
    return f"line {where.line}" if where.line is not None else where.item or "the file"


def is_account_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of account data (``copilot accounts import``), not calls.

    Call ingest skips such folders, so that ``copilot ingest data/sample`` does not read the
    sample's tenders.json as a transcript."""
    if not path.is_dir():
        return False
    maven, ours, _ = _sort_files(path)
    return bool(maven or ours)


def _sort_files(path: Path) -> tuple[dict[str, Path], list[tuple[str | None, Path]], list[Path]]:
    """Split a path's files into Maven CRM files, files of our layout, and unknown ones."""
    candidates = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    maven: dict[str, Path] = {}
    ours: list[tuple[str | None, Path]] = []
    unknown: list[Path] = []
    for file in candidates:
        stem, suffix = file.stem.casefold(), file.suffix.casefold()
        if file.name.startswith(".") or (suffix in _DOC_SUFFIXES and path.is_dir()):
            continue
        if suffix == ".csv" and stem in _MAVEN_IGNORED:
            continue
        if suffix == ".csv" and stem in MAVEN_COLUMNS and _is_maven(file, stem):
            maven[stem] = file
        elif suffix in (".csv", ".json") and stem in KIND_FILES:
            ours.append((KIND_FILES[stem], file))
        elif suffix == ".json" and not path.is_dir():
            ours.append((None, file))  # a single JSON file may map kinds to lists
        else:
            unknown.append(file)
    if not path.is_dir() and unknown:
        raise InputError(
            f"{path}: the file name says no record kind; name it after one "
            f"({', '.join(sorted(KIND_FILES))}) as .csv or .json"
        )
    return maven, ours, unknown


def _is_maven(file: Path, stem: str) -> bool:
    # One column no file of our layout has tells them apart; a missing other column is then
    # reported against the CRM layout, which is what the file was meant to be.
    telling = {
        "accounts": "office_location",
        "products": "sales_price",
        "sales_teams": "regional_office",
        "sales_pipeline": "deal_stage",
    }
    return telling[stem] in _header(file)


def _header(file: Path) -> list[str]:
    try:
        with _open_text(file) as handle:
            first = next(csv.reader(handle), [])
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise InputError(f"{file}: is not valid CSV ({exc}); check its quoting") from exc
    return [c.strip() for c in first]


def _open_text(file: Path):
    try:
        return file.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror}); check the path") from exc


def _csv_rows(file: Path, required: Iterable[str] = ()) -> Iterator[tuple[_Where, dict[str, str]]]:
    """Non-blank rows as (where, stripped cells), checking the header has ``required``."""
    try:
        with _open_text(file) as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            _check_unique_columns(file, header)
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(
                    f"{file}: header lacks column(s) {', '.join(missing)}; expected "
                    f"{', '.join(required)}"
                )
            reader.fieldnames = header
            for row in reader:
                cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
                if None in row:
                    raise InputError(
                        f"{file}:{reader.line_num}: more cells than the header has columns "
                        f"({len(header)}); quote cells that hold commas"
                    )
                if any(cells.values()):
                    yield _Where(str(file), reader.line_num), cells
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise InputError(f"{file}: is not valid CSV ({exc}); check its quoting") from exc


def _check_unique_columns(file: Path, header: list[str]) -> None:
    """A column named twice would let one cell silently replace the other."""
    seen: dict[str, int] = {}
    for number, column in enumerate(header, start=1):
        if not column:
            continue  # unnamed columns (trailing commas) are never read
        if column in seen:
            raise InputError(
                f"{file}: the header has column '{column}' twice (columns {seen[column]} and "
                f"{number}); rename or remove one of them"
            )
        seen[column] = number


# --- the Maven CRM layout -----------------------------------------------------------


def _read_maven(files: dict[str, Path], reading: _Reading) -> None:
    """The CRM export: agents, products, the pipeline (opportunities + an order per won deal),
    then the accounts, whose owner the pipeline gives."""
    settings = reading.settings
    products = _Aliases(settings.product_aliases, "accounts.product_aliases")
    sectors = _Aliases(settings.sector_aliases, "accounts.sector_aliases")
    teams: dict[str, str] = {}

    if "sales_teams" in files:
        file = files["sales_teams"]
        reading.files.append(str(file))
        for where, row in _csv_rows(file, MAVEN_COLUMNS["sales_teams"]):
            teams[row["sales_agent"]] = row["regional_office"]
            reading.drafts.append(
                _Draft(
                    "agent",
                    _present(
                        agent=row["sales_agent"],
                        manager=row["manager"],
                        team=row["regional_office"],
                    ),
                    where,
                    {"agent": "sales_agent", "team": "regional_office"},
                )
            )

    if "products" in files:
        file = files["products"]
        reading.files.append(str(file))
        for where, row in _csv_rows(file, MAVEN_COLUMNS["products"]):
            fields = _present(product_id=row["product"], name=row["product"], series=row["series"])
            if row["sales_price"]:
                fields["list_price"] = _cell(
                    where, "sales_price", lambda t: parse_money(t, settings.currency), row
                )
            fields["currency"] = settings.currency.upper()
            reading.drafts.append(
                _Draft(
                    "product",
                    fields,
                    where,
                    {"product_id": "product", "name": "product", "list_price": "sales_price"},
                )
            )

    # The CRM has no owner column: an account's owner is taken to be the agent on its most
    # recent opportunity, and the owner's team that agent's regional office.
    latest_deal: dict[str, tuple[datetime, str, str]] = {}
    if "sales_pipeline" in files:
        file = files["sales_pipeline"]
        reading.files.append(str(file))
        deals = []
        for where, row in _csv_rows(file, MAVEN_COLUMNS["sales_pipeline"]):
            engage = _cell(where, "engage_date", parse_time, row)
            close = _cell(where, "close_date", parse_time, row)
            deals.append((where, row, engage, close))
        dates = [d for _, _, engage, close in deals for d in (engage, close) if d is not None]
        reading.first_date = min(dates, default=None)

        columns = {
            "opportunity_id": "opportunity_id",
            "account_id": "account",
            "product_id": "product",
            "agent": "sales_agent",
            "stage": "deal_stage",
            "value": "close_value",
        }
        for where, row, engage, close in deals:
            when = close or engage or reading.first_date
            value = _cell(where, "close_value", lambda t: parse_money(t, settings.currency), row)
            product = products(row["product"]) if row["product"] else None
            fields = _present(
                time=when,
                opportunity_id=row["opportunity_id"],
                account_id=row["account"],
                product_id=product,
                agent=row["sales_agent"],
                stage=row["deal_stage"].casefold(),
                engage_date=engage,
                close_date=close,
                value=value,
                currency=settings.currency.upper(),
            )
            reading.drafts.append(_Draft("opportunity", fields, where, columns))
            if row["account"] and row["sales_agent"] and when is not None:
                mark = (when, row["opportunity_id"], row["sales_agent"])
                latest_deal[row["account"]] = max(latest_deal.get(row["account"], mark), mark)
            if fields["stage"] == "won":
                reading.drafts.append(_won_order(fields, where, columns, reading))
        products.report(reading, str(file), "product")

    if "accounts" in files:
        file = files["accounts"]
        reading.files.append(str(file))
        for where, row in _csv_rows(file, MAVEN_COLUMNS["accounts"]):
            owner = latest_deal.get(row["account"], (None, None, None))[2]
            fields = _present(
                account_id=row["account"],
                name=row["account"],
                sector=sectors(row["sector"]) if row["sector"] else None,
                region=row["office_location"],
                revenue_musd=_cell(where, "revenue", _parse_number, row),
                employees=_cell(where, "employees", _parse_int, row),
                parent=row["subsidiary_of"],
                owner=owner,
                team=teams.get(owner) if owner else None,
            )
            reading.drafts.append(
                _Draft(
                    "account",
                    fields,
                    where,
                    {
                        "account_id": "account",
                        "name": "account",
                        "region": "office_location",
                        "revenue_musd": "revenue",
                        "parent": "subsidiary_of",
                    },
                )
            )
        sectors.report(reading, str(file), "sector")


def _won_order(
    deal: dict[str, Any], where: _Where, columns: dict[str, str], reading: _Reading
) -> _Draft:
    """A won deal is also an order: one unit at the close value, on the close date."""
    if not deal.get("account_id"):
        raise InputError(
            f"{where.at('account')}: a won deal needs its account (it becomes an order); "
            "fill in the account or change the stage"
        )
    if deal.get("value") is None or deal.get("close_date") is None:
        missing = "close_value" if deal.get("value") is None else "close_date"
        raise InputError(
            f"{where.at(missing)}: a won deal needs its {missing} (it becomes an order); "
            "fill it in or change the stage"
        )
    fields = {
        "time": deal["close_date"],
        "order_id": deal["opportunity_id"],
        "account_id": deal["account_id"],
        "product_id": deal.get("product_id"),
        "quantity": 1,
        "total": deal["value"],
        "currency": reading.settings.currency.upper(),
    }
    order_columns = {
        "order_id": "opportunity_id",
        "account_id": "account",
        "product_id": "product",
        "total": "close_value",
        "time": "close_date",
    }
    return _Draft("order", fields, where, {**columns, **order_columns})


def _present(**fields: Any) -> dict[str, Any]:
    """Fields that were written: blank cells are left out, so the record's default applies."""
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def _cell(where: _Where, column: str, parse: Any, row: dict[str, str]) -> Any:
    text = row.get(column, "")
    if not text:
        return None
    try:
        return parse(text)
    except InputError as exc:
        raise _cell_error(where, column, exc) from None


# --- the project's own layout ---------------------------------------------------------


def _read_csv(file: Path, kind: str, reading: _Reading) -> None:
    model_fields = set(RECORD_TYPES[kind].model_fields)
    header = _header(file)
    extra = [c for c in header if c and c not in model_fields]
    if extra:
        reading.warn(
            f"{file}: skipped column(s) that a {kind} does not have: {', '.join(extra)} "
            f"(known: {', '.join(sorted(model_fields))})"
        )
    aliases = _kind_aliases(reading.settings)
    for where, row in _csv_rows(file):
        fields: dict[str, Any] = {}
        for column, text in row.items():
            if column in model_fields and text:
                fields[column] = _convert(kind, column, text, where, reading.settings, aliases)
        reading.drafts.append(_finish(kind, fields, where, reading.settings))
    for name, alias in aliases.items():
        alias.report(reading, str(file), name)


def _read_json(file: Path, kind: str | None, reading: _Reading) -> None:
    try:
        with _open_text(file) as handle:
            data = json.load(handle)
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: is not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno}); fix the syntax"
        ) from exc

    if isinstance(data, dict) and data and all(k in KIND_FILES for k in data):
        sections = [(KIND_FILES[k], k, v) for k, v in data.items()]
    elif kind is not None and isinstance(data, list | dict):
        sections = [(kind, None, data if isinstance(data, list) else [data])]
    else:
        raise InputError(
            f"{file}: expected a JSON list of {kind or 'record'} objects, or an object mapping "
            f"record kinds ({', '.join(sorted(KIND_FILES))}) to lists"
        )

    aliases = _kind_aliases(reading.settings)
    for section_kind, name, items in sections:
        if not isinstance(items, list):
            raise InputError(
                f"{file}: '{name}' must be a list of objects, not {type(items).__name__}"
            )
        for i, item in enumerate(items, start=1):
            where = _Where(str(file), item=f"{name}[{i}]" if name else f"item {i}")
            if not isinstance(item, dict):
                raise InputError(f"{where.at()}: expected an object of {section_kind} fields")
            reading.drafts.append(_json_draft(section_kind, item, where, reading.settings, aliases))
    for alias_name, alias in aliases.items():
        alias.report(reading, str(file), alias_name)


def _json_draft(
    kind: str,
    item: dict[str, Any],
    where: _Where,
    settings: AccountSettings,
    aliases: dict[str, _Aliases],
) -> _Draft:
    model_fields = set(RECORD_TYPES[kind].model_fields)
    unknown = [k for k in item if k not in model_fields]
    if unknown:
        raise InputError(
            f"{where.at(unknown[0])}: a {kind} has no field '{unknown[0]}' "
            f"(known: {', '.join(sorted(model_fields))}); rename or remove it"
        )
    fields = {
        k: _convert(kind, k, v, where, settings, aliases)
        for k, v in item.items()
        if v is not None and v != ""
    }
    return _finish(kind, fields, where, settings)


def _kind_aliases(settings: AccountSettings) -> dict[str, _Aliases]:
    return {
        "product": _Aliases(settings.product_aliases, "accounts.product_aliases"),
        "sector": _Aliases(settings.sector_aliases, "accounts.sector_aliases"),
    }


def _convert(
    kind: str,
    name: str,
    value: Any,
    where: _Where,
    settings: AccountSettings,
    aliases: dict[str, _Aliases],
) -> Any:
    """One written value as the field wants it (JSON numbers and lists pass as they are)."""
    try:
        return _read_value(name, value, settings, aliases)
    except InputError as exc:
        raise _cell_error(where, name, exc) from None


def read_written_fields(fields: dict[str, Any], settings: AccountSettings) -> dict[str, Any]:
    """An event's ``data`` read the way an imported JSON item is: amounts with a sign or code,
    dates in any form the importer reads, yes/no words, the configured aliases. InputError
    names the field (``data.<name>``)."""
    aliases = _kind_aliases(settings)
    out: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            out[name] = value if value is None else _read_value(name, value, settings, aliases)
        except InputError as exc:
            raise InputError(f"data.{name}: {exc}") from None
    return out


def _read_value(
    name: str, value: Any, settings: AccountSettings, aliases: dict[str, _Aliases]
) -> Any:
    """One written value as the field ``name`` wants it; InputError says what is wrong."""
    if name in _MONEY:
        return parse_money(value, settings.currency)
    if name in _TIMES:
        return parse_time(value)
    if name == "milestones":
        return _milestones(value)
    if isinstance(value, str):
        text = value.strip()
        if name in _INTS:
            return _parse_int(text)
        if name in _NUMBERS:
            return _parse_number(text)
        if name in _BOOLS:
            return _parse_bool(text)
        if name in _LISTS:
            value = [p.strip() for p in re.split(r"[;；]", text) if p.strip()]
        elif name == "stage":
            return text.casefold()
        elif name == "currency":
            return _currency(text, settings)
        else:
            value = text
    if name == "product_id" and isinstance(value, str):
        return aliases["product"](value)
    if name == "product_ids" and isinstance(value, list):
        return [aliases["product"](p) if isinstance(p, str) else p for p in value]
    if name == "sector" and isinstance(value, str):
        return aliases["sector"](value)
    if name == "sectors" and isinstance(value, list):
        return [aliases["sector"](s) if isinstance(s, str) else s for s in value]
    return value


def _currency(text: str, settings: AccountSettings) -> str:
    if text.upper() != settings.currency.upper():
        raise InputError(
            f"'{text}' is not {settings.currency.upper()}: amounts are not converted; convert "
            "the row's amounts or set accounts.currency"
        )
    return text.upper()


def _milestones(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"milestones must be a JSON list such as "
                f'[{{"name": "bid opening", "due": "2018-01-10T02:00:00Z"}}] ({exc.msg})'
            ) from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise InputError('milestones must be a list of {"name", "due", "done"} objects')
    return [{**m, "due": parse_time(m["due"])} if m.get("due") else m for m in value]


def _finish(kind: str, fields: dict[str, Any], where: _Where, settings: AccountSettings) -> _Draft:
    if "currency" in RECORD_TYPES[kind].model_fields:
        fields.setdefault("currency", settings.currency.upper())
    return _Draft(kind, fields, where)


# --- drafts -> records ----------------------------------------------------------------


def _date_descriptive(reading: _Reading) -> list[_Draft]:
    """Accounts, agents and products without a time get the time the data was written down:
    the CRM pipeline's first date, else the earliest dated row of the same path."""
    undated = [d for d in reading.drafts if d.kind in DESCRIPTIVE_KINDS and "time" not in d.fields]
    if not undated:
        return reading.drafts
    base = reading.first_date
    if base is None:
        times = [
            d.fields["time"]
            for d in reading.drafts
            if d.kind not in DESCRIPTIVE_KINDS and isinstance(d.fields.get("time"), datetime)
        ]
        base = min(times, default=None)
    if base is None:
        raise InputError(
            f"{undated[0].where.at('time')}: missing, and nothing dated in this import to date "
            "it by; add a time column (when the row was written down, e.g. 2018-01-08)"
        )
    for d in undated:
        d.fields["time"] = base
    return reading.drafts


def _merge_descriptive(drafts: list[_Draft]) -> list[_Draft]:
    """Rows of one account, agent or product from several files become one: a later file's
    cells complete and override an earlier file's (prices.csv adds costs to products.csv)."""
    merged: dict[tuple[str, str], _Draft] = {}
    out: list[_Draft] = []
    for d in drafts:
        if d.kind not in DESCRIPTIVE_KINDS or d.key is None:
            out.append(d)
            continue
        k = (d.kind, d.key)
        earlier = merged.get(k)
        if earlier is None or earlier.where.file == d.where.file:
            merged[k] = d
            out.append(d)
        else:
            earlier.fields.update(d.fields)
            earlier.columns.update(d.columns)
            # A later file's time wins only when it wrote one; errors point at the later row.
            earlier.where = d.where
    return out


def _validate(draft: _Draft) -> Record:
    model = RECORD_TYPES[draft.kind]
    try:
        return model.model_validate(draft.fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else _KEY_FIELDS[draft.kind]
        column = draft.columns.get(name, name)
        if err["type"] == "missing":
            raise InputError(
                f"{draft.where.at(column)}: missing or blank; a {draft.kind} row needs it: fill it "
                "in (or give it in another file of this import)"
            ) from None
        bad = err.get("input")
        raise InputError(
            f"{draft.where.at(column)}: {err['msg']} (got {bad!r}); fix the value or remove the row"
        ) from None


def _check_references(rows: list[tuple[Record, _Draft]], store: AccountStore) -> None:
    """Rows must name an account and products that are imported here or already stored."""
    accounts = {r.key for r, _ in rows if r.kind == "account"} | set(store.account_ids())
    products = {r.key for r, _ in rows if r.kind == "product"} | set(store.products())
    problems: list[str] = []
    for record, draft in rows:
        account = record.account
        if record.kind in _ACCOUNT_REFS and account is not None and account not in accounts:
            problems.append(
                f"{draft.where.at(draft.columns.get('account_id', 'account_id'))}: unknown account '{account}'; add it to the accounts "
                "file of this import (or import it first), or fix the name"
            )
        if record.kind in _PRODUCT_REFS:
            named = getattr(record, "product_ids", None) or [getattr(record, "product_id", None)]
            for product in named:
                if product is not None and product not in products:
                    known = ", ".join(sorted(products)) or "none yet"
                    column = "product_ids" if record.kind == "tender" else "product_id"
                    problems.append(
                        f"{draft.where.at(draft.columns.get(column, column))}: unknown product '{product}' (known: {known}); "
                        "add it to products.csv, map the spelling in accounts.product_aliases, "
                        "or fix the name"
                    )
        if len(problems) >= 5:
            break
    if problems:
        raise InputError(
            "nothing was imported; rows refer to unknown accounts or products:\n  "
            + "\n  ".join(problems)
        )


__all__ = [
    "KIND_FILES",
    "ImportReport",
    "import_paths",
    "parse_money",
    "parse_time",
    "read_path",
    "record_from_dict",
]
