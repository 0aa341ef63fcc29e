"""A short real LoRA run on the fixture calls: loss falls, the run folder follows
training/runs.py, the adapter folder is complete, and the adapter ends its turn."""

from __future__ import annotations

import json

import pytest

from copilot.errors import InputError, StateError
from copilot.prompts import objection_messages
from training.model import base_model_id, load_base
from training.registry import AdapterRegistry
from training.runs import DONE, FAILED, RunFolder
from training.trainer import train_adapter

pytestmark = pytest.mark.slow

STEP_FIELDS = {
    "event",
    "step",
    "max_steps",
    "loss",
    "lr",
    "tokens_per_s",
    "eta_s",
    "elapsed_s",
    "epoch",
}


@pytest.fixture(scope="module")
def run(trained):
    return trained


def _own_data_dir(settings, tmp_path):
    """Settings on a fresh data dir that shares the session's dequantised base model."""
    (tmp_path / "cache").symlink_to(settings.cache_dir)
    return settings.model_copy(update={"data_dir": tmp_path})


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
    assert result.steps == result.max_steps == 20
    assert result.state == DONE and result.method == "sft"
    assert result.tokens_per_s > 0
    assert not set(result.train_calls) & set(result.eval_calls)
    assert result.train_examples + result.eval_examples == 33


def test_progress_log_follows_the_run_folder_contract(run, settings):
    result, seen = run
    assert [s for s, _ in seen] == list(range(1, 21))
    records = list(RunFolder(result.path).progress())

    assert records[0] == {
        "event": "eval",
        "phase": "before",
        "loss": pytest.approx(result.eval_loss_before, abs=1e-5),
    }
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == [5, 10, 15, 20]  # log_every=5
    assert all(set(r) == STEP_FIELDS and r["max_steps"] == 20 for r in steps)
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in steps)
    assert [r["elapsed_s"] for r in steps] == sorted(r["elapsed_s"] for r in steps)
    assert steps[-1]["eta_s"] == 0 and steps[0]["eta_s"] > 0
    assert steps[-1]["epoch"] == pytest.approx(20 * 4 / result.train_examples, abs=0.2)
    assert steps[-1]["lr"] == pytest.approx(0.0, abs=1e-6)  # linear decay to zero
    assert records[-2] == {
        "event": "eval",
        "phase": "after",
        "loss": pytest.approx(result.eval_loss_after, abs=1e-5),
    }
    assert records[-1] == {"event": "end", "state": DONE, "message": None}

    state = RunFolder(result.path).read_state()
    assert state["state"] == DONE and state["method"] == "sft" and state["max_steps"] == 20
    assert state["config"]["training"]["batch_size"] == settings.training.batch_size
    assert RunFolder(result.path).status().resumable is False


def test_adapter_folder_is_complete_and_registered(run, settings):
    result, _ = run
    files = {p.name for p in result.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "copilot_adapter.json"} <= files
    assert "checkpoints" not in files  # dropped once the adapter is saved

    meta = json.loads((result.path / "copilot_adapter.json").read_text())
    assert meta["base_model"] == base_model_id(settings)
    assert meta["author"] == "maria"
    assert meta["method"] == "sft"
    assert meta["data_hash"] == result.data_hash
    assert meta["metrics"]["eval_loss_after"] == pytest.approx(result.eval_loss_after)
    assert meta["metrics"]["eval_loss_before"] == pytest.approx(result.eval_loss_before)
    assert meta["metrics"]["tokens_per_s"] == pytest.approx(result.tokens_per_s)
    assert meta["metrics"]["peak_rss_mb"] > 100  # a 135M model in float32 alone is ~540 MB
    assert meta["training"]["max_steps"] == 20
    assert meta["training"]["lora_r"] == settings.training.lora_r
    assert meta["eval_calls"] == result.eval_calls
    assert meta["train_calls"] == result.train_calls
    assert {"python", "torch", "transformers", "peft"} <= set(meta["versions"])
    assert json.loads((result.path / "adapter_config.json").read_text())["r"] == 16

    # The whole resolved config, without the machine's data dir
    config = meta["config"]
    assert "data_dir" not in config
    assert str(settings.data_dir) not in json.dumps(config)
    assert config["training"] == meta["training"]
    assert config["outcomes"]["positive"] == settings.outcomes.positive
    assert config["models"]["generator"]["gguf_file"] == settings.models.generator.gguf_file
    assert meta["machine"]["device"].startswith(("cpu", "cuda"))

    info = AdapterRegistry(settings.adapters_dir).get(result.name)
    assert info.base_model == result.base_model
    assert result.name.endswith("-" + result.data_hash[:8])


def test_adapter_replies_end_with_eos_and_invent_no_next_turn(run, settings, objections, tokenizer):
    """The target is reply + eos (<|im_end|>); greedy replies to held-out objections stop there."""
    import torch
    from peft import PeftModel

    from training.dataset import build_examples
    from training.generate import ReplyGenerator, clean_reply

    result, _ = run
    assert tokenizer.eos_token == "<|im_end|>"
    adapter = AdapterRegistry(settings.adapters_dir).get(result.name)
    _, held_out, _, eval_calls = build_examples(objections, settings.training)
    assert eval_calls == result.eval_calls and held_out

    max_new_tokens = settings.models.generator.max_new_tokens
    base, _ = load_base(settings, fresh=True)
    model = PeftModel.from_pretrained(base, adapter.path).eval()
    generator = ReplyGenerator(settings)
    for example in held_out:
        prompt = tokenizer.apply_chat_template(
            objection_messages(example.objection, example.references),
            add_generation_prompt=True,
            tokenize=False,
        )
        inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                top_p=None,
                top_k=None,
            )
        new = output[0, inputs["input_ids"].shape[1] :].tolist()
        raw = tokenizer.decode(new, skip_special_tokens=False)
        assert new[-1] == tokenizer.eos_token_id and len(new) < max_new_tokens, raw
        assert tokenizer.eos_token_id not in new[:-1]
        for turn_marker in ("Customer:", "User:", "<|im_start|>"):
            assert turn_marker not in raw, raw
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        assert len(text) >= 10
        # The serving path generates the same complete reply.
        assert generator.reply(example.objection, example.references, adapter) == clean_reply(text)


def test_one_class_or_empty_data_is_refused_before_the_model_loads(
    settings, objections, run, monkeypatch
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for a dataset that is refused")

    monkeypatch.setattr("training.trainer.load_base", no_model)
    won_only = [o for o in objections if o.polarity == 1]
    with pytest.raises(StateError) as info:
        train_adapter(settings, won_only, max_steps=1)
    message = str(info.value)
    assert f"{len(won_only)} from 8 positive-outcome call(s), 0 from 0 negative" in message
    assert "both won and lost calls" in message and "outcomes:" in message
    assert "Ingest lost (negative-outcome) calls" in message

    lost_only = [o for o in objections if o.polarity == -1]
    with pytest.raises(StateError, match="0 from 0 positive-outcome call.*2 from 1 negative"):
        train_adapter(settings, lost_only, max_steps=1)
    with pytest.raises(StateError, match="training set is empty.*copilot objections"):
        train_adapter(settings, [], max_steps=1)
    with pytest.raises(InputError, match="already exists"):
        train_adapter(settings, objections, max_steps=1, name=run[0].name)


def test_an_exception_marks_the_run_failed_and_is_raised(settings, objections, tmp_path):
    broken = _own_data_dir(settings, tmp_path).with_training({"target_modules": ["no_such_proj"]})
    with pytest.raises(ValueError, match="no_such_proj"):
        train_adapter(broken, objections, max_steps=1, name="broken")
    folder = RunFolder(broken.adapters_dir / "broken")
    state = folder.read_state()
    assert state["state"] == FAILED and "no_such_proj" in state["message"]
    end = list(folder.progress())[-1]
    assert end["event"] == "end" and end["state"] == FAILED and "no_such_proj" in end["message"]
    assert not folder.finished
