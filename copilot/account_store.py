"""The account records (CRM rows, tenders, contacts, stock, ...) in the SQLite file of the calls.

One table holds every kind: a row is ``(kind, key)`` with the record's JSON, its
``time`` and the account it belongs to. ``upsert`` applies a batch in one
transaction and never rolls a row back in time: a record older than the stored
one with the same key is counted as stale and dropped, because events arrive out
of order.

Reads go through an in-process cache of parsed records (one bucket per account
plus the shared facts), because the events path builds one context per event and
parsing a CRM-sized account from JSON costs more than the whole budget. Every
write bumps a revision number in the same transaction; a read that finds a
revision it did not write (another process imported) drops the cache first.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from copilot.context import (
    RECORD_TYPES,
    Account,
    AccountContext,
    Product,
    Record,
    as_utc,
)
from copilot.errors import InputError, NotFoundError

logger = logging.getLogger(__name__)

# Kinds that describe rather than happen: their time is when the row was written down, so
# they neither move the data clock nor drop out of a context seen at an earlier time.
DESCRIPTIVE_KINDS = frozenset({"account", "agent", "product"})
DATED_KINDS = frozenset(RECORD_TYPES) - DESCRIPTIVE_KINDS
# Facts every context carries, whatever the account (competitor prices only when market-wide).
SHARED_KINDS = frozenset({"agent", "product", "stock", "policy"})

_STALE_SAMPLES = 5
_KEYS_PER_QUERY = 900  # under the bound-parameter limit of old SQLite builds (999)


class _Base(DeclarativeBase):
    pass


class AccountRecordRow(_Base):
    __tablename__ = "account_records"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String, primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String, nullable=True, index=True)
    # Fixed-width UTC text (see _time_text), so the newest row is the largest string.
    time: Mapped[str] = mapped_column(String(32), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[str] = mapped_column(String(32))


class AccountMetaRow(_Base):
    """``revision``: bumped by every write that changed a row, so other processes see it."""

    __tablename__ = "account_meta"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


_records = AccountRecordRow.__table__
_meta = AccountMetaRow.__table__

# Built once: composing a statement costs more than running it on the one-event path.
_SELECT_REVISION = select(_meta.c.value).where(_meta.c.name == "revision")
_SET_REVISION = update(_meta).where(_meta.c.name == "revision").values(value=bindparam("revision"))
_SELECT_STORED = select(
    _records.c.key, _records.c.account_id, _records.c.time, _records.c.payload
).where(_records.c.kind == bindparam("kind"), _records.c.key.in_(bindparam("keys", expanding=True)))
_UPDATE_ROW = (
    update(_records)
    .where(_records.c.kind == bindparam("b_kind"), _records.c.key == bindparam("b_key"))
    .values(
        account_id=bindparam("account_id"),
        time=bindparam("time"),
        payload=bindparam("payload"),
        updated_at=bindparam("updated_at"),
    )
)
_SELECT_ACCOUNT_ROWS = select(_records.c.kind, _records.c.key, _records.c.payload).where(
    _records.c.account_id == bindparam("account_id")
)


@dataclass
class KindCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0


@dataclass
class UpsertReport:
    """What one ``upsert`` did, per record given (a key given twice counts twice).

    ``stale_keys`` holds up to five keys per kind that were older than the stored row;
    ``changed_accounts`` the accounts whose rows were inserted or updated.
    """

    kinds: dict[str, KindCounts] = field(default_factory=dict)
    stale_keys: dict[str, list[str]] = field(default_factory=dict)
    changed_accounts: set[str] = field(default_factory=set)

    def _count(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.kinds.values())

    @property
    def inserted(self) -> int:
        return self._count("inserted")

    @property
    def updated(self) -> int:
        return self._count("updated")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def stale(self) -> int:
        return self._count("stale")

    @property
    def changed(self) -> bool:
        return self.inserted + self.updated > 0


@dataclass
class _Bucket:
    """Parsed records by kind and key: one account's rows, or the shared facts."""

    rows: dict[str, dict[str, Record]] = field(default_factory=lambda: defaultdict(dict))

    def sorted(self, kind: str) -> list[Record]:
        return sorted(self.rows.get(kind, {}).values(), key=lambda r: (r.time, r.key))


def _time_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time_text(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _record(kind: str, payload: dict[str, Any]) -> Record:
    return RECORD_TYPES[kind].model_validate(payload)


def _is_shared(kind: str, account_id: str | None) -> bool:
    return kind in SHARED_KINDS or (kind == "competitor_price" and account_id is None)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class AccountStore:
    """Account records in one SQLite file (or any SQLAlchemy URL); safe to share between threads."""

    def __init__(self, db_path: Path | str):
        url = db_path if isinstance(db_path, str) and "://" in db_path else None
        if url is None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{db_path}"
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            _tune_sqlite(self.engine)
        _Base.metadata.create_all(self.engine)
        with self._write() as conn:
            if self._read_revision(conn) is None:
                conn.execute(insert(_meta).values(name="revision", value=0))

        self._lock = threading.RLock()
        self._revision: int | None = None  # the revision the cache reflects
        self._shared: _Bucket | None = None
        self._buckets: dict[str, _Bucket] = {}
        self._account_ids: set[str] | None = None
        self._clock: datetime | None = None
        self._clock_known = False

    # --- writing ----------------------------------------------------------

    def upsert(self, records: Iterable[Record]) -> UpsertReport:
        """Insert or replace records by (kind, key) in one transaction; older ones are stale."""
        records = list(records)
        for r in records:
            if not isinstance(r, Record) or r.kind not in RECORD_TYPES:
                raise InputError(
                    f"cannot store {type(r).__name__}: expected one of the record types of "
                    f"copilot.context ({', '.join(sorted(RECORD_TYPES))})"
                )
        report = UpsertReport()
        if not records:
            return report

        with self._lock:
            return self._upsert(records, report)

    def _upsert(self, records: list[Record], report: UpsertReport) -> UpsertReport:
        with self._write() as conn:
            revision = self._read_revision(conn) or 0
            if revision != self._revision:
                self._drop_cache()
            stored = self._stored_rows(conn, {(r.kind, r.key) for r in records})

            # Classify each record against the newest state known so far, the batch included.
            latest: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
                k: (row["time"], row["payload"]) for k, row in stored.items()
            }
            final: dict[tuple[str, str], Record] = {}
            for r in records:
                k = (r.kind, r.key)
                counts = report.kinds.setdefault(r.kind, KindCounts())
                time_text, payload = _time_text(r.time), r.model_dump(mode="json")
                before = latest.get(k)
                if before is None:
                    counts.inserted += 1
                elif before[0] > time_text:
                    counts.stale += 1
                    samples = report.stale_keys.setdefault(r.kind, [])
                    if len(samples) < _STALE_SAMPLES:
                        samples.append(r.key)
                    continue
                elif before[1] == payload:
                    counts.unchanged += 1
                    continue
                else:
                    counts.updated += 1
                latest[k] = (time_text, payload)
                final[k] = r

            if final:
                now = _time_text(datetime.now(UTC))
                new_rows, changed_rows = [], []
                for k, r in final.items():
                    row = {
                        "kind": r.kind,
                        "key": r.key,
                        "account_id": r.account,
                        "time": latest[k][0],
                        "payload": latest[k][1],
                        "updated_at": now,
                    }
                    (changed_rows if k in stored else new_rows).append(row)
                if new_rows:
                    conn.execute(insert(_records), new_rows)
                if changed_rows:
                    conn.execute(
                        _UPDATE_ROW,
                        [
                            {**row, "b_kind": row["kind"], "b_key": row["key"]}
                            for row in changed_rows
                        ],
                    )
                revision += 1
                conn.execute(_SET_REVISION, {"revision": revision})

        # Committed: bring the loaded parts of the cache along.
        for k, r in final.items():
            old = stored.get(k)
            old_account = old["account_id"] if old else None
            self._cache_put(r, old_account, replaced=old is not None)
            report.changed_accounts.update(a for a in (r.account, old_account) if a is not None)
        self._revision = revision
        return report

    # --- reading ----------------------------------------------------------

    def context(self, account_id: str, as_of: datetime | None = None) -> AccountContext:
        """Everything known about one account at ``as_of`` (default: the data clock).

        Dated rows later than ``as_of`` are left out; accounts, agents and products are
        descriptive and always kept. Lists are ordered by time. ``calls`` stays empty:
        call notes live in the call store and the service adds them.

        Only the latest version of each key is stored, so a context in the past lacks a row
        that changed after ``as_of`` (a deal won later is missing, not shown as engaging);
        an opportunity's ``engage_date``/``close_date`` still tell its history.
        """
        with self._lock:
            with self._read() as conn:
                bucket = self._bucket(conn, account_id)
                account = bucket.rows.get("account", {}).get(account_id)
                if account is None:
                    raise NotFoundError(self._unknown_account(conn, account_id))
                shared = self._shared_bucket(conn)
                if as_of is None:
                    as_of = self._current_clock(conn) or datetime.now(UTC)
            # Built under the lock: an upsert from another thread edits these buckets in place.
            return _assemble(cast(Account, account), as_utc(as_of), bucket, shared)

    def account_ids(self) -> list[str]:
        with self._lock, self._read() as conn:
            return sorted(self._known_accounts(conn))

    def has_account(self, account_id: str) -> bool:
        with self._lock, self._read() as conn:
            return account_id in self._known_accounts(conn)

    def known(self, account_id: str, product_ids: Iterable[str] = ()) -> tuple[bool, set[str]]:
        """Whether the account is stored, and which of ``product_ids`` are in the price list:
        one read where an event checks both."""
        with self._lock, self._read() as conn:
            products = self._shared_bucket(conn).rows.get("product", {})
            return account_id in self._known_accounts(conn), set(product_ids) & set(products)

    def accounts(self) -> list[Account]:
        return self.records("account")  # type: ignore[return-value]

    def products(self) -> dict[str, Product]:
        with self._lock, self._read() as conn:
            return dict(self._shared_bucket(conn).rows.get("product", {}))  # type: ignore[arg-type]

    def product(self, product_id: str) -> Product:
        products = self.products()
        if product_id not in products:
            known = ", ".join(sorted(products)[:8]) or "none yet"
            raise NotFoundError(
                f"no product '{product_id}' in the price list (known: {known}); import a "
                "products.csv with `copilot accounts import PATH` or fix the product name"
            )
        return products[product_id]

    def records(self, kind: str) -> list[Record]:
        """Every stored record of one kind, ordered by time (read from the file, not cached)."""
        if kind not in RECORD_TYPES:
            raise InputError(
                f"unknown record kind '{kind}'; expected one of {', '.join(sorted(RECORD_TYPES))}"
            )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_records.c.payload)
                .where(_records.c.kind == kind)
                .order_by(_records.c.time, _records.c.key)
            ).scalars()
            return [_record(kind, payload) for payload in rows]

    def counts(self) -> dict[str, int]:
        """How many records of each kind are stored."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_records.c.kind, func.count()).group_by(_records.c.kind)
            ).all()
        return {kind: n for kind, n in rows}

    def clock(self) -> datetime | None:
        """The latest time of a dated record (never of accounts, agents or products): the data clock."""
        with self._lock, self._read() as conn:
            return self._current_clock(conn)

    # --- connections ------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection whose first statement checks the cache is current (call under the lock)."""
        with self.engine.connect() as conn:
            self._sync(conn)
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # BEGIN IMMEDIATE (see _tune_sqlite): the stale check and the write see the same rows
        # even when another process writes the same file.
        with self.engine.connect().execution_options(copilot_write=True) as conn:
            with conn.begin():
                yield conn

    # --- cache ------------------------------------------------------------

    def _sync(self, conn: Connection) -> None:
        revision = self._read_revision(conn)
        if revision != self._revision:
            self._drop_cache()
            self._revision = revision

    def _drop_cache(self) -> None:
        self._shared, self._buckets, self._account_ids = None, {}, None
        self._clock, self._clock_known = None, False

    def _bucket(self, conn: Connection, account_id: str) -> _Bucket:
        bucket = self._buckets.get(account_id)
        if bucket is None:
            bucket = _Bucket()
            rows = conn.execute(_SELECT_ACCOUNT_ROWS, {"account_id": account_id})
            for kind, key, payload in rows:
                if not _is_shared(kind, account_id):
                    bucket.rows[kind][key] = _record(kind, payload)
            if bucket.rows:  # ids asked for but never stored must not grow the cache
                self._buckets[account_id] = bucket
        return bucket

    def _shared_bucket(self, conn: Connection) -> _Bucket:
        if self._shared is None:
            bucket = _Bucket()
            rows = conn.execute(
                select(_records.c.kind, _records.c.key, _records.c.payload).where(
                    or_(
                        _records.c.kind.in_(sorted(SHARED_KINDS)),
                        and_(
                            _records.c.kind == "competitor_price",
                            _records.c.account_id.is_(None),
                        ),
                    )
                )
            )
            for kind, key, payload in rows:
                bucket.rows[kind][key] = _record(kind, payload)
            self._shared = bucket
        return self._shared

    def _known_accounts(self, conn: Connection) -> set[str]:
        if self._account_ids is None:
            self._account_ids = set(
                conn.execute(select(_records.c.key).where(_records.c.kind == "account")).scalars()
            )
        return self._account_ids

    def _current_clock(self, conn: Connection) -> datetime | None:
        if not self._clock_known:
            latest = conn.execute(
                select(func.max(_records.c.time)).where(_records.c.kind.in_(sorted(DATED_KINDS)))
            ).scalar()
            self._clock = _parse_time_text(latest) if latest else None
            self._clock_known = True
        return self._clock

    def _cache_put(self, record: Record, old_account: str | None, replaced: bool) -> None:
        """Apply a committed record to whatever part of the cache is loaded."""
        kind, account_id = record.kind, record.account
        if replaced and old_account != account_id:
            # The row moved (an opportunity got its account): drop it where it was.
            if _is_shared(kind, old_account):
                if self._shared is not None:
                    self._shared.rows[kind].pop(record.key, None)
            elif old_account in self._buckets:
                self._buckets[old_account].rows[kind].pop(record.key, None)
        if _is_shared(kind, account_id):
            if self._shared is not None:
                self._shared.rows[kind][record.key] = record
        elif account_id is not None and account_id in self._buckets:
            self._buckets[account_id].rows[kind][record.key] = record
        if kind == "account" and self._account_ids is not None:
            self._account_ids.add(record.key)
        if kind in DATED_KINDS and self._clock_known:
            self._clock = record.time if self._clock is None else max(self._clock, record.time)

    # --- rows -------------------------------------------------------------

    def _stored_rows(
        self, conn: Connection, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, key in keys:
            by_kind[kind].append(key)
        stored: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, kind_keys in by_kind.items():
            for chunk in _chunks(sorted(kind_keys), _KEYS_PER_QUERY):
                rows = conn.execute(_SELECT_STORED, {"kind": kind, "keys": chunk}).mappings()
                for row in rows:
                    stored[(kind, row["key"])] = dict(row)
        return stored

    @staticmethod
    def _read_revision(conn: Connection) -> int | None:
        return conn.execute(_SELECT_REVISION).scalar()

    def _unknown_account(self, conn: Connection, account_id: str) -> str:
        known = sorted(self._known_accounts(conn))
        listed = ", ".join(known[:5]) + (f" ... ({len(known)} in all)" if len(known) > 5 else "")
        return (
            f"no account '{account_id}' is stored (known: {listed or 'none yet'}); import it "
            "with `copilot accounts import PATH` (a folder or file with accounts) or send an "
            "account event to POST /v1/events"
        )


def _assemble(
    account: Account, as_of: datetime, bucket: _Bucket, shared: _Bucket
) -> AccountContext:
    def until(rows: Iterable[Record]) -> list[Any]:
        return [r for r in rows if r.time <= as_of]

    sector = (account.sector or "").casefold()
    market_prices = [*bucket.sorted("competitor_price"), *shared.sorted("competitor_price")]
    return AccountContext(
        account=account,
        as_of=as_of,
        agents=dict(shared.rows.get("agent", {})),
        contacts=until(bucket.sorted("contact")),
        contact_changes=until(bucket.sorted("contact_change")),
        orders=until(bucket.sorted("order")),
        opportunities=until(bucket.sorted("opportunity")),
        tenders=until(bucket.sorted("tender")),
        budget_windows=until(bucket.sorted("budget_window")),
        competitor_prices=until(sorted(market_prices, key=lambda r: (r.time, r.key))),
        policies=[p for p in until(shared.sorted("policy")) if sector in p.sectors],
        products=dict(shared.rows.get("product", {})),
        # One stock row per product (its key): no order to keep, and a large catalogue
        # would make sorting it the costliest step of every event.
        stock={pid: s for pid, s in shared.rows.get("stock", {}).items() if s.time <= as_of},
    )


def _tune_sqlite(engine: Any) -> None:
    """WAL so readers never wait for the writer; NORMAL sync, which WAL keeps crash-safe."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below); sqlite3's own implicit BEGIN comes only
        # before the first write, after the stale check has already read the rows.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("copilot_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


__all__ = [
    "DATED_KINDS",
    "DESCRIPTIVE_KINDS",
    "AccountStore",
    "KindCounts",
    "UpsertReport",
]
