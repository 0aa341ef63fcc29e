"""What the stored objections would train on, before anything is trained.

    preview = preview_dataset(service.objections(), settings)
    preview.to_dict()                     # counts, split, examples, problems
    require_trainable(preview, "dpo")     # StateError naming the counts and the fix

The counts and blockers come from the functions training uses
(``require_both_outcomes`` and ``build_examples`` for SFT, ``pair_objections`` for
DPO), so the preview cannot disagree with a run about what it holds or refuses.
No model is loaded: SFT example counts are before
tokenisation (an example that ``training.max_length`` cuts to nothing is dropped
only at training time), and DPO pairs are counted with random pairing, which
pairs exactly as many replies as embedding pairing does.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from copilot.errors import InputError, StateError
from copilot.schemas import Objection
from copilot.settings import Settings
from training.dataset import build_examples, require_both_outcomes
from training.preference import pair_objections, usable_replies

logger = logging.getLogger(__name__)

METHODS = ("sft", "dpo")
POLARITY_NAMES = {1: "positive", -1: "negative", 0: "unknown"}
EXAMPLES_PER_SIDE = 3
EXAMPLE_CHARS = 120
NO_OUTCOME = "(none)"


@dataclass(frozen=True)
class ExamplePair:
    """One objection -> reply pair, shortened for display."""

    call_id: str
    outcome: str | None
    type: str
    objection: str
    reply: str


@dataclass
class MethodPreview:
    """What one training method would get: examples (SFT) or pairs (DPO) and the call split."""

    train: int = 0
    eval: int = 0
    train_calls: int = 0
    eval_calls: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.train + self.eval


@dataclass
class DatasetPreview:
    """Counts of the stored objections and what the current training config makes of them."""

    method: str  # the configured training.method
    objections: int
    calls: int
    by_type: dict[str, dict[str, int]]  # type -> positive / negative / unknown -> objections
    by_outcome: dict[str, int]  # raw outcome label -> objections
    calls_by_outcome: dict[str, int]  # raw outcome label -> calls
    short_replies: int  # replies under training.min_reply_chars, left out of both methods
    min_reply_chars: int
    seed: int
    eval_fraction: float
    sft: MethodPreview
    dpo: MethodPreview
    examples: dict[str, list[ExamplePair]]  # "positive" / "negative" -> a few pairs

    @property
    def sft_examples(self) -> int:
        return self.sft.total

    @property
    def preference_pairs(self) -> int:
        return self.dpo.total

    @property
    def problems(self) -> list[str]:
        """What blocks training with the configured method, in plain language."""
        return self.blockers(self.method)

    def blockers(self, method: str) -> list[str]:
        if method not in METHODS:
            raise InputError(f"unknown training method {method!r}; expected one of {METHODS}")
        return list(self.sft.problems if method == "sft" else self.dpo.problems)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["problems"] = self.problems
        document["sft"]["total"] = self.sft.total
        document["dpo"]["total"] = self.dpo.total
        return document


def preview_dataset(objections: Sequence[Objection], settings: Settings) -> DatasetPreview:
    """Counts by type and outcome, the SFT and DPO yields and splits, examples, and blockers."""
    training = settings.training
    method = str(getattr(training, "method", "sft"))

    # Counts as stored
    by_type: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(POLARITY_NAMES.values(), 0)
    )
    for o in objections:
        by_type[o.type][POLARITY_NAMES.get(o.polarity, "unknown")] += 1
    by_outcome = Counter(o.outcome or NO_OUTCOME for o in objections)
    calls_by_outcome = Counter(
        outcome or NO_OUTCOME for _, outcome in {(o.call_id, o.outcome) for o in objections}
    )
    positives, negatives, short = usable_replies(objections, training)

    # What each method would make of them
    # (SFT: the trainer's one-class refusal first, then what build_examples refuses)
    sft = MethodPreview()
    try:
        train, evaluation, train_calls, eval_calls = build_examples(objections, training)
        sft = MethodPreview(len(train), len(evaluation), len(train_calls), len(eval_calls))
    except StateError as exc:
        sft.problems.append(str(exc))
    try:
        require_both_outcomes(objections)
    except StateError as exc:
        sft.problems.insert(0, str(exc))
        if not objections:
            del sft.problems[1:]  # "empty" says it all

    dpo = MethodPreview()
    try:
        pairs = pair_objections(objections, training)
        dpo = MethodPreview(
            len(pairs.train), len(pairs.eval), len(pairs.train_calls), len(pairs.eval_calls)
        )
    except StateError as exc:
        dpo.problems.append(str(exc))

    preview = DatasetPreview(
        method=method,
        objections=len(objections),
        calls=len({o.call_id for o in objections}),
        by_type={kind: dict(counts) for kind, counts in sorted(by_type.items())},
        by_outcome=dict(sorted(by_outcome.items())),
        calls_by_outcome=dict(sorted(calls_by_outcome.items())),
        short_replies=short,
        min_reply_chars=training.min_reply_chars,
        seed=training.seed,
        eval_fraction=training.eval_fraction,
        sft=sft,
        dpo=dpo,
        examples={"positive": _examples(positives), "negative": _examples(negatives)},
    )
    logger.info(
        "dataset preview: %d objections from %d calls, %d SFT examples, %d preference pairs",
        preview.objections,
        preview.calls,
        preview.sft_examples,
        preview.preference_pairs,
    )
    return preview


def require_trainable(preview: DatasetPreview, method: str) -> None:
    """Raise StateError when training with ``method`` would be pointless (empty, one class)."""
    problems = preview.blockers(method)
    if problems:
        raise StateError(
            f"cannot train with method {method} on {preview.objections} objections from "
            f"{preview.calls} calls: " + "; ".join(problems)
        )


def _examples(objections: Sequence[Objection]) -> list[ExamplePair]:
    """A few pairs, one objection type after another so the sample shows variety."""
    by_type: dict[str, list[Objection]] = defaultdict(list)
    for o in objections:
        by_type[o.type].append(o)
    queues = [by_type[kind] for kind in sorted(by_type)]
    chosen: list[Objection] = []
    while queues and len(chosen) < EXAMPLES_PER_SIDE:
        for queue in list(queues):
            if len(chosen) == EXAMPLES_PER_SIDE:
                break
            chosen.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return [
        ExamplePair(o.call_id, o.outcome, o.type, _short(o.customer_text), _short(o.reply_text))
        for o in chosen
    ]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1].rstrip() + "…"
