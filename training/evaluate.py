"""Held-out evaluation: the mean cross-entropy over response tokens only."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from training.dataset import IGNORE_INDEX, collate, length_batches


def response_loss(
    model: Any, tokenizer: Any, examples: Iterable[dict[str, Any]], batch_size: int = 4
) -> float:
    """Mean loss (nats per token) over every response token of ``examples``.

    Each token counts once, however the examples are batched, so short and long
    replies weigh by their length. ``examples`` are rows with ``input_ids`` and
    ``labels`` (a ``datasets.Dataset`` or a list of dicts). The model's train/eval
    mode is restored afterwards.
    """
    import torch
    import torch.nn.functional as F

    rows: Sequence[dict[str, Any]] = list(examples)
    if not rows:
        raise ValueError("response_loss needs at least one example")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch_idx in length_batches([len(r["input_ids"]) for r in rows], batch_size, 0):
                batch = collate([rows[i] for i in batch_idx], tokenizer.pad_token_id)
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                # Token t predicts token t+1: drop the last logit and the first label.
                logits = logits[:, :-1].float()
                labels = batch["labels"][:, 1:]
                total += F.cross_entropy(
                    logits.reshape(-1, logits.size(-1)),
                    labels.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                ).item()
                count += int((labels != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the examples hold no response tokens (all labels are ignored)")
    return total / count


def perplexity(loss: float) -> float:
    return math.exp(loss)
