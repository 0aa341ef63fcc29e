"""The account side of the copilot: context, signals, win likelihood, recommendations, quotes.

One facade that the CLI (`copilot accounts ...`, `recommend`, `quote`), the HTTP
routes and the event worker all call, so each answer is computed one way. It
owns the account store, the rule book (re-read when the file changes), the win
model and the discount curve (both fitted once and kept under the data
directory beside the data they were fitted on).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from copilot.account_store import AccountStore, UpsertReport
from copilot.context import AccountContext, CallNote, Record, as_utc, plausible_time
from copilot.errors import InputError, NotFoundError, StateError
from copilot.importers import ImportReport, import_paths
from copilot.pricing import DiscountCurve, won_discounts
from copilot.quotes import quote_strategies
from copilot.recommend import recommend
from copilot.rules import RuleBook
from copilot.schemas import QuoteStrategy, Recommendation, Signal, WinScore
from copilot.scoring import WinModel, WinModelReport
from copilot.settings import Settings
from copilot.signals import compute_signals
from copilot.store import Store

logger = logging.getLogger(__name__)

WIN_MODEL_FILE = "win_model.json"
CURVE_FILE = "discount_curve.json"
# The most units one quote line may ask for (the HTTP body has the same bound).
MAX_QUOTE_QUANTITY = 10_000_000
# How often the call store is asked whether calls or objections changed.
CALLS_CHECK_S = 1.0
# The curve is learned from these negotiations; ingest them to fit it.
CURVE_DATASET = "craigslist"

TalkingPointWriter = Callable[..., Any]


@dataclass
class AccountScore:
    account_id: str
    win: WinScore
    signals: list[Signal]

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "win_likelihood": self.win.win_likelihood,
            "score": self.win.to_dict(),
            "signals": [s.to_dict() for s in self.signals],
        }


@dataclass
class AccountsImport:
    report: ImportReport
    model: WinModelReport | None
    model_skipped: str | None = None


@dataclass
class QuoteResult:
    account_id: str
    as_of: str
    win: WinScore
    strategies: list[QuoteStrategy]
    curve: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "as_of": self.as_of,
            "base_win_likelihood": self.win.win_likelihood,
            "strategies": [s.to_dict() for s in self.strategies],
            "discount_curve": self.curve,
        }


class AccountsService:
    def __init__(
        self,
        settings: Settings,
        calls: Store,
        talking_points: TalkingPointWriter | None = None,
    ):
        self.settings = settings
        self.calls = calls
        self.store = AccountStore(settings.db_path)
        self.talking_points = talking_points
        self._lock = threading.RLock()
        self._rulebook: RuleBook | None = None
        self._model: WinModel | None = None
        self._curve: DiscountCurve | None = None
        self._curve_version: Any = None
        self._won_discounts: dict | None = None
        self._notes: dict[str, list[CallNote]] = {}
        self._notes_version: Any = None
        self._accounts_with_calls: set[str] = set()
        self._calls_version: Any = None
        self._calls_checked = -math.inf

    # --- lazily built pieces ---------------------------------------------------

    @property
    def rulebook(self) -> RuleBook:
        with self._lock:
            if self._rulebook is None:
                self._rulebook = RuleBook(self.settings.rules_path)
            return self._rulebook

    @property
    def model(self) -> WinModel:
        with self._lock:
            if self._model is None:
                path = self.settings.models_dir / WIN_MODEL_FILE
                if path.exists():
                    self._model = WinModel.load(path)
                else:
                    self.train_model()
            return self._model

    @property
    def curve(self) -> DiscountCurve:
        """The win-versus-discount curve, refitted when the stored negotiations change."""
        with self._lock:
            version = self._stored_calls_version()
            if self._curve is not None and version == self._curve_version:
                return self._curve
            path = self.settings.models_dir / CURVE_FILE
            negotiations = self.calls.dataset_calls(CURVE_DATASET)
            saved = self._saved_curve(path)
            if saved is not None and saved.is_current(negotiations):
                self._curve = saved
            else:
                self._curve = self._fit_curve(negotiations, path)
            self._curve_version = version
            return self._curve

    @staticmethod
    def _saved_curve(path: Path) -> DiscountCurve | None:
        if not path.exists():
            return None
        try:
            return DiscountCurve.load(path)
        except StateError as exc:
            logger.warning("refitting the discount curve: %s", exc)
            return None

    def _fit_curve(self, negotiations: list, path: Path) -> DiscountCurve:
        if not negotiations:
            # Quotes still work without it: the curve is flat and says why, so a team that has
            # only its CRM gets prices within its limits, not a refusal.
            reason = (
                "no price negotiations are stored, so the discount did not move the win "
                "likelihood; run `copilot ingest ../shared/data/negotiation/craigslist` (or "
                "the bundled data/sample/craigslist) to learn the curve"
            )
            logger.warning("discount curve not learned: %s", reason)
            return replace(DiscountCurve.fit([], n_dialogues=0), reason=reason)
        curve = DiscountCurve.from_calls(negotiations)
        path.parent.mkdir(parents=True, exist_ok=True)
        curve.save(path)
        return curve

    # --- import and model ----------------------------------------------------

    def import_paths(self, paths: list[Path]) -> AccountsImport:
        """Import CRM folders and files, then refit the win model on the new history."""
        report = import_paths([Path(p) for p in paths], self.store, self.settings.accounts)
        try:
            model_report = self.train_model()
        except StateError as exc:
            # An account list without closed deals is a valid import; the model waits for history.
            logger.warning("win model not refitted: %s", exc)
            return AccountsImport(report, None, str(exc))
        return AccountsImport(report, model_report)

    def train_model(self) -> WinModelReport:
        """Fit the win model on every stored opportunity (time split, calibrated) and save it."""
        started = time.perf_counter()
        contexts = {a: self.store.context(a) for a in self.store.account_ids()}
        opportunities = self.store.records("opportunity")
        model, report = WinModel.fit(contexts, opportunities, self.settings.win_model)
        path = self.settings.models_dir / WIN_MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        with self._lock:
            self._model = model
            self._won_discounts = None
        logger.info(
            "win model %s fitted on %d opportunities in %.1f s",
            model.version,
            len(opportunities),
            time.perf_counter() - started,
        )
        return report

    # --- reading an account ----------------------------------------------------

    def has_account(self, account_id: str) -> bool:
        return self.store.has_account(account_id)

    def team_of(self, account_id: str) -> str | None:
        """The team that owns the account, or None when the account or its team is unknown."""
        try:
            return self.store.context(account_id).account.team
        except NotFoundError:  # unknown, or known only from an event that named it
            return None

    def known(self, account_id: str, product_ids: Iterable[str] = ()) -> tuple[bool, set[str]]:
        """Whether the account is stored, and which of ``product_ids`` are in the price list."""
        return self.store.known(account_id, product_ids)

    def clock(self) -> datetime:
        """The time signals are computed at (settings.accounts.clock)."""
        if self.settings.accounts.clock == "data":
            latest = self.store.clock()
            if latest is not None:
                return latest
        return datetime.now(UTC)

    def context(self, account_id: str, as_of: datetime | None = None) -> AccountContext:
        if as_of is not None:
            as_of = _checked_as_of(as_of)
        ctx = self.store.context(account_id, as_of or self.clock())
        ctx.calls = self._call_notes(account_id, ctx.as_of)
        return ctx

    def signals(self, account_id: str, as_of: datetime | None = None) -> list[Signal]:
        return self._signals(self.context(account_id, as_of))

    def _signals(self, ctx: AccountContext) -> list[Signal]:
        return compute_signals(ctx, self.settings.signals, self.settings.outcomes)

    def score(self, account_id: str, as_of: datetime | None = None) -> AccountScore:
        ctx = self.context(account_id, as_of)
        signals = self._signals(ctx)
        return AccountScore(account_id, self.model.score_account(ctx, signals), signals)

    def score_all(self, as_of: datetime | None = None) -> list[AccountScore]:
        """Every stored account, scored at one clock, most likely to win first."""
        at = as_of or self.clock()
        scores = [self.score(a, at) for a in self.store.account_ids()]
        return sorted(scores, key=lambda s: (-s.win.win_likelihood, s.account_id))

    def recommendations(
        self, account_id: str, as_of: datetime | None = None
    ) -> list[Recommendation]:
        ctx = self.context(account_id, as_of)
        return self._recommend(ctx, self._signals(ctx))

    def _recommend(self, ctx: AccountContext, signals: list[Signal]) -> list[Recommendation]:
        return recommend(ctx, signals, self.rulebook.current(), ctx.as_of)

    def rescore(self, account_id: str) -> tuple[list[Signal], list[Recommendation]]:
        """Signals and recommendations of one account now: what the event worker runs."""
        ctx = self.context(account_id)
        signals = self._signals(ctx)
        return signals, self._recommend(ctx, signals)

    # --- quotes ------------------------------------------------------------------

    def quote(
        self,
        account_id: str,
        items: list[tuple[str, int]],
        as_of: datetime | None = None,
        with_talking_points: bool = True,
    ) -> QuoteResult:
        """Three quote strategies for ``items`` (product id, quantity) at this account."""
        if not items:
            raise InputError("a quote needs at least one product: pass --product P --quantity N")
        ctx = self.context(account_id, as_of)
        for product_id, quantity in items:
            if product_id not in ctx.products:
                known = ", ".join(sorted(ctx.products)[:10]) or "none stored"
                raise NotFoundError(
                    f"unknown product '{product_id}'; known products: {known} "
                    "(import a price list with `copilot accounts import PATH`)"
                )
            if not 1 <= quantity <= MAX_QUOTE_QUANTITY:
                raise InputError(
                    f"quantity for '{product_id}' must be from 1 to {MAX_QUOTE_QUANTITY:,}, got "
                    f"{quantity:,}; quote a larger volume as several deliveries or deals"
                )
        signals = self._signals(ctx)
        win = self.model.score_account(ctx, signals)
        writer = self.talking_points if with_talking_points else None
        strategies = quote_strategies(
            ctx,
            items,
            win.win_likelihood,
            self.curve,
            self.settings.quotes,
            won_discounts=self._discounts_of_won_deals(),
            talking_points=writer,
        )
        return QuoteResult(account_id, ctx.as_of.isoformat(), win, strategies, self.curve.summary())

    def _discounts_of_won_deals(self) -> dict:
        with self._lock:
            if self._won_discounts is None:
                self._won_discounts = won_discounts(
                    self.store.records("opportunity"), self.store.products()
                )
            return self._won_discounts

    # --- writes from events ------------------------------------------------------

    def apply_records(self, records: Iterable[Record]) -> UpsertReport:
        return self.store.upsert(records)

    # --- call-derived facts ------------------------------------------------------

    def _stored_calls_version(self) -> Any:
        """The call store's fingerprint, re-read at most every CALLS_CHECK_S.

        Three queries per event would cost the event worker more than the signals themselves
        at a few hundred events a second; a call ingested elsewhere shows within the interval.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._calls_checked >= CALLS_CHECK_S:
                self._calls_version, self._calls_checked = self.calls.version(), now
            return self._calls_version

    def _call_notes(self, account_id: str, as_of: datetime) -> list[CallNote]:
        # Objections are re-mined as a whole, so the cache keys on the store's fingerprint.
        version = self._stored_calls_version()
        with self._lock:
            if version != self._notes_version:
                self._notes, self._notes_version = {}, version
                self._accounts_with_calls = self.calls.call_account_ids()
            if account_id not in self._accounts_with_calls:
                return []
            if account_id not in self._notes:
                self._notes[account_id] = self._read_notes(account_id)
            notes = self._notes[account_id]
        return [n for n in notes if n.time is None or n.time <= as_of]

    def _read_notes(self, account_id: str) -> list[CallNote]:
        calls = self.calls.account_calls(account_id)
        if not calls:
            return []
        ids = {c.call_id for c in calls}
        by_call: dict[str, list[tuple[str, str, float]]] = {}
        for o in self.calls.objections():
            if o.call_id in ids:
                by_call.setdefault(o.call_id, []).append((o.type, o.customer_text, o.start))
        return [
            CallNote(
                call_id=c.call_id,
                time=_call_time(c.date),
                outcome=c.outcome,
                polarity=self.settings.outcomes.polarity(c.outcome),
                turns=[(t.speaker, t.start, t.text) for t in c.turns if t.speaker == "customer"],
                objections=by_call.get(c.call_id, []),
            )
            for c in calls
        ]


def _checked_as_of(as_of: datetime) -> datetime:
    """``as_of`` in UTC, within the years a record may carry (so date arithmetic holds)."""
    try:
        return plausible_time(as_utc(as_of))
    except ValueError as exc:
        raise InputError(f"as_of {as_of.isoformat()}: {exc}") from exc


def _call_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        logger.warning("call date %r is not ISO 8601; the call counts as undated", text)
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
