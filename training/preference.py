"""Preference pairs: a won-call reply over a lost-call reply to the same kind of objection.

    data = build_preference_pairs(objections, settings.training, embed=embedder.encode)

Training on them (DPO) lives in ``training.dpo``.

Pairs. For each objection type, every usable reply from a positive-outcome call
(chosen) is paired with one reply to the same type of objection from a
negative-outcome call (rejected). The prompt is the objection the chosen reply
answered, in the chat format SFT and serving use (``objection_messages``, no
quoted references). Given an ``embed`` function (``rag.embed.SentenceEmbedder.encode``),
the rejected reply is the one whose objection reads closest to the chosen one's:
the rejected reply was really said to a different objection, and the closer that
objection is to the prompt, the more the pair is about how the rep answered rather
than what the customer asked. Without ``embed`` the pick is seeded random within
the type; ``pairing`` records which.

Split. Positive and negative calls are split separately with the SFT split
(``training.dataset.split_calls``, same seed), so the held-out won calls are the
ones SFT holds out and each side has both classes. Pairs never cross the split: a
train pair's two calls are both training calls and a held-out pair's both held
out, so no held-out call's reply is in any train pair, and no reply the model was
pushed towards or away from is scored in evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from copilot.errors import InputError, StateError
from copilot.prompts import objection_messages
from copilot.schemas import Objection
from copilot.settings import TrainingSettings
from training.dataset import split_calls

logger = logging.getLogger(__name__)


# texts -> one row per text (any float array); rows are normalised here.
Embed = Callable[[Sequence[str]], Any]


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (won-call) and a dispreferred (lost-call) reply."""

    type: str
    objection: str  # what the chosen reply answered: the prompt
    chosen: str
    rejected: str
    chosen_call_id: str
    rejected_call_id: str
    rejected_objection: str  # what the rejected reply really answered
    similarity: float | None = None  # cosine of the two objections (embedding pairing only)

    def conversation(self) -> dict[str, Any]:
        """trl's conversational preference format: prompt messages, chosen and rejected turns."""
        return {
            "prompt": objection_messages(self.objection),
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


@dataclass
class PreferencePairs:
    """Pairs on each side of the split, untokenised, and how they were made."""

    train: list[PreferencePair]
    eval: list[PreferencePair]
    train_calls: list[str]  # positive and negative calls, sorted
    eval_calls: list[str]
    pairing: str  # "embedding" or "random"
    seed: int
    unpaired: int = 0  # chosen replies with no rejected reply of their type on their side
    short_replies: int = 0  # replies left out for training.min_reply_chars


@dataclass
class PreferenceData:
    """``datasets.Dataset`` train/eval sets in trl's conversational format, and their split."""

    train: Any
    eval: Any
    train_calls: list[str]
    eval_calls: list[str]
    data_hash: str
    pairing: str
    seed: int
    train_pairs: list[PreferencePair] = field(repr=False, default_factory=list)
    eval_pairs: list[PreferencePair] = field(repr=False, default_factory=list)


# --- pairs -----------------------------------------------------------------------


def usable_replies(
    objections: Sequence[Objection], training: TrainingSettings
) -> tuple[list[Objection], list[Objection], int]:
    """(positive, negative, number left out as too short): the replies a pair may use.

    A reply shorter than ``training.min_reply_chars`` is a back-channel ("Okay."),
    not a way of handling the objection, on either side: a pair against "Okay."
    would only teach the model to talk longer.
    """
    answered = [
        o
        for o in objections
        if o.polarity in (1, -1) and o.customer_text.strip() and o.reply_text.strip()
    ]
    kept = [o for o in answered if len(o.reply_text.strip()) >= training.min_reply_chars]
    order = sorted(kept, key=lambda o: (o.call_id, o.turn_index))
    positives = [o for o in order if o.polarity == 1]
    negatives = [o for o in order if o.polarity == -1]
    return positives, negatives, len(answered) - len(kept)


def split_preference_calls(
    positives: Sequence[Objection],
    negatives: Sequence[Objection],
    training: TrainingSettings,
    *,
    total: int,
    short: int = 0,
) -> tuple[set[str], set[str]]:
    """(held-out positive calls, held-out negative calls); raises when a class cannot be split."""
    if total == 0:
        raise StateError(
            "no objections to build preference pairs from: run `copilot ingest PATH` and "
            "`copilot objections` first"
        )
    if not positives or not negatives:
        raise StateError(
            "preference pairs need replies from both positive- and negative-outcome calls; of "
            f"{total} objections, {len(positives)} have a usable reply from a positive call and "
            f"{len(negatives)} from a negative call ({short} replies shorter than "
            f"training.min_reply_chars={training.min_reply_chars} left out): ingest "
            f"{'won' if not positives else 'lost'} calls too (outcomes.positive / "
            "outcomes.negative list which labels count) and run `copilot objections`, "
            "or train with training.method: sft"
        )
    positive_calls = sorted({o.call_id for o in positives})
    negative_calls = sorted({o.call_id for o in negatives})
    if len(positive_calls) < 2 or len(negative_calls) < 2:
        scarce = "won" if len(positive_calls) < 2 else "lost"
        raise StateError(
            f"preference pairs come from {len(positive_calls)} positive- and "
            f"{len(negative_calls)} negative-outcome call(s) with usable replies; each class "
            "needs at least 2 calls so one of each can be held out for evaluation: ingest more "
            f"{scarce} calls and run `copilot objections`"
        )
    _, eval_positive = split_calls(positive_calls, training.eval_fraction, training.seed)
    _, eval_negative = split_calls(negative_calls, training.eval_fraction, training.seed)
    return set(eval_positive), set(eval_negative)


def pair_objections(
    objections: Sequence[Objection], training: TrainingSettings, embed: Embed | None = None
) -> PreferencePairs:
    """Split by call and pair within each side; see the module docstring."""
    positives, negatives, short = usable_replies(objections, training)
    held_pos, held_neg = split_preference_calls(
        positives, negatives, training, total=len(objections), short=short
    )
    vectors = _unit_vectors(positives + negatives, embed) if embed is not None else None
    rng = random.Random(training.seed)

    sides: dict[str, list[PreferencePair]] = {}
    unpaired = 0
    for side, held in (("train", False), ("eval", True)):
        chosen = [o for o in positives if (o.call_id in held_pos) == held]
        rejected = [o for o in negatives if (o.call_id in held_neg) == held]
        sides[side], missing = _pair_side(chosen, rejected, rng, vectors)
        unpaired += missing

    train, evaluation = sides["train"], sides["eval"]
    if not train or not evaluation:
        kinds = {
            side: sorted({o.type for o in positives if (o.call_id in held_pos) == held})
            for side, held in (("train", False), ("eval", True))
        }
        lost_kinds = {
            side: sorted({o.type for o in negatives if (o.call_id in held_neg) == held})
            for side, held in (("train", False), ("eval", True))
        }
        empty = "train" if not train else "eval"
        raise StateError(
            f"{len(train)} train and {len(evaluation)} held-out preference pairs: on the {empty} "
            f"side no objection type has both a won reply ({', '.join(kinds[empty]) or 'none'}) "
            f"and a lost reply ({', '.join(lost_kinds[empty]) or 'none'}); ingest more lost calls "
            "and run `copilot objections`, or try another training.seed / eval_fraction"
        )
    if len(evaluation) > training.max_eval_examples:
        evaluation = sorted(
            rng.sample(evaluation, training.max_eval_examples),
            key=lambda p: (p.chosen_call_id, p.objection),
        )

    calls = {o.call_id for o in positives + negatives}
    held_out = held_pos | held_neg
    pairs = PreferencePairs(
        train=train,
        eval=evaluation,
        train_calls=sorted(calls - held_out),
        eval_calls=sorted(held_out),
        pairing="embedding" if embed is not None else "random",
        seed=training.seed,
        unpaired=unpaired,
        short_replies=short,
    )
    if unpaired:
        logger.info(
            "%d won replies have no lost reply of the same objection type on their side of the "
            "split and are in no pair",
            unpaired,
        )
    return pairs


def build_preference_pairs(
    objections: Sequence[Objection], training: TrainingSettings, embed: Embed | None = None
) -> PreferenceData:
    """Pairs as ``datasets.Dataset`` train/eval sets; see the module docstring."""
    from datasets import Dataset

    pairs = pair_objections(objections, training, embed)
    data = PreferenceData(
        train=Dataset.from_list([_row(p) for p in pairs.train]),
        eval=Dataset.from_list([_row(p) for p in pairs.eval]),
        train_calls=pairs.train_calls,
        eval_calls=pairs.eval_calls,
        data_hash=preference_hash(pairs),
        pairing=pairs.pairing,
        seed=pairs.seed,
        train_pairs=pairs.train,
        eval_pairs=pairs.eval,
    )
    logger.info(
        "built %d train preference pairs from %d calls and %d held-out pairs from %d calls "
        "(%s pairing, seed %d)",
        len(pairs.train),
        len(pairs.train_calls),
        len(pairs.eval),
        len(pairs.eval_calls),
        pairs.pairing,
        pairs.seed,
    )
    return data


def preference_hash(pairs: PreferencePairs) -> str:
    """sha256 of the pairs, their split and how they were paired."""
    payload = {
        "pairing": pairs.pairing,
        "seed": pairs.seed,
        **{
            side: [
                [p.type, p.chosen_call_id, p.objection, p.chosen, p.rejected_call_id, p.rejected]
                for p in side_pairs
            ]
            for side, side_pairs in (("train", pairs.train), ("eval", pairs.eval))
        },
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _row(pair: PreferencePair) -> dict[str, Any]:
    # The extra columns are for people reading the dataset; trl drops them before batching.
    return {
        **pair.conversation(),
        "type": pair.type,
        "chosen_call_id": pair.chosen_call_id,
        "rejected_call_id": pair.rejected_call_id,
    }


def _unit_vectors(objections: Sequence[Objection], embed: Embed) -> dict[Objection, Any]:
    import numpy as np

    matrix = np.asarray(embed([o.customer_text.strip() for o in objections]), dtype=np.float32)
    if matrix.shape[0] != len(objections):
        raise InputError(
            f"the embed function returned {matrix.shape[0]} vectors for {len(objections)} texts; "
            "it must return one row per text"
        )
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return dict(zip(objections, matrix, strict=True))


def _pair_side(
    chosen: Sequence[Objection],
    rejected: Sequence[Objection],
    rng: random.Random,
    vectors: dict[Objection, Any] | None,
) -> tuple[list[PreferencePair], int]:
    by_type: dict[str, list[Objection]] = defaultdict(list)
    for o in rejected:
        by_type[o.type].append(o)
    pairs, unpaired = [], 0
    for o in chosen:
        candidates = by_type.get(o.type)
        if not candidates:
            unpaired += 1
            continue
        similarity = None
        if vectors is None:
            match = rng.choice(candidates)
        else:
            scores = [float(vectors[o] @ vectors[c]) for c in candidates]
            best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
            match, similarity = candidates[best], round(scores[best], 4)
        pairs.append(
            PreferencePair(
                type=o.type,
                objection=o.customer_text.strip(),
                chosen=o.reply_text.strip(),
                rejected=match.reply_text.strip(),
                chosen_call_id=o.call_id,
                rejected_call_id=match.call_id,
                rejected_objection=match.customer_text.strip(),
                similarity=similarity,
            )
        )
    return pairs, unpaired
