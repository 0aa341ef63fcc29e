"""SFT examples from mined objections: won-call objection -> the rep's reply.

Only objections from positive-outcome calls (``polarity == +1``) become examples.
The split is by call, seeded and recorded, so no call is evaluated on its own
turns. Each example carries 0 or 1 reference reply taken from another training
call's objection of the same type, quoted exactly as serving quotes retrieved
replies (``copilot.prompts.objection_messages``), so the model learns to use them.

The training target is the reply followed by the tokenizer's eos token (for
SmolLM2's chat template ``<|im_end|>``, the token generation stops on), so a
trained adapter learns to end its turn instead of writing the customer's next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from copilot.errors import StateError
from copilot.prompts import objection_messages
from copilot.schemas import Objection
from copilot.settings import TrainingSettings

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips
REFERENCE_RATE = 0.5  # share of examples that get one reference reply


@dataclass(frozen=True)
class SftExample:
    """One objection -> reply pair before tokenisation."""

    call_id: str
    type: str
    objection: str
    reply: str
    references: tuple[str, ...] = ()


@dataclass
class SftData:
    """Tokenised train/eval datasets (``datasets.Dataset``) and how they were split."""

    train: Any
    eval: Any
    train_calls: list[str]
    eval_calls: list[str]
    data_hash: str
    train_examples: list[SftExample] = field(repr=False, default_factory=list)
    eval_examples: list[SftExample] = field(repr=False, default_factory=list)
    truncated: int = 0


@dataclass(frozen=True)
class OutcomeCounts:
    """Objections with a reply, by the polarity of their call's outcome."""

    positive: int
    negative: int
    neutral: int
    positive_calls: int
    negative_calls: int


def outcome_counts(objections: Sequence[Objection]) -> OutcomeCounts:
    answered = [o for o in objections if o.customer_text.strip() and o.reply_text.strip()]
    by = {p: [o for o in answered if o.polarity == p] for p in (1, -1, 0)}
    return OutcomeCounts(
        positive=len(by[1]),
        negative=len(by[-1]),
        neutral=len(by[0]),
        positive_calls=len({o.call_id for o in by[1]}),
        negative_calls=len({o.call_id for o in by[-1]}),
    )


def require_both_outcomes(objections: Sequence[Objection]) -> OutcomeCounts:
    """Refuse a dataset that is empty or holds only won or only lost calls.

    Called before any model loads. SFT learns from positive-outcome replies only,
    but judging an adapter and building preference pairs compare won with lost
    replies, so a run on one class could not be judged and a DPO run could not start.
    """
    counts = outcome_counts(objections)
    if not objections:
        raise StateError(
            "the training set is empty: no objections are stored; ingest won and lost calls "
            "(`copilot ingest PATH`), then run `copilot objections`"
        )
    if counts.positive == 0 or counts.negative == 0:
        missing = "lost (negative-outcome)" if counts.negative == 0 else "won (positive-outcome)"
        raise StateError(
            f"the objections come from one class only: {counts.positive} from "
            f"{counts.positive_calls} positive-outcome call(s), {counts.negative} from "
            f"{counts.negative_calls} negative-outcome call(s) ({counts.neutral} with neither "
            f"outcome); judging an adapter and preference pairs need both won and lost calls. "
            f"Ingest {missing} calls and run `copilot objections` again, or check that "
            "`outcomes:` (positive / negative labels) in the config names your outcome labels"
        )
    return counts


def split_calls(call_ids: Sequence[str], eval_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded split of distinct call ids into (train, eval); both sides are non-empty."""
    calls = sorted(set(call_ids))
    if len(calls) < 2:
        raise StateError(
            f"objection/reply pairs come from {len(calls)} positive-outcome call(s); training "
            "needs at least 2 so one can be held out for evaluation: ingest more won calls "
            "and run `copilot objections`"
        )
    shuffled = list(calls)
    random.Random(seed).shuffle(shuffled)
    n_eval = min(max(1, round(len(calls) * eval_fraction)), len(calls) - 1)
    return sorted(shuffled[n_eval:]), sorted(shuffled[:n_eval])


def build_examples(
    objections: Sequence[Objection], training: TrainingSettings
) -> tuple[list[SftExample], list[SftExample], list[str], list[str]]:
    """(train examples, eval examples, train call ids, eval call ids), untokenised."""
    answered = [
        o
        for o in objections
        if o.polarity == 1 and o.customer_text.strip() and o.reply_text.strip()
    ]
    # "Okay." after an objection is a back-channel, not a way of handling it: too
    # short a reply teaches the model to brush objections off. Characters, not
    # words, so the rule holds for Chinese too.
    positives = [o for o in answered if len(o.reply_text.strip()) >= training.min_reply_chars]
    if len(positives) < len(answered):
        logger.info(
            "left out %d replies shorter than %d characters (training.min_reply_chars)",
            len(answered) - len(positives),
            training.min_reply_chars,
        )
    if not positives:
        raise StateError(
            f"no objection/reply pairs from positive-outcome calls among {len(objections)} "
            "objections: run `copilot objections` first, or check outcomes.positive in the config"
        )
    train_calls, eval_calls = split_calls(
        [o.call_id for o in positives], training.eval_fraction, training.seed
    )
    held_out = set(eval_calls)

    # References come from training calls only, so no eval reply leaks into a prompt.
    pool: dict[str, list[Objection]] = defaultdict(list)
    for o in positives:
        if o.call_id not in held_out:
            pool[o.type].append(o)

    rng = random.Random(training.seed)
    train, evaluation = [], []
    for o in sorted(positives, key=lambda o: (o.call_id, o.turn_index)):
        references: tuple[str, ...] = ()
        others = [p for p in pool[o.type] if p.call_id != o.call_id]
        if others and rng.random() < REFERENCE_RATE:
            references = (rng.choice(others).reply_text.strip(),)
        example = SftExample(
            o.call_id, o.type, o.customer_text.strip(), o.reply_text.strip(), references
        )
        (evaluation if o.call_id in held_out else train).append(example)

    if len(evaluation) > training.max_eval_examples:
        evaluation = sorted(
            rng.sample(evaluation, training.max_eval_examples),
            key=lambda e: (e.call_id, e.objection),
        )
    return train, evaluation, train_calls, eval_calls


def data_hash(train: Sequence[SftExample], evaluation: Sequence[SftExample]) -> str:
    """sha256 of the examples and their split: equal data and split give an equal hash."""
    payload = {
        side: [[e.call_id, e.type, e.objection, e.reply, list(e.references)] for e in examples]
        for side, examples in (("train", train), ("eval", evaluation))
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def tokenize_example(example: SftExample, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """input_ids and labels (``IGNORE_INDEX`` on the prompt) for one example.

    The prompt is the chat template with the generation prompt, exactly what
    serving feeds the model; the target is the reply and the eos token.
    """
    prompt = tokenizer.apply_chat_template(
        objection_messages(example.objection, example.references),
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(example.reply + tokenizer.eos_token, add_special_tokens=False)[
        "input_ids"
    ]
    input_ids = (prompt_ids + target_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + target_ids)[:max_length]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "length": len(input_ids),
        "response_tokens": sum(1 for t in labels if t != IGNORE_INDEX),
        "truncated": len(prompt_ids) + len(target_ids) > max_length,
        "call_id": example.call_id,
    }


def build_sft_data(
    objections: Sequence[Objection], training: TrainingSettings, tokenizer: Any
) -> SftData:
    """Build, split and tokenise the SFT data; see the module docstring."""
    from datasets import Dataset

    train, evaluation, train_calls, eval_calls = build_examples(objections, training)

    tokenised: dict[str, list[dict[str, Any]]] = {}
    truncated = dropped = 0
    for side, examples in (("train", train), ("eval", evaluation)):
        rows = [tokenize_example(e, tokenizer, training.max_length) for e in examples]
        truncated += sum(r["truncated"] for r in rows)
        kept = [r for r in rows if r["response_tokens"] > 0]
        dropped += len(rows) - len(kept)
        tokenised[side] = kept
    if truncated:
        logger.warning(
            "%d examples were cut to training.max_length=%d tokens (%d of them lost their "
            "whole reply and were dropped); raise max_length to keep them",
            truncated,
            training.max_length,
            dropped,
        )
    if not tokenised["train"] or not tokenised["eval"]:
        raise StateError(
            f"after truncation to training.max_length={training.max_length} tokens, "
            f"{len(tokenised['train'])} train and {len(tokenised['eval'])} eval examples remain; "
            "raise max_length or mine more objections"
        )

    data = SftData(
        train=Dataset.from_list(tokenised["train"]),
        eval=Dataset.from_list(tokenised["eval"]),
        train_calls=train_calls,
        eval_calls=eval_calls,
        data_hash=data_hash(train, evaluation),
        train_examples=train,
        eval_examples=evaluation,
        truncated=truncated,
    )
    logger.info(
        "built %d train examples from %d calls and %d eval examples from %d held-out calls "
        "(%d response tokens in train)",
        len(data.train),
        len(train_calls),
        len(data.eval),
        len(eval_calls),
        sum(data.train["response_tokens"]),
    )
    return data


def collate(rows: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch to its own longest row: input_ids, attention_mask, labels tensors.

    Training and evaluation pack examples without padding (``training.batching``);
    this padded layout is what the training benchmark compares that against.
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
