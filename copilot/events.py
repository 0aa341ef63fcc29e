"""Account events: the body of ``POST /v1/events`` and the context records it becomes.

An event is an envelope (``idempotency_key``, ``type``, ``account_id``, ``time``)
around ``data``, the fields of one context record (copilot/context.py) without
the two the envelope already gives: the record's ``time`` is the event's time and
its ``account_id`` the event's account. So a stock event is::

    {"idempotency_key": "wms-8812", "type": "stock", "account_id": "acme",
     "time": "2024-03-01T09:00:00Z", "data": {"product_id": "GTX Pro", "on_hand": 4}}

``tender_milestone`` is the one type that is not a whole record: it adds or
updates one milestone of a stored tender, so it becomes that tender with the
milestone merged in (see ``merge_milestone``).

Every problem is reported at once, each naming its field and the fix, as an
``InputError``; nothing here touches a store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from copilot.context import (
    Account,
    BudgetWindow,
    CompetitorPrice,
    Contact,
    ContactChange,
    Milestone,
    Opportunity,
    Order,
    PolicyChange,
    Record,
    StockLevel,
    Tender,
    UtcTime,
)
from copilot.errors import InputError
from copilot.importers import parse_time, read_written_fields
from copilot.settings import AccountSettings

# The record each event type carries in ``data``.
EVENT_RECORDS: dict[str, type[Record]] = {
    "account": Account,
    "contact": Contact,
    "contact_change": ContactChange,
    "order": Order,
    "opportunity": Opportunity,
    "tender": Tender,
    "stock": StockLevel,
    "competitor_price": CompetitorPrice,
    "policy": PolicyChange,
    "budget_window": BudgetWindow,
}

EventType = Literal[
    "account",
    "contact",
    "contact_change",
    "order",
    "opportunity",
    "tender",
    "tender_milestone",
    "stock",
    "competitor_price",
    "policy",
    "budget_window",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

MAX_KEY_CHARS = 200
# An event's time is when its fact was observed: later than the server's clock by more than
# this is a typo or a wrong zone, and a record dated in the future would freeze its key
# (every correct, older event for it would then be stale).
MAX_CLOCK_SKEW = timedelta(hours=1)
EXAMPLE_TIME = "2024-03-01T09:00:00Z"


class EventIn(BaseModel):
    """The envelope of one event; ``data`` is checked against the record of ``type``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: str = Field(
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="The sender's unique id for this event: resending it is answered with "
        "the first result, never applied twice.",
    )
    type: EventType
    account_id: Annotated[str, StringConstraints(strip_whitespace=True)] = Field(
        min_length=1, max_length=200, description="The account the event is about (re-scored)."
    )
    time: UtcTime = Field(
        description="When the fact was observed, ISO 8601; a time without a zone is UTC."
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The record's fields without time and account_id (they come from the "
        "envelope); for tender_milestone: tender_id, name, due, done.",
    )


class MilestoneUpdate(BaseModel):
    """The ``data`` of a ``tender_milestone`` event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tender_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    due: UtcTime
    done: bool = False


def parse_event(body: Any, currency: str, settings: AccountSettings | None = None) -> EventIn:
    """The validated envelope of ``body``; its ``data`` is checked too (and currency filled in).

    ``currency`` is the accounts currency (settings.accounts.currency): amounts in any
    other are refused, since converting them silently would misprice every quote.
    """
    return parse_event_records(body, currency, settings)[0]


def parse_event_records(
    body: Any, currency: str, settings: AccountSettings | None = None
) -> tuple[EventIn, list[Record]]:
    """parse_event's envelope, with the records its data becomes (none for a milestone)."""
    if not isinstance(body, Mapping):
        raise InputError(
            f"the event body must be a JSON object, got {type(body).__name__}; send "
            '{"idempotency_key": ..., "type": ..., "account_id": ..., "time": ..., "data": {...}}'
        )
    try:
        event = EventIn.model_validate(body)
    except ValidationError as exc:
        raise InputError(describe_errors(exc, str(body.get("type")), currency)) from exc
    latest = datetime.now(UTC) + MAX_CLOCK_SKEW
    if event.time > latest:
        raise InputError(
            f"time: {event.time.isoformat()} is in the future (this server's clock says "
            f"{datetime.now(UTC).isoformat(timespec='seconds')}); send when the fact was "
            "observed, in UTC or with its zone (a deadline or a closing date goes in data)"
        )

    # The data is turned into its records here to report its problems now (at POST time)
    # rather than in the worker, where no client would see them.
    records: list[Record] = []
    if event.type == "tender_milestone":
        milestone_update(event)
    else:
        records = to_records(event, currency, settings=settings)
    return event.model_copy(update={"data": _with_currency(event, currency)}), records


def to_records(
    event: EventIn,
    currency: str,
    tenders: Mapping[str, Tender] | None = None,
    settings: AccountSettings | None = None,
) -> list[Record]:
    """The context records of ``event``; their ``time`` is the event's.

    ``data`` is read as an imported file's item is (copilot/importers.py): "US$ 5,000",
    "2018年1月9日" and "是" are understood, and ``settings``' aliases apply. ``tenders``
    are the account's stored tenders by id, needed only by ``tender_milestone``
    (InputError when the tender is not among them).
    """
    if event.type == "tender_milestone":
        update = milestone_update(event)
        tender = (tenders or {}).get(update.tender_id)
        if tender is None:
            raise InputError(
                f"data.tender_id: tender '{update.tender_id}' is not known for account "
                f"'{event.account_id}'; send a `tender` event for it before its milestones"
            )
        return [merge_milestone(tender, update, event)]

    model = EVENT_RECORDS[event.type]
    fields = _record_fields(event, model, currency, settings or AccountSettings(currency=currency))
    try:
        return [model.model_validate(fields)]
    except ValidationError as exc:
        raise InputError(describe_errors(exc, event.type, currency, prefix="data")) from exc


def milestone_update(event: EventIn) -> MilestoneUpdate:
    data = dict(event.data)
    _drop_envelope_fields(data, event)
    if isinstance(data.get("due"), str):
        try:
            data["due"] = parse_time(data["due"])
        except InputError as exc:
            raise InputError(f"data.due: {exc}") from None
    try:
        return MilestoneUpdate.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe_errors(exc, event.type, "", prefix="data")) from exc


def merge_milestone(tender: Tender, update: MilestoneUpdate, event: EventIn) -> Tender:
    """``tender`` with the milestone named ``update.name`` replaced (or added), as of the event.

    Staleness is judged per milestone: an event older than what is stored for *this*
    milestone leaves the tender as it is, while an older event for another milestone is
    still merged (the tender keeps its newer time).
    """
    key = update.name.casefold()
    current = next((m for m in tender.milestones if m.name.casefold() == key), None)
    if current is not None and (current.observed or tender.time) > event.time:
        return tender
    milestone = Milestone(name=update.name, due=update.due, done=update.done, observed=event.time)
    kept = [m for m in tender.milestones if m.name.casefold() != key]
    milestones = sorted([*kept, milestone], key=lambda m: m.due)
    return tender.model_copy(
        update={"milestones": milestones, "time": max(tender.time, event.time)}
    )


def body_hash(event: EventIn, records: list[Record] | None = None) -> str:
    """A hash of the event's meaning: the envelope and the record it becomes, defaults filled
    in. The same fact written two ways (a date vs. midnight UTC, ``3`` vs ``3.0``, a default
    spelled out, keys in another order) is the same body. ``event`` comes from parse_event;
    ``records`` are its records when already made (parse_event_records)."""
    if event.type == "tender_milestone":
        data: Any = milestone_update(event).model_dump(mode="json")
    else:
        if records is None:
            records = to_records(event, str(event.data.get("currency") or "USD"))
        data = [r.model_dump(mode="json") for r in records]
    canonical = json.dumps(
        {
            "idempotency_key": event.idempotency_key,
            "type": event.type,
            "account_id": event.account_id,
            "time": event.time.isoformat(),
            "data": data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- data -> record fields ----------------------------------------------------


def _record_fields(
    event: EventIn, model: type[Record], currency: str, settings: AccountSettings
) -> dict[str, Any]:
    fields = _with_currency(event, currency)
    _drop_envelope_fields(fields, event)
    fields = read_written_fields(fields, settings)
    fields["time"] = event.time
    if "account_id" in model.model_fields:
        fields["account_id"] = event.account_id
    return fields


def _with_currency(event: EventIn, currency: str) -> dict[str, Any]:
    """``data`` with ``currency`` set to the accounts currency when the record has one.

    A currency that is given must be that one; an absent one is filled in, so a record's
    default ("USD") never stands in for the configured currency.
    """
    data = dict(event.data)
    model = EVENT_RECORDS.get(event.type)
    if model is None or "currency" not in model.model_fields:
        return data
    given = data.get("currency")
    if given is None:
        data["currency"] = currency
        return data
    if not isinstance(given, str) or given.strip().upper() != currency.upper():
        raise InputError(
            f"data.currency: {given!r} is not the accounts currency '{currency}'; convert the "
            f"amounts to {currency} before sending (amounts are never converted silently), "
            "or set accounts.currency in the config"
        )
    data["currency"] = currency.upper()
    return data


def _drop_envelope_fields(data: dict[str, Any], event: EventIn) -> None:
    if "time" in data:
        raise InputError(
            "data.time: the record's time is the event's `time`; remove it from data "
            "and send one event per observation"
        )
    given = data.pop("account_id", event.account_id)
    if given != event.account_id:
        raise InputError(
            f"data.account_id: {given!r} differs from the event's account_id "
            f"'{event.account_id}'; send one event per account (or drop data.account_id)"
        )


# --- error messages -------------------------------------------------------------

_TIME_FIX = f"write an ISO 8601 time such as {EXAMPLE_TIME} (a time without a zone is UTC)"
_FIXES: dict[str, str] = {
    "missing": "add it",
    "datetime_parsing": _TIME_FIX,
    "datetime_from_date_parsing": _TIME_FIX,
    "datetime_type": _TIME_FIX,
    "date_from_datetime_parsing": _TIME_FIX,
    "greater_than": "send a positive number",
    "int_parsing": "send a whole number",
    "int_from_float": "send a whole number",
    "float_parsing": "send a plain number, without currency signs or separators",
    "bool_parsing": "send true or false",
    "list_type": "send a JSON list",
    "dict_type": "send a JSON object",
    "string_type": "send text",
    "string_too_short": "it must not be empty",
}


def describe_errors(exc: ValidationError, event_type: str, currency: str, prefix: str = "") -> str:
    """``field: problem (got value); fix`` for each error, joined by '; '."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if prefix and loc and loc[0] in ("time", "account_id"):
            prefix_loc = loc  # filled from the envelope: name the envelope's field
        else:
            prefix_loc = [prefix, *loc] if prefix else loc
        where = ".".join(prefix_loc) or "body"
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        kind = err.get("type", "")
        got = "" if kind == "missing" else f" (got {_short(err.get('input'))})"
        problems.append(f"{where}: {message}{got}; {_fix(kind, where, event_type, err)}")
    return "; ".join(problems)


def _fix(kind: str, where: str, event_type: str, err: Mapping[str, Any]) -> str:
    if kind == "greater_than_equal":
        bound = (err.get("ctx") or {}).get("ge")
        if bound == 0:
            return "quantities, prices and amounts cannot be negative"
        return f"send a value of at least {bound}"
    if kind == "extra_forbidden":
        if where.startswith("data.") and event_type in EVENT_RECORDS:
            return (
                f"remove it; the data of a {event_type!r} event takes: {_data_fields(event_type)}"
            )
        if where.startswith("data.") and event_type == "tender_milestone":
            return "remove it; the data of a 'tender_milestone' event takes: tender_id, name, due, done"
        return "remove it; an event has idempotency_key, type, account_id, time and data"
    if kind == "literal_error" and where == "type":
        return f"use one of: {', '.join(EVENT_TYPES)}"
    if kind == "missing" and where.startswith("data.") and event_type in EVENT_RECORDS:
        return f"add it (the data of a {event_type!r} event takes: {_data_fields(event_type)})"
    return _FIXES.get(kind, "see /docs for the event schema")


def _data_fields(event_type: str) -> str:
    fields = EVENT_RECORDS[event_type].model_fields
    return ", ".join(name for name in fields if name not in ("time", "account_id"))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
