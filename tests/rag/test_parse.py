import json
from pathlib import Path

import pytest

from copilot.errors import InputError
from rag.parse import parse_csv_folder, parse_speaker_lines, parse_transcript_file, read_sidecar
from tests.conftest import INSURANCE_CALLS, SAMPLE, require_shared_data


def test_role_labels_in_english_and_chinese() -> None:
    turns = parse_speaker_lines(
        "销售：您好，我是张伟。\n客户：价格太贵了。\nRep: Understood.", "inline"
    )
    assert [t.speaker for t in turns] == ["rep", "customer", "rep"]
    assert turns[1].text == "价格太贵了。"
    assert turns[0].start == 0.0 and turns[1].start > turns[0].end


def test_two_named_speakers_map_by_order_and_three_are_refused() -> None:
    turns = parse_speaker_lines("Dana: Hi there.\nSam: Not interested.\nDana: Okay.", "named")
    assert [t.speaker for t in turns] == ["rep", "customer", "rep"]
    with pytest.raises(InputError, match="cannot tell rep from customer"):
        parse_speaker_lines("Dana: Hi.\nSam: Hello.\nLee: Hey.", "three")


def test_text_without_speaker_lines_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\nwithout speakers\n", encoding="utf-8")
    with pytest.raises(InputError, match="notes.txt has no 'Speaker: text' lines"):
        parse_transcript_file(path)


def test_json_schema_keeps_times_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "call_id": "acme-7",
                "outcome": "won",
                "account_id": "acme",
                "turns": [
                    {"speaker": "rep", "start": 0, "end": 2.5, "text": "Hello"},
                    {"speaker": "customer", "start": 2.5, "end": 4, "text": "Too pricey."},
                ],
            }
        ),
        encoding="utf-8",
    )
    call = parse_transcript_file(path)
    assert call.call_id == "acme-7"
    assert call.meta == {"outcome": "won", "account_id": "acme"}
    assert call.turns[1].start == 2.5 and call.turns[1].speaker == "customer"


def test_sample_transcript_parses() -> None:
    call = parse_transcript_file(SAMPLE / "call-text-01.txt")
    assert {t.speaker for t in call.turns} == {"rep", "customer"}


def test_sidecar_gives_metadata_never_turns() -> None:
    meta = read_sidecar(SAMPLE / "sample-call-01.flac")
    assert "turns" not in meta and "turns" not in meta.get("extra", {})
    assert meta["outcome"]


@pytest.mark.real_data
def test_real_insurance_export_gives_82_calls_with_outcomes() -> None:
    require_shared_data()
    calls = parse_csv_folder(INSURANCE_CALLS)
    assert len(calls) == 82
    bought = [c for c in calls if c.meta["outcome"] == "buy"]
    assert len(bought) == 1 and bought[0].call_id.startswith("2020-10-01-19-56-16_f05cf021")
    first = bought[0].turns[0]
    assert (
        first.speaker == "rep" and first.text == "This call may be recorded for quality assurance."
    )
    assert sum(len(c.turns) for c in calls) == 13194
    # Turn times fit inside the recorded duration even where the export's stamps do not.
    assert all(
        c.turns[-1].end <= c.meta["duration_s"] + 1 for c in calls if c.meta.get("duration_s")
    )
