import pytest

from copilot.objections import TYPES, ObjectionDetector, lexicon_types
from copilot.settings import ObjectionSettings


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
