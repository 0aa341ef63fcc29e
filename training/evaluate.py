"""Held-out evaluation: the mean cross-entropy over response tokens only."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from training.batching import pack, response_loss_sum


def response_loss(
    model: Any, tokenizer: Any, examples: Iterable[dict[str, Any]], batch_size: int = 4
) -> float:
    """Mean loss (nats per token) over every response token of ``examples``.

    Each token counts once, however the examples are batched, so short and long
    replies weigh by their length. ``examples`` are rows with ``input_ids`` and
    ``labels`` (a ``datasets.Dataset`` or a list of dicts), packed ``batch_size`` to
    a row without padding (``training.batching``). The model's train/eval mode is
    restored afterwards. ``tokenizer`` is unused since packing needs no pad token;
    it stays so callers need not change.
    """
    import torch

    del tokenizer
    rows: Sequence[dict[str, Any]] = list(examples)
    if not rows:
        raise ValueError("response_loss needs at least one example")
    was_training = model.training
    model.eval()
    device = model.get_input_embeddings().weight.device
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = pack(rows[start : start + batch_size])
                total += float(response_loss_sum(model, batch.to(device)))
                count += batch.response_tokens
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the examples hold no response tokens (all labels are ignored)")
    return total / count


def perplexity(loss: float) -> float:
    return math.exp(loss)
