"""Event bodies: validation messages that name the field, and the records an event becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from copilot.context import Milestone, Order, StockLevel, Tender
from copilot.errors import InputError
from copilot.events import (
    EVENT_RECORDS,
    EVENT_TYPES,
    EventIn,
    body_hash,
    parse_event,
    to_records,
)


def body(type_: str = "stock", time: str = "2024-03-01T09:00:00Z", **data) -> dict:
    return {
        "idempotency_key": f"key-{type_}",
        "type": type_,
        "account_id": "acme",
        "time": time,
        "data": data or {"product_id": "GTX Pro", "on_hand": 4},
    }


def error_of(payload: object, currency: str = "USD") -> str:
    with pytest.raises(InputError) as caught:
        parse_event(payload, currency)
    return str(caught.value)


def test_every_type_but_milestones_maps_to_a_record() -> None:
    assert set(EVENT_TYPES) == {*EVENT_RECORDS, "tender_milestone"}


def test_stock_event_becomes_a_stock_record_at_the_event_time() -> None:
    event = parse_event(body(time="2024-03-01T17:30:00+08:00"), "USD")
    [record] = to_records(event, "USD")
    assert isinstance(record, StockLevel)
    assert record.time == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    assert (record.product_id, record.on_hand, record.incoming) == ("GTX Pro", 4, 0)


def test_a_time_without_a_zone_is_utc() -> None:
    event = parse_event(body(time="2024-03-01T09:00:00"), "USD")
    assert event.time == datetime(2024, 3, 1, 9, tzinfo=UTC)


def test_account_id_comes_from_the_envelope_and_currency_from_the_settings() -> None:
    payload = body("order", order_id="o-7", product_id="GTX Pro", quantity=3, total=1500.5)
    event = parse_event(payload, "CNY")
    [order] = to_records(event, "CNY")
    assert isinstance(order, Order)
    assert (order.account_id, order.currency, order.total) == ("acme", "CNY", 1500.5)


@pytest.mark.parametrize(
    ("when", "detail"),
    [("2024-13-01", "month value is outside"), ("01/03/2024", "valid datetime"), ("soon", "")],
)
def test_malformed_time_names_the_field_and_the_format(when: str, detail: str) -> None:
    message = error_of(body(time=when))
    assert message.startswith("time: ")
    assert detail in message
    assert repr(when) in message
    assert "ISO 8601" in message and "2024-03-01T09:00:00Z" in message


def test_malformed_date_inside_data_names_the_data_field() -> None:
    payload = body("tender", tender_id="t-1", title="Fleet renewal", deadline="2024-02-30")
    message = error_of(payload)
    assert message.startswith("data.deadline: '2024-02-30' is not a date or time: expected ")
    assert "2017-03-01T09:00:00Z" in message


def test_data_is_read_the_way_an_imported_file_is() -> None:
    # The written forms a CRM export uses: a Chinese date, a signed amount, yes/no words.
    payload = body(
        "budget_window",
        window_id="w-1",
        opens="2018年1月1日",
        closes="2018/06/30",
        amount="US$ 5,000",
    )
    [window] = to_records(parse_event(payload, "USD"), "USD")
    assert (window.opens, window.closes, window.amount) == (
        datetime(2018, 1, 1, tzinfo=UTC),
        datetime(2018, 6, 30, tzinfo=UTC),
        5000.0,
    )
    contact = body("contact", contact_id="c-1", name="李娜", role="采购负责人", champion="是")
    [record] = to_records(parse_event(contact, "USD"), "USD")
    assert record.champion is True
    milestone = body("tender_milestone", tender_id="t-1", name="答疑", due="2018年1月12日")
    assert parse_event(milestone, "USD").data["due"] == "2018年1月12日"
    assert "data.amount: '€5' is in EUR, not USD" in error_of(
        body("budget_window", window_id="w-2", opens="2018-01-01", closes="2018-02-01", amount="€5")
    )


def test_negative_quantity_is_refused_with_the_field() -> None:
    message = error_of(body(product_id="GTX Pro", on_hand=-5))
    assert message.startswith("data.on_hand: ")
    assert "(got -5)" in message
    assert "cannot be negative" in message


def test_order_quantity_below_one_says_the_bound() -> None:
    message = error_of(body("order", order_id="o-1", product_id="P", quantity=0, total=10))
    assert message.startswith("data.quantity: ")
    assert "at least 1" in message


def test_another_currency_is_refused_not_converted() -> None:
    payload = body("order", order_id="o-1", product_id="P", quantity=1, total=10, currency="EUR")
    message = error_of(payload, currency="USD")
    assert message.startswith("data.currency: 'EUR'")
    assert "'USD'" in message and "convert" in message


def test_same_currency_in_lower_case_is_accepted() -> None:
    payload = body("order", order_id="o-1", product_id="P", quantity=1, total=10, currency="usd")
    [order] = to_records(parse_event(payload, "USD"), "USD")
    assert order.currency == "USD"


def test_unknown_type_lists_the_types() -> None:
    message = error_of(body("stocks"))
    assert message.startswith("type: ")
    assert "'stocks'" in message
    assert "stock, competitor_price" in message


def test_unknown_data_field_lists_the_fields_of_the_type() -> None:
    message = error_of(body(product_id="P", on_hand=1, warehouse="north"))
    assert message.startswith("data.warehouse: ")
    assert "product_id, on_hand, incoming, incoming_eta, lead_time_days" in message


def test_missing_required_field_and_envelope_field() -> None:
    payload = body("account")
    payload["data"] = {"sector": "retail"}
    del payload["idempotency_key"]
    message = error_of(payload)
    assert "idempotency_key: Field required; add it" in message
    assert "data.name: Field required" not in message  # envelope errors come first, alone


def test_missing_data_field() -> None:
    message = error_of({**body("account"), "data": {"sector": "retail"}})
    assert message.startswith("data.name: Field required; add it")


def test_key_longer_than_200_chars_is_refused() -> None:
    message = error_of({**body(), "idempotency_key": "k" * 201})
    assert message.startswith("idempotency_key: ")
    assert "200" in message


def test_time_inside_data_and_a_second_account_are_refused() -> None:
    timed = {**body(), "data": {"product_id": "P", "on_hand": 1, "time": "2024-01-01"}}
    assert error_of(timed).startswith("data.time: ")
    message = error_of(body("contact", contact_id="c", name="Li", role="buyer", account_id="x"))
    assert message.startswith("data.account_id: 'x' differs")


def test_a_body_that_is_not_an_object() -> None:
    assert "must be a JSON object, got list" in error_of([1, 2])


def test_body_hash_ignores_how_the_time_is_written_but_not_the_facts() -> None:
    midnight = parse_event(body(time="2024-03-01"), "USD")
    written_out = parse_event(body(time="2024-03-01T08:00:00+08:00"), "USD")
    assert body_hash(midnight) == body_hash(written_out)
    other = parse_event(
        {**body(time="2024-03-01"), "data": {"product_id": "GTX Pro", "on_hand": 5}}, "USD"
    )
    assert body_hash(other) != body_hash(midnight)


def _tender(time: datetime) -> Tender:
    return Tender(
        time=time,
        tender_id="t-1",
        account_id="acme",
        title="Fleet renewal",
        deadline=datetime(2024, 4, 1, tzinfo=UTC),
        milestones=[
            Milestone(name="Q&A closes", due=datetime(2024, 3, 10, tzinfo=UTC)),
            Milestone(name="Site visit", due=datetime(2024, 3, 5, tzinfo=UTC)),
        ],
    )


def test_tender_milestone_replaces_the_milestone_of_that_name() -> None:
    stored = _tender(datetime(2024, 2, 1, tzinfo=UTC))
    payload = body(
        "tender_milestone",
        tender_id="t-1",
        name="q&a CLOSES",
        due="2024-03-12T12:00:00",
        done=False,
    )
    event = parse_event(payload, "USD")
    [tender] = to_records(event, "USD", {"t-1": stored})
    assert tender.time == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert [(m.name, m.due) for m in tender.milestones] == [
        ("Site visit", datetime(2024, 3, 5, tzinfo=UTC)),
        ("q&a CLOSES", datetime(2024, 3, 12, 12, tzinfo=UTC)),
    ]
    assert (tender.title, tender.deadline) == (stored.title, stored.deadline)


def test_tender_milestone_for_an_unknown_tender_says_to_send_the_tender() -> None:
    event = parse_event(
        body("tender_milestone", tender_id="t-9", name="Bid", due="2024-03-20"), "USD"
    )
    with pytest.raises(InputError, match=r"tender 't-9' is not known for account 'acme'"):
        to_records(event, "USD", {})


def test_tender_milestone_data_is_checked_at_parse_time() -> None:
    message = error_of(body("tender_milestone", tender_id="t-1", name="Bid", due="next week"))
    assert message.startswith("data.due: ")


def test_envelope_model_is_strict() -> None:
    assert EventIn.model_config["extra"] == "forbid"
    offset = timezone(timedelta(hours=-5))
    event = EventIn(
        idempotency_key="k", type="policy", account_id="a", time=datetime(2024, 1, 1, tzinfo=offset)
    )
    assert event.time.utcoffset() == timedelta(0)


def test_an_observation_time_in_the_future_is_refused() -> None:
    # A typo (2081 for 2018) would date the record ahead of every correct event and freeze it.
    message = error_of(body(time="2081-01-08T09:00:00Z"))
    assert message.startswith("time: 2081-01-08T09:00:00+00:00 is in the future")
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert parse_event(body(time=soon), "USD").time.year == datetime.now(UTC).year


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"product_id": "GTX Pro", "on_hand": 10**20}, "on_hand = 1e+20 is larger than 1e+15"),
        ({"product_id": "GTX Pro", "on_hand": 1, "incoming_eta": "9999-12-31"}, "year 9999"),
    ],
)
def test_implausible_numbers_and_years_in_data_are_refused(data: dict, detail: str) -> None:
    assert detail in error_of(body(**data))


def test_infinite_amounts_are_refused() -> None:
    payload = body("competitor_price", observation_id="c-1", competitor="V", product_id="GTX Pro")
    payload["data"]["unit_price"] = float("inf")
    assert "data.unit_price: Input should be a finite number" in error_of(payload)


def test_a_budget_window_closing_before_it_opens_is_refused() -> None:
    payload = body(
        "budget_window", window_id="w-1", opens="2024-06-01", closes="2024-01-01", amount=5
    )
    assert "the window closes (2024-01-01T00:00:00+00:00) before it opens" in error_of(payload)


def test_the_account_id_is_read_without_surrounding_spaces() -> None:
    payload = {**body(), "account_id": "  acme "}
    assert parse_event(payload, "USD").account_id == "acme"


def test_body_hash_treats_a_spelt_out_default_and_a_float_count_as_the_same_fact() -> None:
    plain = parse_event(body(product_id="GTX Pro", on_hand=3), "USD")
    spelt = parse_event(body(product_id="GTX Pro", on_hand=3.0, incoming=0), "USD")
    assert body_hash(plain) == body_hash(spelt)


def test_an_older_event_for_another_milestone_is_still_merged() -> None:
    # The stored tender was last changed at 2024-03-01 09:00 (its first milestone event).
    stored = _tender(datetime(2024, 2, 1, tzinfo=UTC))
    first = parse_event(
        body("tender_milestone", tender_id="t-1", name="Bid", due="2024-03-20"), "USD"
    )
    [after_first] = to_records(first, "USD", {"t-1": stored})

    older = parse_event(
        body(
            "tender_milestone",
            time="2024-02-28T09:00:00Z",
            tender_id="t-1",
            name="Clarification meeting",
            due="2024-03-08",
        ),
        "USD",
    )
    [merged] = to_records(older, "USD", {"t-1": after_first})
    assert "Clarification meeting" in [m.name for m in merged.milestones]
    assert merged.time == after_first.time == datetime(2024, 3, 1, 9, tzinfo=UTC)

    # An older event for the milestone changed later leaves it as it is.
    stale = parse_event(
        body(
            "tender_milestone",
            time="2024-02-28T09:00:00Z",
            tender_id="t-1",
            name="bid",
            due="2024-04-01",
        ),
        "USD",
    )
    [kept] = to_records(stale, "USD", {"t-1": merged})
    assert kept == merged
    assert [m.due for m in kept.milestones if m.name == "Bid"] == [
        datetime(2024, 3, 20, tzinfo=UTC)
    ]
