"""Padding-free batches: a micro-batch's examples concatenated into one row.

    batch = pack([rows[i] for i in indices])
    loss_sum = response_loss_sum(model, batch)   # nats, summed over reply tokens

Each example's ``position_ids`` restart at 0. Given position ids and no 2D
attention mask (and no KV cache), transformers (5.x, ``masking_utils.
find_packed_sequence_indices``) reads every restart as the start of a new
sequence and builds a block-diagonal causal mask for sdpa and eager attention,
so no example attends to another and no compute goes to padding. The forward
pass must say ``use_cache=False``: the model otherwise creates a cache, and with
a cache the packed-sequence detection is skipped (examples would see each other).

Only positions whose next token is a reply token are projected onto the
vocabulary (``logits_to_keep``), which for a 135M model with a 49k vocabulary is a
large share of the step.

The order of examples is a seeded permutation per epoch; ``ExampleOrder`` is the
cursor into it that checkpoints save.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.dataset import IGNORE_INDEX


@dataclass
class PackedBatch:
    """One row of concatenated examples (tensors have a leading batch dim of 1)."""

    input_ids: Any  # (1, tokens) long
    position_ids: Any  # (1, tokens) long, restarting at 0 for each example
    predict_at: Any  # (n,) long: positions whose logits predict a reply token
    targets: Any  # (n,) long: the reply token each of those positions predicts
    examples: int
    tokens: int

    @property
    def response_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: Any) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.predict_at.to(device),
            self.targets.to(device),
            self.examples,
            self.tokens,
        )


def pack(rows: Sequence[dict[str, Any]]) -> PackedBatch:
    """Concatenate tokenised rows (``input_ids``, ``labels``) into one padding-free row.

    A label at position ``t`` is predicted by the logits at ``t - 1``. The first
    token of every example is never a target, so nothing is predicted from the
    previous example's last token (it is a prompt token anyway; this makes it a rule).
    """
    import torch

    if not rows:
        raise ValueError("pack needs at least one row")
    input_ids: list[int] = []
    positions: list[int] = []
    predict_at: list[int] = []
    targets: list[int] = []
    for row in rows:
        start = len(input_ids)
        ids, labels = list(row["input_ids"]), list(row["labels"])
        input_ids.extend(ids)
        positions.extend(range(len(ids)))
        for offset in range(1, len(ids)):
            if labels[offset] != IGNORE_INDEX:
                predict_at.append(start + offset - 1)
                targets.append(labels[offset])
    return PackedBatch(
        input_ids=torch.tensor([input_ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        predict_at=torch.tensor(predict_at, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        examples=len(rows),
        tokens=len(input_ids),
    )


def response_loss_sum(model: Any, batch: PackedBatch) -> Any:
    """Cross-entropy summed over the batch's reply tokens (a scalar tensor, with grad)."""
    import torch
    import torch.nn.functional as F

    if batch.response_tokens == 0:
        return torch.zeros(())
    logits = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,  # with a cache, transformers skips the packed-sequence mask
        logits_to_keep=batch.predict_at,
    ).logits[0]
    return F.cross_entropy(logits.float(), batch.targets, reduction="sum")


def accumulate_gradients(model: Any, micro_batches: Sequence[PackedBatch]) -> tuple[float, int]:
    """Backward through ``micro_batches`` with the loss averaged over all their reply tokens.

    Each micro-batch's summed loss is divided by the reply tokens of the whole
    accumulation, so the gradient equals that of one batch holding every example,
    however they were split. Returns (mean loss in nats per reply token, reply tokens).
    """
    total_tokens = sum(b.response_tokens for b in micro_batches)
    if total_tokens == 0:
        raise ValueError("the micro-batches hold no reply tokens")
    device = model.get_input_embeddings().weight.device
    loss_total = 0.0
    for batch in micro_batches:
        if batch.response_tokens == 0:
            continue  # all prompt (cut by max_length): nothing to learn, nothing to backward
        loss_sum = response_loss_sum(model, batch.to(device))
        (loss_sum / total_tokens).backward()
        loss_total += float(loss_sum.detach())
    return loss_total / total_tokens, total_tokens


class ExampleOrder:
    """Which examples come next: a seeded permutation per epoch and a cursor into it.

    Every epoch visits every example once; its last micro-batch may be short
    rather than borrow from the next epoch (which could put one example twice
    into a batch). ``state()``/``from_state`` round-trip through JSON for checkpoints.
    """

    def __init__(self, n_examples: int, seed: int, epoch: int = 0, cursor: int = 0):
        if n_examples < 1:
            raise ValueError("ExampleOrder needs at least one example")
        self.n_examples = n_examples
        self.seed = seed
        self.epoch = epoch
        self.cursor = cursor
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.n_examples))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self, batch_size: int) -> list[int]:
        if self.cursor >= self.n_examples:
            self.epoch += 1
            self.cursor = 0
            self._order = self._permutation(self.epoch)
        batch = self._order[self.cursor : self.cursor + batch_size]
        self.cursor += len(batch)
        return batch

    @property
    def epochs_done(self) -> float:
        """Fractional epochs consumed so far (1.5 = one and a half passes)."""
        return self.epoch + self.cursor / self.n_examples

    def state(self) -> dict[str, int]:
        return {
            "n_examples": self.n_examples,
            "seed": self.seed,
            "epoch": self.epoch,
            "cursor": self.cursor,
        }

    @classmethod
    def from_state(cls, state: dict[str, int]) -> ExampleOrder:
        return cls(int(state["n_examples"]), int(state["seed"]), state["epoch"], state["cursor"])
