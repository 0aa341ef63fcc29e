"""Ingest, re-ingest, mining and retrieval on a slice of the real insurance calls."""

from pathlib import Path

import pytest

from tests.conftest import SLICE_PREFIXES, write_call_slice

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_slice_is_stored_indexed_and_mined(real_slice_service) -> None:
    status = real_slice_service.status()
    assert status["calls"] == len(SLICE_PREFIXES)
    assert status["chunks"] > 100  # one chunk per customer utterance
    assert status["turns"] > status["chunks"]
    bought = [c for c in real_slice_service.list_calls() if c.outcome == "buy"]
    assert [c.call_id[:28] for c in bought] == [SLICE_PREFIXES[0]]
    assert status["objections"].get("timing", 0) >= 2
    objection = real_slice_service.objections()[0]
    assert objection.reply_text and objection.customer_text


def test_reingesting_the_same_input_changes_nothing(real_slice_service, tmp_path: Path) -> None:
    before = real_slice_service.status()
    again = real_slice_service.ingest([write_call_slice(tmp_path / "same")])
    assert again.stored == [] and len(again.unchanged) == len(SLICE_PREFIXES)
    after = real_slice_service.status()
    assert (after["calls"], after["turns"], after["chunks"]) == (
        before["calls"],
        before["turns"],
        before["chunks"],
    )


def test_objection_in_new_words_retrieves_a_call_with_that_objection(real_slice_service) -> None:
    timing_calls = {o.call_id for o in real_slice_service.objections() if o.type == "timing"}
    hits = real_slice_service.search("please phone me again some other time", k=5)
    assert hits, "no hits"
    assert {h.call_id for h in hits} & timing_calls
    assert any("call" in h.text.lower() and "back" in h.text.lower() for h in hits)


def test_filters_restrict_hits(real_slice_service) -> None:
    hits = real_slice_service.search("what would my monthly payment be", k=5, outcome="buy")
    assert hits and {h.outcome for h in hits} == {"buy"}
    price_hits = real_slice_service.search("too expensive", k=5, objection="price")
    price_chunks = {
        (o.call_id, o.start) for o in real_slice_service.objections() if o.type == "price"
    }
    assert price_hits and all(h.call_id in {c for c, _ in price_chunks} for h in price_hits)


def test_one_bad_input_is_reported_and_the_rest_stored(real_slice_service, tmp_path: Path) -> None:
    good = tmp_path / "good-call.txt"
    good.write_text(
        "Rep: Hi, calling about your renewal.\nCustomer: We went with another vendor.\n",
        encoding="utf-8",
    )
    fake_audio = tmp_path / "notes.wav"
    fake_audio.write_text("this is text, not audio", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    before = real_slice_service.status()["calls"]

    report = real_slice_service.ingest([good, fake_audio, empty], outcome="lost")

    assert report.stored == ["good-call"]
    failed = dict(report.failed)
    assert "not a readable audio file" in failed[str(fake_audio)]
    assert "empty" in failed[str(empty)]
    assert real_slice_service.status()["calls"] == before + 1
    assert real_slice_service.transcript("good-call").outcome == "lost"


def test_reupload_without_metadata_keeps_it_and_an_override_updates_it(
    real_slice_service, tmp_path
):
    call = tmp_path / "renewal-42.txt"
    call.write_text(
        "Rep: Calling about the renewal.\nCustomer: It costs too much.\n", encoding="utf-8"
    )

    first = real_slice_service.ingest([call], outcome="won", account_id="acct-9")
    again = real_slice_service.ingest([call])
    stored = real_slice_service.transcript("renewal-42")

    assert first.stored == ["renewal-42"]
    assert again.stored == [] and again.unchanged == ["renewal-42"]
    assert (stored.outcome, stored.account_id) == ("won", "acct-9")

    corrected = real_slice_service.ingest([call], outcome="lost")
    stored = real_slice_service.transcript("renewal-42")
    assert corrected.stored == ["renewal-42"]
    assert (stored.outcome, stored.account_id) == ("lost", "acct-9")
