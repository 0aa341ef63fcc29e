"""The event pipeline: store an event durably, then apply it, re-score and alert in the background.

``submit`` (``POST /v1/events``) validates the body, checks the account and stores
the event, and answers at once. One worker thread takes the stored events in order
of arrival, applies their records through the accounts service (an older record
than the stored one is stale and changes nothing), re-computes the account's
signals and recommendations, and turns every recommendation not alerted within
``alerts.cooldown_hours`` into an alert for the hub. A stopped process leaves its
unprocessed events pending; the next ``start`` processes them, so none is lost.

Wiring (serve/api/app.py)::

    app.state.events = EventPipeline(settings, accounts_service)
    app.include_router(events.router)   # its lifespan starts and stops the worker
    app.include_router(alerts.router)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Protocol

from copilot.account_store import UpsertReport
from copilot.context import AccountContext, Record
from copilot.errors import CopilotError, NotFoundError, StateError
from copilot.event_store import (
    ActionInfo,
    AlertChain,
    AlertInfo,
    EventInfo,
    EventStatus,
    EventStore,
    Outcome,
    PendingEvent,
    RepAction,
    WebhookTarget,
)
from copilot.events import (
    EventIn,
    body_hash,
    milestone_update,
    parse_event_records,
    to_records,
)
from copilot.rules import RuleBook
from copilot.schemas import Recommendation, Signal
from copilot.settings import Settings
from serve.alerts import AlertHub

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5  # the worker re-checks the store this often even when not woken
BATCH = 100  # pending events read at a time
COMMIT_EVERY = 20  # outcomes written per transaction at most ...
COMMIT_WITHIN_S = 0.05  # ... and at the latest this long after the first of them


class SubscriptionConflictError(StateError):
    """The URL already receives these alerts with another secret (HTTP 409)."""

    code = "conflict"


class AccountsPort(Protocol):
    """What the pipeline needs of serve.accounts.AccountsService."""

    rulebook: RuleBook  # for each rule's own cooldown_hours

    def apply_records(self, records: Iterable[Record]) -> UpsertReport: ...

    def rescore(self, account_id: str) -> tuple[list[Signal], list[Recommendation]]: ...

    def has_account(self, account_id: str) -> bool: ...

    def known(self, account_id: str, product_ids: Iterable[str]) -> tuple[bool, set[str]]: ...

    def context(self, account_id: str, as_of: datetime | None = None) -> AccountContext: ...


def upsert_counts(report: UpsertReport) -> dict[str, dict[str, int]]:
    """``{kind: {"inserted": n, "updated": n, "unchanged": n, "stale": n}}`` of one upsert."""
    return {kind: asdict(counts) for kind, counts in report.kinds.items()}


def event_status(applied: Mapping[str, Mapping[str, int]]) -> EventStatus:
    """applied when any record was inserted or updated; stale when all were older than stored."""
    changed = sum(c.get("inserted", 0) + c.get("updated", 0) for c in applied.values())
    if changed:
        return "applied"
    if sum(c.get("stale", 0) for c in applied.values()):
        return "stale"
    return "unchanged"


class EventPipeline:
    """Events in, alerts out; one instance per process, shared by the API routes."""

    def __init__(self, settings: Settings, accounts: AccountsPort, store: EventStore | None = None):
        self.settings = settings
        self.accounts = accounts
        self.store = store or EventStore(settings.db_path)
        self.hub = AlertHub(settings.alerts, self.store)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy = threading.Lock()  # one processor at a time: events apply in order
        self._thread: threading.Thread | None = None
        self._subscribing = threading.Lock()

    # --- intake -------------------------------------------------------------------

    def submit(self, body: Any) -> EventInfo:
        """Validate and store one event; ``duplicate`` is set when its key was seen before.

        InputError for a malformed body, NotFoundError for an account that is neither
        stored nor created by an earlier event, KeyConflictError for a reused key.
        """
        accounts = self.settings.accounts
        event, records = parse_event_records(body, accounts.currency, accounts)
        named = {getattr(r, "product_id", None) for r in records}
        named |= {p for r in records for p in getattr(r, "product_ids", [])}
        named.discard(None)
        account_known, known_products = self.accounts.known(event.account_id, named)

        if event.type != "account" and not (
            account_known or self.store.has_account_event(event.account_id)
        ):
            raise NotFoundError(
                f"account '{event.account_id}' is not known; send an event of type 'account' "
                "for it first (data: name, sector, ...) or import it with "
                "`copilot accounts import`"
            )
        # Refused now, as imports refuse them, rather than failing later in the worker.
        unknown = sorted(named - known_products)
        if unknown:
            raise NotFoundError(
                f"data: product(s) {', '.join(map(repr, unknown))} not in the price list; "
                "import them (products.csv or prices.csv) with `copilot accounts import PATH`, "
                "or fix the product id"
            )
        if event.type == "tender_milestone":
            self._check_tender(event)

        info, duplicate = self.store.add_event(event, body_hash(event, records))
        if not duplicate:
            self._wake.set()
        return info

    def _known_account(self, account_id: str) -> bool:
        return self.accounts.has_account(account_id) or self.store.has_account_event(account_id)

    def _check_tender(self, event: EventIn) -> None:
        tender_id = milestone_update(event).tender_id
        stored = {t.tender_id for t in self.accounts.context(event.account_id).tenders}
        if tender_id not in stored and not self.store.has_tender_event(event.account_id, tender_id):
            raise NotFoundError(
                f"data.tender_id: tender '{tender_id}' is not known for account "
                f"'{event.account_id}'; send a `tender` event for it before its milestones"
            )

    # --- the worker ---------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (and resume unfinished webhook deliveries); idempotent."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.hub.resume_webhooks()
        self._thread = threading.Thread(target=self._run, name="event-worker", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after the event in hand; pending events stay stored for the next start."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout_s)
        self.hub.close(timeout_s)

    def _run(self) -> None:
        logger.info("event worker started")
        while not self._stop.is_set():
            self._wake.clear()
            try:
                done = self.process_pending()
                self.hub.flush()
            except Exception:
                # The store itself failed (disk full, locked for too long): keep the events
                # pending and try again shortly rather than spin or die.
                logger.exception("event worker: processing failed; retrying in %.1f s", 1.0)
                self._stop.wait(1.0)
                continue
            if not done:
                self._wake.wait(IDLE_WAIT_S)
        logger.info("event worker stopped")

    def process_pending(self, limit: int = BATCH) -> int:
        """Process the stored pending events, oldest first; returns how many.

        Outcomes are committed in groups (COMMIT_EVERY events or COMMIT_WITHIN_S,
        whichever comes first), so a backlog costs one transaction per group while an
        alert never waits long for the events processed after it.
        """
        with self._busy:
            batch = self.store.pending(limit)
            outcomes: list[Outcome] = []
            opened = time.perf_counter()
            for pending in batch:
                if self._stop.is_set():
                    break
                if not outcomes:
                    opened = time.perf_counter()
                outcomes.append(self._outcome(pending))
                if len(outcomes) >= COMMIT_EVERY or time.perf_counter() - opened >= COMMIT_WITHIN_S:
                    self._commit(outcomes)
                    outcomes = []
            self._commit(outcomes)
            return len(batch)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Whether every stored event was processed within ``timeout_s`` (tests, the CLI)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.store.pending(1) and not self._busy.locked():
                return True
            time.sleep(0.02)
        return False

    def _outcome(self, pending: PendingEvent) -> Outcome:
        """Apply one event's records and re-score its account (nothing is written here but them)."""
        event = pending.event
        try:
            tenders = None
            if event.type == "tender_milestone":
                context = self.accounts.context(event.account_id)
                tenders = {t.tender_id: t for t in context.tenders}
            records = to_records(
                event, self.settings.accounts.currency, tenders, self.settings.accounts
            )
            applied = upsert_counts(self.accounts.apply_records(records))
        except Exception as exc:  # one transaction: nothing of this event was stored
            return Outcome(pending, "failed", error=_failure(pending, exc, "applying it"))
        status = event_status(applied)
        if status == "stale":
            return Outcome(pending, status, applied)

        # "unchanged" is re-scored too: after a crash between applying and recording,
        # the re-run finds its records unchanged and must still raise the alerts.
        try:
            signals, recommendations = self.accounts.rescore(event.account_id)
        except Exception as exc:
            error = _failure(pending, exc, "re-scoring the account; its records were stored")
            return Outcome(pending, "failed", applied, error=error)
        return Outcome(
            pending,
            status,
            applied,
            signals=[s.to_dict() for s in signals],
            recommendations=[r.to_dict() for r in recommendations],
        )

    def _commit(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        created = self.store.finish_many(
            outcomes,
            cooldown=self._cooldowns(),
            webhooks=self.hub.webhook_targets(),
            stream_deliveries=self.hub.take_log(),
        )
        for alert, deliveries in created:
            self.hub.publish(alert, deliveries)
        logger.debug("recorded %d events, %d new alerts", len(outcomes), len(created))

    def _cooldowns(self) -> dict[str, timedelta]:
        """Each rule's cooldown (its own cooldown_hours, else alerts.cooldown_hours); key "" = default."""
        default = self.settings.alerts.cooldown_hours
        rules = self.accounts.rulebook.current().rules
        return {
            "": timedelta(hours=default),
            **{
                r.id: timedelta(hours=r.cooldown_hours)
                for r in rules
                if r.cooldown_hours is not None
            },
        }

    # --- reading the chain ---------------------------------------------------------

    def event(self, event_id: str) -> EventInfo:
        return self.store.event(event_id)

    def alerts(
        self, account_id: str | None = None, after: str | None = None, limit: int = 50
    ) -> list[AlertInfo]:
        """Recent alerts, newest first; ``after`` (an alert id): the ones after it, oldest first."""
        after_seq = None
        if after is not None:
            after_seq = self.store.alert_seq(after)
            if after_seq is None:
                raise NotFoundError(
                    f"alert '{after}' is not stored; pass an alert_id from GET /v1/alerts "
                    "or the id of the last alert the stream sent"
                )
        return self.store.alerts(account_id, after_seq=after_seq, limit=limit)

    def chain(self, alert_id: str) -> AlertChain:
        return self.store.chain(alert_id)

    def act(self, alert_id: str, action: RepAction, actor: str, note: str | None) -> ActionInfo:
        """Record the rep's answer to an alert."""
        recorded = self.store.add_action(alert_id, action, actor, note)
        logger.info("alert %s: %s by %s", alert_id, action, actor)
        return recorded

    # --- webhook subscriptions -------------------------------------------------------

    def require_account(self, account_id: str | None) -> str | None:
        """``account_id`` if it is stored or was sent as an account event; NotFoundError if not."""
        if account_id is None or self._known_account(account_id):
            return account_id
        raise NotFoundError(
            f"account '{account_id}' is not known; check the id (`copilot accounts score` "
            "lists the accounts), import it with `copilot accounts import` or send an event "
            "of type 'account' for it"
        )

    def subscribe(
        self, url: str, account_id: str | None = None, secret: str | None = None
    ) -> tuple[WebhookTarget, bool]:
        """The subscription of ``url`` to ``account_id``'s alerts, and whether it is new.

        An existing one (from the API or alerts.webhooks) with the same URL and account is
        returned as it is; with another secret it is a conflict, since keeping either
        secret silently would break the receiver's signature check.
        """
        self.require_account(account_id)
        # NOTE: check-then-add is atomic within this process only; a unique (url,
        # account_id) constraint in copilot.event_store would cover several servers.
        with self._subscribing:
            same = [h for h in self.webhooks() if (h.url, h.account_id) == (url, account_id)]
            if not same:
                return self.add_webhook(url, account_id, secret), True
        hook = same[0]
        if hook.secret != secret:
            scope = f"the alerts of account '{account_id}'" if account_id else "all alerts"
            how = (
                f"DELETE /v1/webhooks/{hook.webhook_id} first"
                if hook.webhook_id
                else "change alerts.webhook_secret in the configuration"
            )
            raise SubscriptionConflictError(
                f"{url} is already subscribed to {scope} with another secret; send the same "
                f"secret, or {how} to subscribe it with this one"
            )
        return hook, False

    def add_webhook(
        self, url: str, account_id: str | None = None, secret: str | None = None
    ) -> WebhookTarget:
        hook = self.store.add_webhook(url, account_id, secret)
        self.hub.webhooks_changed()
        return hook

    def webhooks(self) -> list[WebhookTarget]:
        return self.hub.webhook_targets()

    def remove_webhook(self, webhook_id: str) -> None:
        self.store.remove_webhook(webhook_id)
        self.hub.webhooks_changed()


def _failure(pending: PendingEvent, exc: Exception, step: str) -> str:
    """The event's error text: a project error says what to fix; anything else is logged."""
    if isinstance(exc, CopilotError):
        logger.warning("event %s failed while %s: %s", pending.event_id, step, exc)
        return f"failed while {step}: {exc}"
    logger.exception("event %s failed while %s", pending.event_id, step)
    return f"internal error while {step} ({type(exc).__name__}); see the server log"


@asynccontextmanager
async def events_lifespan(app: Any) -> AsyncIterator[None]:
    """Start the app's pipeline (``app.state.events``) with the server and stop it after."""
    pipeline: EventPipeline | None = getattr(app.state, "events", None)
    if pipeline is None:
        logger.warning("no event pipeline attached (app.state.events); /v1/events answers 503")
        yield
        return
    pipeline.start()
    try:
        yield
    finally:
        pipeline.close()
