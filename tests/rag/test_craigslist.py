"""CraigslistBargain folders as calls: the repo's sample and ../shared/data/negotiation/craigslist."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from copilot.errors import ConfigError, InputError
from copilot.objections import ObjectionDetector
from copilot.schemas import CallRecord
from copilot.settings import load_settings
from copilot.store import Store
from rag.craigslist import (
    BELOW_TARGET,
    NEAR_TARGET,
    NO_DEAL,
    deal_outcome,
    parse_craigslist_folder,
)
from rag.index import ChunkIndex
from rag.ingest import Ingestor, discover
from rag.mine import mine_calls
from rag.transcribe import WhisperTranscriber
from tests.conftest import SAMPLE, SHARED_DATA, require_shared_data
from tests.rag.test_ingest_jobs import RecordingIndex

CRAIGSLIST = SHARED_DATA / "negotiation" / "craigslist"
SAMPLE_CRAIGSLIST = SAMPLE / "craigslist"
FIRST = "craigslist-C_474a8391986841c9a0b91fdbbefda20f"  # the BMW wagon, first in the file


def _ingestor(tmp_path: Path, index) -> tuple[Ingestor, Store]:
    settings = load_settings(data_dir=tmp_path / "data")
    store = Store(settings.db_path)
    return Ingestor(settings, store, index, lambda: WhisperTranscriber(settings)), store


# --- the rule and the repo's sample ------------------------------------------------


def test_a_deal_at_the_configured_share_of_the_seller_target_is_near_target(
    tmp_path: Path,
) -> None:
    assert deal_outcome(True, 1800.0, 2000.0, 0.9) == NEAR_TARGET  # exactly at the threshold
    assert deal_outcome(True, 1799.0, 2000.0, 0.9) == BELOW_TARGET
    assert deal_outcome(True, 2100.0, 2000.0, 0.9) == NEAR_TARGET  # above the target
    assert deal_outcome(False, None, 2000.0, 0.9) == NO_DEAL
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.sources.craigslist.near_target_share == 0.9
    assert settings.outcomes.polarity(NEAR_TARGET) == 1
    assert settings.outcomes.polarity(BELOW_TARGET) == settings.outcomes.polarity(NO_DEAL) == -1


def test_the_threshold_is_checked_config(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  craigslist:\n    near_target_share: 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="sources.craigslist.near_target_share"):
        load_settings(config_file=config, data_dir=tmp_path / "data")


def test_sample_negotiations_become_calls_with_prices_and_moves() -> None:
    calls = {c.call_id: c for c in parse_craigslist_folder(SAMPLE_CRAIGSLIST, 0.9)}

    assert Counter(c.meta["outcome"] for c in calls.values()) == {
        NEAR_TARGET: 2,
        BELOW_TARGET: 1,
        NO_DEAL: 1,
    }
    bike = calls["craigslist-C_5a0e1c7d2b9f4e8a9c1d3f5e7a9b0c11"]
    assert (bike.turns[0].speaker, bike.turns[0].text) == (
        "customer",
        "Hi, is the Trek still for sale?",
    )
    assert [t.text for t in bike.turns[-3:]] == ["Deal, 280 it is.", "[OFFER] 280", "[ACCEPT]"]
    assert [t.speaker for t in bike.turns[-3:]] == ["rep", "rep", "customer"]
    extra = bike.meta["extra"]
    assert (extra["list_price"], extra["seller_target"], extra["buyer_target"]) == (300, 300, 210)
    assert (extra["final_price"], extra["target_share"], extra["category"]) == (280, 0.9333, "bike")
    assert extra["title"] == "Trek road bike, 56 cm, new tyres"
    assert bike.meta["date"] == "2024-03-11" and bike.turns[1].start == 10.2  # event seconds

    # The seller is agent 0 here: roles come from the scenario, not the agent number.
    sofa = calls["craigslist-C_6b1f2d8e3c0a4f9b8d2e4a6f8b0c1d22"]
    assert sofa.meta["outcome"] == BELOW_TARGET
    assert [t.speaker for t in sofa.turns[-2:]] == ["customer", "rep"]
    # The buyer's two messages in a row are one turn.
    assert sofa.turns[2].text == (
        "I saw a similar one cheaper at the furniture outlet. Can you do 350?"
    )
    phone = calls["craigslist-C_7c2a3e9f4d1b4a0c9e3f5b7a9c1d2e33"]
    assert "final_price" not in phone.meta["extra"] and phone.meta["extra"]["deal"] is False
    assert [t.text for t in phone.turns[-3:]] == ["[OFFER] 160", "[REJECT]", "[QUIT]"]
    ebike = calls["craigslist-C_8d3b4f0a5e2c4b1d0f4a6c8b0d2e3f44"]
    assert ebike.meta["outcome"] == NEAR_TARGET and ebike.meta["extra"]["target_share"] == 0.9
    assert ebike.turns[2].text == "两千有点贵，能不能便宜一点？一千五行吗？"


def test_moves_are_never_mined_as_objections(tmp_path: Path) -> None:
    """The detector reads [OFFER]-style tags as markers; the buyer's words still count."""
    settings = load_settings(data_dir=tmp_path / "data")
    calls = [
        CallRecord(c.call_id, c.turns, "sample", "transcript", "", outcome=c.meta["outcome"])
        for c in parse_craigslist_folder(SAMPLE_CRAIGSLIST, 0.9)
    ]
    found = mine_calls(calls, ObjectionDetector(settings.objections), settings.outcomes)
    texts = {o.customer_text for o in found}
    assert "I can't afford 240. Would you take 150?" in texts
    assert not [t for t in texts if t.startswith("[")]


def test_bad_json_names_the_file_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "craigslist"
    shutil.copytree(SAMPLE_CRAIGSLIST, folder)
    dialogues = folder / "dialogues.json"
    dialogues.write_text(dialogues.read_text(encoding="utf-8")[:-40], encoding="utf-8")

    ingestor, _ = _ingestor(tmp_path, RecordingIndex())
    report = ingestor.run([tmp_path])

    ((path, reason),) = report.failed
    assert path == str(folder)
    assert f"{dialogues} is not valid JSON" in reason and "restore the original file" in reason


def test_a_dialogue_without_its_fields_is_skipped_and_a_file_of_them_refused(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "craigslist"
    shutil.copytree(SAMPLE_CRAIGSLIST, folder)
    dialogues = json.loads((folder / "dialogues.json").read_text(encoding="utf-8"))
    del dialogues[0]["scenario"]["kbs"]
    (folder / "dialogues.json").write_text(json.dumps(dialogues), encoding="utf-8")

    assert len(parse_craigslist_folder(folder, 0.9)) == 3

    for dialogue in dialogues:
        dialogue.pop("outcome")
    (folder / "dialogues.json").write_text(json.dumps(dialogues), encoding="utf-8")
    with pytest.raises(InputError) as err:
        parse_craigslist_folder(folder, 0.9)
    assert str(folder / "dialogues.json") in str(err.value)
    assert "each needs 'uuid', 'scenario.kbs'" in str(err.value)


def test_the_folder_is_one_input(tmp_path: Path) -> None:
    folder = tmp_path / "craigslist"
    shutil.copytree(SAMPLE_CRAIGSLIST, folder)
    (folder / "SOURCE.txt").write_text("origin\n", encoding="utf-8")
    (folder / "notes.md").write_text("# notes\n", encoding="utf-8")

    assert list(discover([tmp_path])) == [folder]  # the schema file is no transcript


@pytest.mark.slow
def test_sample_folder_is_stored_and_indexed_with_its_prices(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    index = ChunkIndex(settings)
    ingestor, store = _ingestor(tmp_path, index)

    report = ingestor.run([SAMPLE_CRAIGSLIST])

    assert len(report.stored) == 4 and not report.failed
    call = store.get_call("craigslist-C_7c2a3e9f4d1b4a0c9e3f5b7a9c1d2e33")
    assert (call.outcome, call.source_kind) == (NO_DEAL, "transcript")
    assert call.extra["list_price"] == 240 and call.duration_s == call.turns[-1].end
    hits = index.vector_search("the price is more than I can pay", 4, {"x_category": "phone"})
    assert hits and {h.metadata["call_id"] for h in hits} == {call.call_id}
    assert hits[0].metadata["x_list_price"] == 240.0


# --- the real negotiations ---------------------------------------------------------


@pytest.fixture(scope="module")
def real_calls():
    require_shared_data()
    return parse_craigslist_folder(CRAIGSLIST, 0.9)


@pytest.mark.real_data
def test_real_folder_parses_into_451_calls_with_the_measured_outcomes(real_calls) -> None:
    assert len(real_calls) == 451
    assert Counter(c.meta["outcome"] for c in real_calls) == {
        BELOW_TARGET: 225,
        NO_DEAL: 115,
        NEAR_TARGET: 111,
    }
    first = real_calls[0]
    assert first.call_id == FIRST
    assert (first.turns[0].speaker, first.turns[0].text) == (
        "customer",
        "Hey there, nice wagon you have here",
    )
    assert first.turns[1].speaker == "rep" and first.turns[-2:][0].text == "[OFFER] 2900"
    extra = first.meta["extra"]
    assert (extra["list_price"], extra["seller_target"], extra["buyer_target"]) == (
        3500,
        3500,
        2450,
    )
    assert (extra["final_price"], extra["title"]) == (2900, "1999 BMW 528iT Dinan 5 series wagon")
    assert first.meta["outcome"] == BELOW_TARGET  # 2900 / 3500 = 0.83
    # 12 dialogues are moves only (an offer, then accept or reject): they keep those turns.
    assert sum(all(t.text.startswith("[") for t in c.turns) for c in real_calls) == 12


@pytest.mark.real_data
def test_real_final_prices_behind_the_threshold(real_calls) -> None:
    """The figures configs/default.yaml quotes for sources.craigslist.near_target_share."""
    extras = [c.meta["extra"] for c in real_calls]
    assert all(e["seller_target"] == e["list_price"] for e in extras)
    shares = np.array([e["target_share"] for e in extras if e["deal"]])
    assert len(shares) == 336
    assert np.percentile(shares, [25, 50, 75]).round(2).tolist() == [0.75, 0.85, 0.91]
    assert [(shares >= t).sum() for t in (0.8, 0.85, 0.9)] == [225, 169, 111]


@pytest.mark.real_data
def test_real_turn_times_are_seconds_in_order(real_calls) -> None:
    for call in real_calls:
        assert call.turns[0].start == 0.0
        assert all(t.start <= t.end for t in call.turns)
        assert all(a.end <= b.start for a, b in zip(call.turns, call.turns[1:], strict=False))
    longest = max(c.turns[-1].end for c in real_calls)
    assert 600 < longest < 3600  # the longest negotiation: about 22 minutes


@pytest.mark.real_data
def test_real_folder_twice_is_a_no_op(tmp_path: Path) -> None:
    """The whole folder through the real store; the index records its writes."""
    require_shared_data()
    index = RecordingIndex()
    ingestor, store = _ingestor(tmp_path, index)

    first = ingestor.run([CRAIGSLIST])
    second = ingestor.run([CRAIGSLIST])

    assert len(first.stored) == 451 and first.files_done == 1 and not first.failed
    assert second.stored == [] and len(second.unchanged) == 451 and second.files_unchanged == 1
    assert index.writes == 1
    call = store.get_call(FIRST)
    assert call.outcome == BELOW_TARGET and call.extra["final_price"] == 2900
    assert call.date == "2017-06-27" and call.rep_id is None


def test_call_ingest_passes_over_a_folder_of_account_data() -> None:
    # data/sample/accounts holds tenders.json and CRM CSVs: `copilot accounts import` reads them.
    found = list(discover([SAMPLE]))
    assert SAMPLE / "craigslist" in found and SAMPLE / "sample-call-01.flac" in found
    assert not [p for p in found if "accounts" in p.parts]
