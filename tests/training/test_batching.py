"""Padding-free packing: layout, example order, and the two equalities it must keep.

- the reply loss of N examples packed in one row equals their loss computed one by one
  (transformers builds a block-diagonal causal mask from the restarting position ids);
- gradient accumulation over 2 micro-batches of 2 gives the gradient of one batch of 4.
"""

from __future__ import annotations

import pytest

from training.batching import ExampleOrder, accumulate_gradients, pack
from training.dataset import IGNORE_INDEX, build_sft_data
from training.evaluate import response_loss

ROWS = [
    {"input_ids": [10, 11, 12, 13, 14], "labels": [IGNORE_INDEX, IGNORE_INDEX, 12, 13, 14]},
    # Labelled from its first token: that token must still not be a target, since
    # only the previous example's last token could predict it.
    {"input_ids": [20, 21, 22], "labels": [20, 21, 22]},
    {"input_ids": [30, 31, 32, 33], "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 33]},
]


def test_pack_concatenates_without_padding_and_restarts_positions():
    batch = pack(ROWS)

    assert batch.input_ids.tolist() == [[10, 11, 12, 13, 14, 20, 21, 22, 30, 31, 32, 33]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]]
    assert batch.tokens == 12 and batch.examples == 3
    # Position t predicts the label at t + 1, within one example only.
    assert batch.predict_at.tolist() == [1, 2, 3, 5, 6, 10]
    assert batch.targets.tolist() == [12, 13, 14, 21, 22, 33]
    assert batch.response_tokens == 6
    assert 4 not in batch.predict_at.tolist()  # example 1's last token predicts nothing
    assert 7 not in batch.predict_at.tolist()


def test_example_order_visits_each_example_once_per_epoch_and_resumes():
    order = ExampleOrder(10, seed=13)
    first_epoch = [order.next_batch(4) for _ in range(3)]
    assert [len(b) for b in first_epoch] == [4, 4, 2]  # the epoch's last batch is short
    assert sorted(i for b in first_epoch for i in b) == list(range(10))
    assert order.epochs_done == 1.0

    nxt = order.next_batch(4)
    saved = order.state()
    continued = [order.next_batch(4) for _ in range(3)]
    restored = ExampleOrder.from_state(saved)
    assert [restored.next_batch(4) for _ in range(3)] == continued
    assert sorted(nxt + continued[0] + continued[1]) == list(range(10))
    assert nxt + continued[0] != [i for b in first_epoch for i in b][:8]  # reshuffled
    assert ExampleOrder(10, seed=14).next_batch(10) != ExampleOrder(10, seed=13).next_batch(10)


@pytest.fixture(scope="module")
def rows(objections, settings, tokenizer):
    data = build_sft_data(objections, settings.training, tokenizer)
    return list(data.train)[:6]


def _one_by_one_loss(model, rows) -> float:
    """The reference: each example alone, the model's default inputs, no packing."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            total += F.cross_entropy(
                logits, labels, ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            count += int((labels != IGNORE_INDEX).sum())
    return total / count


@pytest.mark.slow
def test_packed_loss_equals_one_by_one(base, rows):
    import torch
    import torch.nn.functional as F

    model, tokenizer = base
    assert pack(rows).tokens == sum(len(r["input_ids"]) for r in rows)  # no padding at all

    alone = _one_by_one_loss(model, rows)
    packed = response_loss(model, tokenizer, rows, batch_size=len(rows))
    assert packed == pytest.approx(alone, abs=1e-4)

    # The same row with positions running on (no restart) lets each example see the
    # ones before it: the loss moves, so the equality above is the mask at work.
    batch = pack(rows)
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, use_cache=False, logits_to_keep=batch.predict_at
        ).logits[0]
    leaky = F.cross_entropy(logits, batch.targets).item()
    assert abs(leaky - alone) > 1e-2


@pytest.mark.slow
def test_accumulating_two_micro_batches_of_two_equals_one_batch_of_four(settings, rows):
    import torch
    from peft import LoraConfig, get_peft_model

    from training.model import load_base

    model, _ = load_base(settings, fresh=True)
    torch.manual_seed(0)
    model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]),
    )
    # LoRA starts with B = 0, which zeroes every gradient of A; random B tests both.
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    model.eval()  # no dropout anywhere, so both passes see the same function
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def gradients(micro_batches):
        model.zero_grad(set_to_none=True)
        loss, tokens = accumulate_gradients(model, micro_batches)
        return loss, tokens, {n: p.grad.clone() for n, p in trainable}

    four = rows[:4]
    loss_4, tokens_4, grads_4 = gradients([pack(four)])
    loss_2x2, tokens_2x2, grads_2x2 = gradients([pack(four[:2]), pack(four[2:])])

    assert tokens_4 == tokens_2x2 == sum(pack([r]).response_tokens for r in four)
    assert loss_2x2 == pytest.approx(loss_4, rel=1e-5)
    assert any(g.abs().sum() > 0 for g in grads_4.values())
    for name, grad in grads_4.items():
        torch.testing.assert_close(grads_2x2[name], grad, rtol=1e-4, atol=1e-7, msg=name)

    # Averaging each micro-batch's own mean instead would weigh tokens unequally.
    first, second = pack(four[:2]), pack(four[2:])
    assert first.response_tokens != second.response_tokens
    model.zero_grad(set_to_none=True)
    for micro in (first, second):
        accumulate_gradients(model, [micro])
    naive = {n: p.grad.clone() / 2 for n, p in trainable}
    assert any(not torch.allclose(naive[n], grads_4[n], rtol=1e-3) for n in grads_4)
