"""Dataset building: positive-call filter, split by call, references, prompt masking."""

from __future__ import annotations

from dataclasses import replace

import pytest

from copilot.errors import StateError
from copilot.prompts import objection_messages
from copilot.settings import TrainingSettings
from training.dataset import (
    IGNORE_INDEX,
    build_examples,
    build_sft_data,
    collate,
    data_hash,
    outcome_counts,
    require_both_outcomes,
    split_calls,
)

RECIPE = TrainingSettings(eval_fraction=0.25, seed=13)


def test_only_positive_calls_become_examples(objections):
    train, evaluation, train_calls, eval_calls = build_examples(objections, RECIPE)

    used = {e.call_id for e in train + evaluation}
    assert used == {o.call_id for o in objections if o.polarity == 1}
    assert not used & {"lost-iris", "open-juno"}
    assert len(train) + len(evaluation) == 33
    assert set(train_calls) | set(eval_calls) == used


def test_split_is_by_call_seeded_and_recorded(objections):
    train, evaluation, train_calls, eval_calls = build_examples(objections, RECIPE)

    assert not set(train_calls) & set(eval_calls)
    assert {e.call_id for e in train} == set(train_calls)
    assert {e.call_id for e in evaluation} == set(eval_calls)
    assert len(eval_calls) == 2  # round(8 calls * 0.25)
    again = build_examples(objections, RECIPE)
    assert (again[2], again[3]) == (train_calls, eval_calls)
    other = build_examples(objections, RECIPE.model_copy(update={"seed": 14}))
    assert other[3] != eval_calls


def test_references_come_from_another_training_call_of_the_same_type(objections):
    train, evaluation, train_calls, _ = build_examples(objections, RECIPE)
    replies = {(o.call_id, o.type, o.reply_text) for o in objections if o.polarity == 1}

    with_refs = [e for e in train + evaluation if e.references]
    assert 0 < len(with_refs) < len(train) + len(evaluation)
    for example in with_refs:
        (reference,) = example.references
        sources = [(c, t) for c, t, r in replies if r == reference]
        assert len(sources) == 1
        call_id, kind = sources[0]
        assert kind == example.type
        assert call_id != example.call_id
        assert call_id in train_calls  # no held-out reply leaks into any prompt


def test_data_hash_is_stable_and_sensitive(objections):
    train, evaluation, _, _ = build_examples(objections, RECIPE)
    assert data_hash(train, evaluation) == data_hash(*build_examples(objections, RECIPE)[:2])
    assert data_hash(train[1:], evaluation) != data_hash(train, evaluation)
    assert len(data_hash(train, evaluation)) == 64


def test_empty_or_single_call_data_is_refused(objections):
    with pytest.raises(StateError, match="run `copilot objections` first"):
        build_examples([], RECIPE)
    with pytest.raises(StateError, match="outcomes.positive"):
        build_examples([o for o in objections if o.polarity != 1], RECIPE)
    one_call = [o for o in objections if o.call_id == "won-acme"]
    with pytest.raises(StateError, match="at least 2"):
        build_examples(one_call, RECIPE)


def test_split_calls_keeps_both_sides_non_empty():
    train, evaluation = split_calls(["a", "b"], 0.9, seed=1)
    assert len(train) == len(evaluation) == 1


def test_both_outcome_classes_are_required(objections):
    counts = require_both_outcomes(objections)
    assert (counts.positive, counts.negative, counts.neutral) == (33, 2, 1)
    assert (counts.positive_calls, counts.negative_calls) == (8, 1)

    won_only = [o for o in objections if o.polarity >= 0]
    with pytest.raises(StateError) as info:
        require_both_outcomes(won_only)
    assert str(info.value).startswith(
        "the objections come from one class only: 33 from 8 positive-outcome call(s), "
        "0 from 0 negative-outcome call(s) (1 with neither outcome)"
    )
    assert "Ingest lost (negative-outcome) calls" in str(info.value)
    with pytest.raises(StateError, match="Ingest won \\(positive-outcome\\) calls"):
        require_both_outcomes([o for o in objections if o.polarity == -1])
    with pytest.raises(StateError, match="empty"):
        require_both_outcomes([])
    # A pair without a reply is no training material and does not count.
    silent = [replace(o, reply_text=" ") for o in objections if o.polarity == -1]
    assert outcome_counts(silent).negative == 0


@pytest.mark.slow
def test_labels_mask_the_prompt_and_end_with_eos(objections, tokenizer):
    recipe = RECIPE.model_copy(update={"max_length": 256})
    data = build_sft_data(objections, recipe, tokenizer)
    assert len(data.train) + len(data.eval) == 33
    assert data.train_calls == build_examples(objections, recipe)[2]

    example, row = data.train_examples[0], data.train[0]
    prompt = tokenizer.apply_chat_template(
        objection_messages(example.objection, example.references),
        add_generation_prompt=True,
        tokenize=False,
    )
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert row["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    assert row["labels"][-1] == tokenizer.eos_token_id
    response = tokenizer.decode(row["input_ids"][n_prompt:], skip_special_tokens=True)
    assert response == example.reply

    batch = collate([data.train[0], data.train[1]], tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int(batch["attention_mask"].sum()) == data.train[0]["length"] + data.train[1]["length"]


@pytest.mark.slow
def test_truncation_keeps_max_length(objections, tokenizer):
    recipe = RECIPE.model_copy(update={"max_length": 80})
    data = build_sft_data(objections, recipe, tokenizer)
    assert max(list(data.train["length"]) + list(data.eval["length"])) <= 80
    assert data.truncated > 0
    assert all(n > 0 for n in data.train["response_tokens"])
