"""The objection detector: lexicon cues, the embedding classifier, and its precision and
recall on a labelled set built from the real calls and dialogues in ../shared/data."""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass

import pytest

from copilot.objections import TYPES, ObjectionDetector, lexicon_types
from copilot.settings import ObjectionSettings
from tests.conftest import REPO, SHARED_DATA, require_shared_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Honestly that's too expensive for us.", "price"),
        ("I need to talk to my wife first.", "authority"),
        ("Can you call me back next month?", "timing"),
        ("I’m not interested.", "need"),  # curly apostrophe, as speech-to-text writes it
        ("这个价格太高了，能不能便宜一点？", "price"),
        ("我们今年没有预算。", "budget"),
        ("这个我做不了主，要问一下老板。", "authority"),
    ],
)
def test_lexicon_finds_the_type_in_both_languages(text: str, expected: str) -> None:
    assert expected in lexicon_types(text)


def test_placeholder_tags_do_not_trigger_cues() -> None:
    assert lexicon_types("My number is [PHONE_NUMBER] and I drive a [ORGANIZATION].") == []


def test_cues_in_spaced_scripts_sit_on_word_boundaries() -> None:
    assert lexicon_types("Maybe later, I'm at work right now.") == ["timing"]
    assert lexicon_types("The translater said so.") == []  # "later" inside a word
    assert lexicon_types("Are you skeptical?") == ["trust_risk"]
    assert lexicon_types("I'm sceptically minded.") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我现在没时间，改天再说吧。", "timing"),  # no spaces: cues match inside the sentence
        ("最近手头紧，资金紧张。", "budget"),
        ("我们已经在用别家的系统了。", "competitor"),
        ("你们靠谱吗？数据安全怎么保证？", "trust_risk"),
        ("能不能按月付？", "contract_terms"),
    ],
)
def test_chinese_cues_need_no_word_boundaries(text: str, expected: str) -> None:
    assert lexicon_types(text) == [expected]


def test_scores_count_a_wrong_type_against_both_precision_and_recall() -> None:
    gold = ["price", "price", "need", "none", "none"]
    predicted = ["price", "budget", "none", "need", "none"]
    scores = score(gold, predicted)
    assert scores.per_type["price"] == (1.0, 0.5, 2)
    assert scores.per_type["need"] == (0.0, 0.0, 1)
    assert scores.micro_precision == 1 / 3 and scores.micro_recall == 1 / 3
    assert scores.detect_precision == 2 / 3 and scores.detect_recall == 2 / 3


@pytest.mark.real_data
def test_labelled_set_resolves_every_reference_and_splits_by_call() -> None:
    turns = load_labelled_set()
    assert len(turns) == 684 and all(t.text.strip() for t in turns)
    assert {t.label for t in turns} <= {*TYPES, "none"}
    held_out = {t.group for t in turns if is_held_out(t.group)}
    tuning = {t.group for t in turns if not is_held_out(t.group)}
    assert held_out and tuning and not held_out & tuning


@pytest.fixture(scope="module")
def detector() -> ObjectionDetector:
    from copilot.settings import load_settings
    from rag.embed import SentenceEmbedder

    embedder = SentenceEmbedder(load_settings(data_dir="/tmp/copilot-test-unused"))
    return ObjectionDetector(ObjectionSettings(), embed=embedder.encode)


@pytest.mark.slow
def test_embedding_classifier_catches_paraphrases_without_cues(detector: ObjectionDetector) -> None:
    texts = [
        "That costs more than what I pay right now.",  # price, no lexicon cue
        "I'm covered already by a different insurer and I like them.",  # competitor
        "Yes, my date of birth is the fifth of May.",  # no objection
    ]
    assert all(not lexicon_types(t) for t in texts[:2])
    first, second, neutral = detector.detect(texts)
    assert first is not None and first.type == "price" and first.method == "embedding"
    assert second is not None and second.type == "competitor"
    assert neutral is None
    assert {d.type for d in (first, second)} <= set(TYPES)


# ---------------------------------------------------------------------------
# The labelled set: ids and labels live in data/labels/objections/, the text is
# read from ../shared/data at test time (the real text never enters the repo).

LABELS = REPO / "data" / "labels" / "objections"
HELD_OUT_PERCENT = 40  # share of calls / dialogues kept out of tuning


@dataclass(frozen=True)
class LabelledTurn:
    source: str  # "insurance", "persuasion" or "b2b"
    group: str  # the call or dialogue: splits never cut one in two
    text: str
    label: str  # a TYPES entry or "none"


def is_held_out(group: str) -> bool:
    """A stable split by call: the same call is always on the same side."""
    return int(hashlib.sha1(group.encode("utf-8")).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def _rows(name: str) -> list[dict[str, str]]:
    with (LABELS / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _insurance() -> list[LabelledTurn]:
    by_call: dict[str, list[dict[str, str]]] = {}
    with (SHARED_DATA / "calls" / "insurance-sales" / "messages.csv").open(
        newline="", encoding="utf-8"
    ) as f:
        for row in csv.DictReader(f):
            by_call.setdefault(row["conversation_id"], []).append(row)
    out = []
    for row in _rows("insurance-sales.csv"):
        message = by_call[row["conversation_id"]][int(row["message_index"])]
        assert message["author"] == "Customer", row  # the labels are customer turns only
        out.append(
            LabelledTurn("insurance", row["conversation_id"], message["message"], row["label"])
        )
    return out


def _persuasion() -> list[LabelledTurn]:
    with (SHARED_DATA / "dialogues" / "persuasion" / "300_dialog.csv").open(
        newline="", encoding="utf-8"
    ) as f:
        by_row = {row[""]: row for row in csv.DictReader(f)}
    out = []
    for row in _rows("persuasion.csv"):
        sentence = by_row[row["row"]]
        assert sentence["B2"] == row["dialogue_id"] and sentence["B4"] == "1", row
        out.append(LabelledTurn("persuasion", row["dialogue_id"], sentence["Unit"], row["label"]))
    return out


_B2B_TURN = re.compile(r"^\*\*([^*:]+):\*\*\s*(.+)$")
_B2B_HEADER = {"Call ID", "Date", "Duration", "Participants", "Outcome", "Call Notes"}


def _b2b() -> list[LabelledTurn]:
    out = []
    for row in _rows("b2b-scripted.csv"):
        text = (SHARED_DATA / "calls" / "b2b-scripted" / row["file"]).read_text(encoding="utf-8")
        turns = [
            m.group(2)
            for line in text.splitlines()
            if (m := _B2B_TURN.match(line)) and m.group(1) not in _B2B_HEADER
        ]
        out.append(LabelledTurn("b2b", row["file"], turns[int(row["turn_index"])], row["label"]))
    return out


def load_labelled_set() -> list[LabelledTurn]:
    """Every labelled customer turn, with its text resolved from ../shared/data."""
    require_shared_data()
    return _insurance() + _persuasion() + _b2b()


@dataclass(frozen=True)
class Scores:
    per_type: dict[str, tuple[float, float, int]]  # type -> (precision, recall, gold count)
    micro_precision: float
    micro_recall: float
    macro_precision: float
    macro_recall: float
    detect_precision: float  # objection versus none, type ignored
    detect_recall: float


def score(gold: list[str], predicted: list[str]) -> Scores:
    """Per-type and pooled precision and recall; "none" is the negative class."""

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    per_type = {}
    for t in TYPES:
        tp = sum(g == p == t for g, p in zip(gold, predicted, strict=True))
        per_type[t] = (ratio(tp, predicted.count(t)), ratio(tp, gold.count(t)), gold.count(t))
    tp = sum(g == p != "none" for g, p in zip(gold, predicted, strict=True))
    n_pred = sum(p != "none" for p in predicted)
    n_gold = sum(g != "none" for g in gold)
    hit = sum(g != "none" and p != "none" for g, p in zip(gold, predicted, strict=True))
    present = [t for t in TYPES if per_type[t][2]]
    return Scores(
        per_type=per_type,
        micro_precision=ratio(tp, n_pred),
        micro_recall=ratio(tp, n_gold),
        macro_precision=sum(per_type[t][0] for t in present) / len(present),
        macro_recall=sum(per_type[t][1] for t in present) / len(present),
        detect_precision=ratio(hit, n_pred),
        detect_recall=ratio(hit, n_gold),
    )


def predict(detector: ObjectionDetector, turns: list[LabelledTurn]) -> list[str]:
    return [d.type if d else "none" for d in detector.detect([t.text for t in turns])]


# Measured on the held-out split (tests/bench/bench_objections.py, 324 turns, 75 of them
# objections): micro precision 0.67 and recall 0.44 (the detector before this set
# existed: 0.39 and 0.09). The bounds sit about two standard errors below the
# measurement (binomial, n = 49 predictions and 75 objections), so noise from a
# harmless change passes and a return to keyword-only recall fails.
HELD_OUT_MIN_PRECISION = 0.55
HELD_OUT_MIN_RECALL = 0.33


@pytest.mark.slow
@pytest.mark.real_data
def test_detector_precision_and_recall_on_the_held_out_split(detector: ObjectionDetector) -> None:
    held_out = [t for t in load_labelled_set() if is_held_out(t.group)]
    scores = score([t.label for t in held_out], predict(detector, held_out))
    assert scores.micro_precision >= HELD_OUT_MIN_PRECISION, scores
    assert scores.micro_recall >= HELD_OUT_MIN_RECALL, scores
