"""A short real LoRA run on the fixture calls: loss falls, the adapter folder is complete."""

from __future__ import annotations

import json

import pytest

from copilot.errors import InputError, StateError
from training.model import base_model_id, load_base
from training.registry import AdapterRegistry
from training.trainer import train_adapter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(trained):
    return trained


def test_base_model_is_cached_as_safetensors(settings, base):
    cached = settings.cache_dir / "base-models"
    (folder,) = list(cached.iterdir())
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert load_base(settings) is base  # one load per process

    import torch

    fresh, tokenizer = load_base(settings, fresh=True)  # from the safetensors cache
    assert fresh is not base[0]
    ids = tokenizer("Too expensive for us.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, base[0](ids).logits)
    assert base_model_id(settings).startswith("SmolLM2-135M-Instruct.Q4_1.gguf@")


def test_training_lowers_held_out_response_loss(run):
    result, _ = run
    assert result.eval_loss_after < result.eval_loss_before
    assert result.steps == 20
    assert result.tokens_per_s > 0
    assert not set(result.train_calls) & set(result.eval_calls)
    assert result.train_examples + result.eval_examples == 33


def test_progress_callback_and_jsonl_log(run, settings):
    result, seen = run
    assert [s for s, _ in seen] == list(range(1, 21))
    records = [
        json.loads(line) for line in (result.path / "progress.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [5, 10, 15, 20]  # log_every=5
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in records)
    assert records[-1]["lr"] == pytest.approx(0.0, abs=1e-6)  # linear decay to zero


def test_adapter_folder_is_complete_and_registered(run, settings):
    result, _ = run
    files = {p.name for p in result.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "copilot_adapter.json"} <= files

    meta = json.loads((result.path / "copilot_adapter.json").read_text())
    assert meta["base_model"] == base_model_id(settings)
    assert meta["author"] == "maria"
    assert meta["data_hash"] == result.data_hash
    assert meta["metrics"]["eval_loss_after"] == pytest.approx(result.eval_loss_after)
    assert meta["metrics"]["eval_loss_before"] == pytest.approx(result.eval_loss_before)
    assert meta["training"]["max_steps"] == 20
    assert meta["training"]["lora_r"] == settings.training.lora_r
    assert meta["eval_calls"] == result.eval_calls
    assert json.loads((result.path / "adapter_config.json").read_text())["r"] == 16

    info = AdapterRegistry(settings.adapters_dir).get(result.name)
    assert info.base_model == result.base_model
    assert result.name.endswith("-" + result.data_hash[:8])


def test_training_without_positive_pairs_is_refused(settings, objections, run):
    lost_only = [o for o in objections if o.polarity != 1]
    with pytest.raises(StateError, match="run `copilot objections` first"):
        train_adapter(settings, lost_only, max_steps=1)
    with pytest.raises(InputError, match="already exists"):
        train_adapter(settings, objections, max_steps=1, name=run[0].name)
