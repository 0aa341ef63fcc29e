"""Persuasion for Good folders as calls: the repo's sample and ../shared/data/dialogues/persuasion."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from copilot.errors import InputError
from copilot.objections import ObjectionDetector
from copilot.schemas import CallRecord
from copilot.settings import load_settings
from copilot.store import Store
from rag.index import ChunkIndex
from rag.ingest import Ingestor, discover, input_hash
from rag.mine import mine_calls
from rag.persuasion import parse_persuasion_folder
from rag.transcribe import WhisperTranscriber
from tests.conftest import SAMPLE, SHARED_DATA, require_shared_data
from tests.rag.test_ingest_jobs import RecordingIndex

PERSUASION = SHARED_DATA / "dialogues" / "persuasion"
SAMPLE_PERSUASION = SAMPLE / "persuasion"
FIRST_DIALOGUE = "20180904-045349_715_live"  # the first dialogue of full_dialog.csv
DONOR_DIALOGUE = "20180904-154250_98_live"  # its persuadee gave $2 (full_info.csv, B6)

# Persuadee reactions of the 300_* annotations (ee_label_1/2) that refuse or resist the ask,
# and the ones that plainly go along with it.
RESISTING = {"disagree-donation", "disagree-donation-more", "negative-reaction-to-donation"}
AGREEING = {
    "agree-donation",
    "positive-reaction-to-donation",
    "provide-donation-amount",
    "confirm-donation",
    "greeting",
    "thank",
    "acknowledgement",
}


def _ingestor(tmp_path: Path, index) -> tuple[Ingestor, Store]:
    settings = load_settings(data_dir=tmp_path / "data")
    store = Store(settings.db_path)
    return Ingestor(settings, store, index, lambda: WhisperTranscriber(settings)), store


def _write_slice(folder: Path, dialogue_ids: set[str]) -> Path:
    """A persuasion folder holding only ``dialogue_ids`` (rows read from the real files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("full_dialog.csv", "full_info.csv"):
        with (PERSUASION / name).open(newline="", encoding="utf-8") as src:
            reader = csv.reader(src)
            header = next(reader)
            at = header.index("B2")
            with (folder / name).open("w", newline="", encoding="utf-8") as dst:
                writer = csv.writer(dst)
                writer.writerow(header)
                writer.writerows(row for row in reader if row[at] in dialogue_ids)
    return folder


# --- the repo's sample -------------------------------------------------------------


def test_sample_dialogues_become_calls_with_outcome_and_donation() -> None:
    calls = {c.call_id: c for c in parse_persuasion_folder(SAMPLE_PERSUASION)}

    assert sorted(calls) == [
        "persuasion-20240311-091502_901_live",
        "persuasion-20240311-102233_902_live",
        "persuasion-20240312-140815_903_live",
        "persuasion-20240313-201140_904_live",
    ]
    first = calls["persuasion-20240311-091502_901_live"]
    assert first.meta["outcome"] == "donated" and first.meta["date"] == "2024-03-11"
    assert first.meta["extra"]["donation"] == 1.0 and first.meta["rep_id"] == "user_9001"
    # The persuader's two sentences of round 1 are one turn.
    assert first.turns[2].speaker == "rep"
    assert first.turns[2].text == (
        "Nice. Have you heard of Little Steps Children's Fund? "
        "They pay for school meals for kids in rural areas."
    )
    assert [t.speaker for t in first.turns[:4]] == ["rep", "customer", "rep", "customer"]
    assert all(a.end <= b.start for a, b in zip(first.turns, first.turns[1:], strict=False))
    chinese = calls["persuasion-20240313-201140_904_live"]
    assert chinese.meta["outcome"] == "not donated"
    assert chinese.turns[5].text == "我最近手头紧，而且我已经在给别的慈善机构捐款了。"
    assert Counter(c.meta["outcome"] for c in calls.values()) == {"donated": 2, "not donated": 2}


def test_the_folder_is_one_input_and_its_other_files_are_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "persuasion"
    shutil.copytree(SAMPLE_PERSUASION, folder)
    (folder / "FullData_readme.md").write_text("### Description of CSV fields\n", encoding="utf-8")
    before = input_hash(folder)

    (folder / "300_dialog.csv").write_text(",B2,B4,Turn,Unit\n", encoding="utf-8")

    assert list(discover([tmp_path])) == [folder]  # the readme is no transcript
    assert input_hash(folder) == before  # the annotated subset does not make a new input


def test_missing_column_names_the_file_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "persuasion"
    shutil.copytree(SAMPLE_PERSUASION, folder)
    info = folder / "full_info.csv"
    rows = list(csv.reader(info.open(encoding="utf-8")))
    drop = rows[0].index("B6")
    with info.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([v for i, v in enumerate(row) if i != drop] for row in rows)

    with pytest.raises(InputError) as err:
        parse_persuasion_folder(folder)

    message = str(err.value)
    assert str(info) in message and "lacks the column(s) ['B6']" in message
    assert "restore the original file or add the columns" in message


def test_missing_info_file_names_the_file_it_needs(tmp_path: Path) -> None:
    folder = tmp_path / "persuasion"
    shutil.copytree(SAMPLE_PERSUASION, folder)
    (folder / "full_info.csv").unlink()

    ingestor, _ = _ingestor(tmp_path, RecordingIndex())
    report = ingestor.run([folder])

    ((path, reason),) = report.failed
    assert path == str(folder) and f"{folder / 'full_info.csv'} is missing" in reason


@pytest.mark.slow
def test_sample_folder_is_stored_indexed_and_a_rerun_is_a_no_op(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    index = ChunkIndex(settings)
    ingestor, store = _ingestor(tmp_path, index)

    first = ingestor.run([SAMPLE_PERSUASION])
    second = ingestor.run([SAMPLE_PERSUASION])

    assert len(first.stored) == 4 and not first.failed
    assert second.stored == [] and sorted(second.unchanged) == sorted(first.stored)
    call = store.get_call("persuasion-20240311-102233_902_live")
    assert (call.outcome, call.source_kind, call.extra["donation"]) == ("not donated", "csv", 0.0)
    hits = index.vector_search("how do I know the money reaches the children", k=1)
    assert hits[0].metadata["call_id"] == "persuasion-20240311-102233_902_live"
    assert hits[0].metadata["polarity"] == -1


# --- the real dialogues ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_calls():
    require_shared_data()
    return parse_persuasion_folder(PERSUASION)


@pytest.mark.real_data
def test_real_folder_parses_into_817_calls_with_the_measured_outcomes(real_calls) -> None:
    assert len(real_calls) == 817
    assert Counter(c.meta["outcome"] for c in real_calls) == {"donated": 436, "not donated": 381}
    assert sum(len(c.turns) for c in real_calls) == 16838  # one row of full_dialog.csv each

    first = real_calls[0]
    assert first.call_id == f"persuasion-{FIRST_DIALOGUE}"
    assert (first.turns[0].speaker, first.turns[0].text) == (
        "rep",
        "Good morning. How are you doing today?",
    )
    assert first.turns[1].text == "Hi. I am doing good. How about you?"
    assert first.meta["outcome"] == "not donated" and first.meta["date"] == "2018-09-04"
    donor = next(c for c in real_calls if c.call_id == f"persuasion-{DONOR_DIALOGUE}")
    assert donor.meta["outcome"] == "donated" and donor.meta["extra"]["donation"] == 2.0


@pytest.mark.real_data
def test_real_folder_twice_is_a_no_op(tmp_path: Path) -> None:
    """The whole folder through the real store; the index records its writes instead of
    embedding 8,308 chunks (`copilot ingest` of this folder took 18 min of wall time, 5.5
    min of CPU, on the shared 2-core machine)."""
    require_shared_data()
    index = RecordingIndex()
    ingestor, store = _ingestor(tmp_path, index)

    first = ingestor.run([PERSUASION])
    second = ingestor.run([PERSUASION])

    assert len(first.stored) == 817 and first.files_done == 1 and not first.failed
    assert sum(len(chunks) for chunks in index.chunks.values()) == 8308  # one per persuadee turn
    assert second.stored == [] and len(second.unchanged) == 817 and second.files_unchanged == 1
    assert index.writes == 1
    assert store.counts()["calls"] == 817


@pytest.mark.real_data
def test_a_slice_of_the_real_folder_ingests_like_the_whole(tmp_path: Path) -> None:
    require_shared_data()
    folder = _write_slice(tmp_path / "slice", {FIRST_DIALOGUE, DONOR_DIALOGUE})
    ingestor, store = _ingestor(tmp_path, RecordingIndex())

    report = ingestor.run([folder])

    assert sorted(report.stored) == [
        f"persuasion-{FIRST_DIALOGUE}",
        f"persuasion-{DONOR_DIALOGUE}",
    ]
    donor = store.get_call(f"persuasion-{DONOR_DIALOGUE}")
    assert donor.outcome == "donated" and donor.extra["persuader_donation"] == 0.0


def _annotated_reactions() -> dict[tuple[str, str], set[str]]:
    """Persuadee labels (ee_label_1/2) of 300_dialog.csv by (dialogue id, round)."""
    reactions: dict[tuple[str, str], set[str]] = {}
    with (PERSUASION / "300_dialog.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["B4"] == "1":
                labels = {row["ee_label_1"], row["ee_label_2"]} - {""}
                reactions.setdefault((row["B2"], row["Turn"]), set()).update(labels)
    return reactions


def _persuadee_rounds() -> dict[str, list[str]]:
    """The round (Turn) of each persuadee row of full_dialog.csv, in file order: one row is
    one customer turn of the parsed call."""
    rounds: dict[str, list[str]] = {}
    with (PERSUASION / "full_dialog.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["B4"] == "1":
                rounds.setdefault(row["B2"], []).append(row["Turn"])
    return rounds


@pytest.mark.real_data
def test_mined_objections_follow_the_annotated_persuadee_reactions(
    real_calls, tmp_path: Path
) -> None:
    """A labelled check of the miner (its lexicon side; tests/bench measures the embedding
    side): persuadee turns the annotators marked as resisting the donation are flagged far
    more often than turns that go along with it."""
    reactions, rounds = _annotated_reactions(), _persuadee_rounds()
    annotated = {dialogue for dialogue, _ in reactions}
    calls = [
        CallRecord(c.call_id, c.turns, str(PERSUASION), "csv", "", outcome=c.meta["outcome"])
        for c in real_calls
        if c.call_id.removeprefix("persuasion-") in annotated
    ]
    settings = load_settings(data_dir=tmp_path / "data")
    found = mine_calls(calls, ObjectionDetector(settings.objections), settings.outcomes)
    flagged = {(o.call_id, o.turn_index) for o in found}

    resisting, agreeing = [], []
    for call in calls:
        dialogue = call.call_id.removeprefix("persuasion-")
        persuadee_turns = [i for i, t in enumerate(call.turns) if t.speaker == "customer"]
        assert len(persuadee_turns) == len(rounds[dialogue])
        for i, round_ in zip(persuadee_turns, rounds[dialogue], strict=True):
            labels = reactions.get((dialogue, round_), set())
            if labels & RESISTING:
                resisting.append((call.call_id, i) in flagged)
            elif labels and labels <= AGREEING:
                agreeing.append((call.call_id, i) in flagged)

    recall, false_alarms = sum(resisting) / len(resisting), sum(agreeing) / len(agreeing)
    assert len(calls) == 234  # of the 300 annotated dialogues, the ones in this folder
    assert (len(resisting), len(agreeing)) == (168, 847)
    # Measured: 71 of 168 resisting turns flagged (0.42), 15 of 847 agreeing ones (0.018).
    assert recall >= 0.35 and false_alarms <= 0.05, (recall, false_alarms)
