"""The dataset preview: counts, yields and splits of both methods, examples, and blockers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from copilot.errors import StateError
from tests.conftest import require_shared_data
from training.dataset import build_examples
from training.preference import pair_objections
from training.preview import preview_dataset, require_trainable

from .conftest import PAIRS, with_lost_calls


def test_counts_on_the_fixture_pairs(objections, settings):
    preview = preview_dataset(objections, settings)

    assert (preview.objections, preview.calls, preview.method) == (36, 10, "sft")
    assert preview.by_type["price"] == {"positive": 7, "negative": 1, "unknown": 0}
    assert preview.by_type["timing"] == {"positive": 5, "negative": 1, "unknown": 0}
    assert preview.by_type["need"] == {"positive": 4, "negative": 0, "unknown": 1}
    assert {k: sum(v.values()) for k, v in preview.by_type.items()} == dict(
        Counter(kind for _, _, kind, _, _ in PAIRS)
    )
    assert preview.by_outcome == {"lost": 2, "open": 1, "won": 33}
    assert preview.calls_by_outcome == {"lost": 1, "open": 1, "won": 8}
    assert preview.short_replies == 1  # "Okay, bye."

    # SFT: what build_examples makes of the same data under the same config
    train, evaluation, train_calls, eval_calls = build_examples(objections, settings.training)
    assert (preview.sft.train, preview.sft.eval) == (len(train), len(evaluation))
    assert (
        (preview.sft.train_calls, preview.sft.eval_calls)
        == (6, 2)
        == (
            len(train_calls),
            len(eval_calls),
        )
    )
    assert preview.sft_examples == 33 and preview.sft.problems == []
    assert preview.problems == []  # the configured method (sft) can train

    # DPO: one lost call with a usable reply cannot be held out
    assert preview.preference_pairs == 0
    (problem,) = preview.dpo.problems
    assert "8 positive- and 1 negative-outcome call(s)" in problem
    assert "ingest more lost calls" in problem


def test_examples_are_short_and_from_their_own_side(objections, settings):
    preview = preview_dataset(objections, settings)
    polarity = {o.call_id: o.polarity for o in objections}

    assert len(preview.examples["positive"]) == 3
    assert [e.type for e in preview.examples["positive"]] == ["authority", "competitor", "contract"]
    assert all(polarity[e.call_id] == 1 for e in preview.examples["positive"])
    ((negative),) = preview.examples["negative"]
    assert (negative.call_id, negative.reply) == (
        "lost-iris",
        "Well, that's our price, take it or leave it.",
    )
    replies = [e.reply for e in preview.examples["positive"]]
    assert max(len(r) for r in replies) == 120 and replies[0].endswith("…")


def test_to_dict_is_one_json_document_with_the_problems(objections, settings):
    document = json.loads(json.dumps(preview_dataset(objections, settings).to_dict()))
    assert document["sft"]["total"] == 33
    assert document["dpo"]["total"] == 0 and len(document["dpo"]["problems"]) == 1
    assert document["problems"] == []
    assert document["examples"]["negative"][0]["outcome"] == "lost"


def test_preference_counts_match_the_pairs(settings):
    mixed = with_lost_calls()
    preview = preview_dataset(mixed, settings)
    pairs = pair_objections(mixed, settings.training)

    assert (preview.dpo.train, preview.dpo.eval) == (len(pairs.train), len(pairs.eval)) == (24, 9)
    assert (preview.dpo.train_calls, preview.dpo.eval_calls) == (9, 3)
    assert preview.by_type["contract"] == {"positive": 4, "negative": 2, "unknown": 0}
    require_trainable(preview, "sft")
    require_trainable(preview, "dpo")


def test_one_class_and_empty_data_are_refused(objections, settings):
    won_only = preview_dataset([o for o in objections if o.polarity == 1], settings)
    with pytest.raises(StateError, match="33 from 8 positive-outcome call"):
        require_trainable(won_only, "sft")  # the SFT trainer's one-class refusal
    with pytest.raises(StateError, match="33 have a usable reply from a positive call and 0"):
        require_trainable(won_only, "dpo")
    assert won_only.sft_examples == 33  # counted anyway, for the manager to see

    lost_only = preview_dataset([o for o in objections if o.polarity == -1], settings)
    with pytest.raises(StateError, match="no objection/reply pairs from positive-outcome calls"):
        require_trainable(lost_only, "sft")
    assert lost_only.by_outcome == {"lost": 2}

    empty = preview_dataset([], settings)
    assert (empty.objections, empty.by_type, empty.examples) == (
        0,
        {},
        {"positive": [], "negative": []},
    )
    for method in ("sft", "dpo"):
        with pytest.raises(StateError, match="on 0 objections from 0 calls"):
            require_trainable(empty, method)
    assert empty.problems == [empty.sft.problems[0]] and "empty" in empty.problems[0]


def test_too_few_calls_to_hold_one_out(objections, settings):
    two_calls = [o for o in objections if o.call_id in ("won-acme", "lost-iris")]
    preview = preview_dataset(two_calls, settings)
    assert preview.sft.problems == [
        "objection/reply pairs come from 1 positive-outcome call(s); training needs at least 2 "
        "so one can be held out for evaluation: ingest more won calls and run `copilot objections`"
    ]
    assert "1 positive- and 1 negative-outcome call(s)" in preview.dpo.problems[0]
    assert preview.sft.total == 0


@pytest.mark.real_data
@pytest.mark.slow
def test_preview_of_the_real_insurance_calls(real_slice_service):
    require_shared_data()
    service = real_slice_service
    objections = service.objections()
    preview = preview_dataset(objections, service.settings)

    outcomes = {c.call_id: c.outcome for c in service.store.list_calls()}
    assert preview.objections == len(objections) > 0
    assert sum(preview.by_outcome.values()) == preview.objections
    assert preview.calls_by_outcome == dict(
        sorted(Counter(outcomes[c] for c in {o.call_id for o in objections}).items())
    )
    polarity = service.settings.outcomes.polarity
    positive = sum(v["positive"] for v in preview.by_type.values())
    assert positive == sum(1 for o in objections if polarity(outcomes[o.call_id]) == 1)
    # The slice holds won and lost calls: SFT can train, and its counts are build_examples'.
    assert preview.sft.problems == []
    train, evaluation, train_calls, eval_calls = build_examples(
        objections, service.settings.training
    )
    assert (preview.sft.train, preview.sft.eval) == (len(train), len(evaluation))
    assert (preview.sft.train_calls, preview.sft.eval_calls) == (len(train_calls), len(eval_calls))
    # DPO: the pairs pair_objections makes, or the reason it gives (on this slice the
    # held-out calls share no objection type between won and lost replies).
    try:
        pairs = pair_objections(objections, service.settings.training)
    except StateError as exc:
        assert preview.dpo.problems == [str(exc)] and preview.preference_pairs == 0
    else:
        assert (preview.dpo.train, preview.dpo.eval) == (len(pairs.train), len(pairs.eval))
    assert all(len(e.reply) <= 120 for side in preview.examples.values() for e in side)
