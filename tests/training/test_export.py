"""Adapters outside the copilot: plain peft loading, portable adapter config, merged export."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from copilot.errors import InputError
from tests.training.test_registry import OTHER_BASE, make_peft_adapter
from training.export import EXPORT_FILE, base_weights_folder, export_merged
from training.model import base_model_id, load_base

PROMPT = [{"role": "user", "content": "Your price is too high for a team of our size."}]


def _logits(model, tokenizer):
    import torch

    text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits[0]


@pytest.fixture(scope="module")
def adapter(settings, base):
    return make_peft_adapter(
        settings, "export-probe", seed=7, created_at="2026-03-01T09:00:00+00:00"
    )


@pytest.fixture(scope="module")
def adapter_logits(settings, adapter, tokenizer):
    """Logits of the adapter as the copilot serves it (peft on a private base copy)."""
    from peft import PeftModel

    model, _ = load_base(settings, fresh=True)
    served = PeftModel.from_pretrained(model, adapter.path, adapter_name=adapter.name).eval()
    return _logits(served, tokenizer)


@pytest.mark.slow
def test_adapter_folder_loads_with_plain_peft_on_the_base_folder(
    settings, base, tokenizer, adapter, adapter_logits
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = base_weights_folder(settings)
    assert (folder / "config.json").is_file()
    assert folder.parent == settings.cache_dir / "base-models"  # the dequantised GGUF

    # Plain transformers + peft, nothing of ours: the documented recipe.
    plain_base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    plain = PeftModel.from_pretrained(plain_base, adapter.path).eval()
    plain_logits = _logits(plain, tokenizer)

    assert torch.allclose(plain_logits, adapter_logits, atol=1e-5)
    # ...and the adapter is really in effect: it moves the logits away from the base's.
    assert (adapter_logits - _logits(base[0], tokenizer)).abs().max() > 0.05

    config = json.loads((adapter.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_model_id(settings)
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    card = (adapter.path / "README.md").read_text()
    assert str(settings.data_dir) not in card  # no machine-local path in a folder one copies
    assert base_model_id(settings) in card


@pytest.mark.slow
def test_merged_export_loads_without_peft_and_matches_the_adapter(
    settings, tokenizer, adapter, adapter_logits, tmp_path
):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_merged(settings, adapter, tmp_path / "merged")

    assert out == tmp_path / "merged"
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", EXPORT_FILE, "README.md"} <= files
    assert not any(name.startswith("adapter_") for name in files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in key for key in merged.state_dict())
    merged_tokenizer = AutoTokenizer.from_pretrained(out)
    assert merged_tokenizer.chat_template == tokenizer.chat_template
    merged_logits = _logits(merged, merged_tokenizer)
    assert merged_logits.shape == adapter_logits.shape
    # Merging reorders float32 sums (measured max difference 6.6e-5 on logits of ~20).
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-5)

    metadata = json.loads((out / EXPORT_FILE).read_text())
    assert metadata["adapter"] == "export-probe"
    assert metadata["base_model"] == base_model_id(settings)
    assert metadata["adapter_created_at"] == "2026-03-01T09:00:00+00:00"
    assert metadata["dtype"] == "float32"
    readme = (out / "README.md").read_text()
    assert "export-probe" in readme and base_model_id(settings) in readme

    # A second export to the same folder: refused, unless --force replaces the earlier one.
    (out / "stale.txt").write_text("from an earlier export")
    with pytest.raises(InputError, match="--force"):
        export_merged(settings, adapter, out)
    assert (out / "stale.txt").is_file()
    export_merged(settings, adapter, out, force=True)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / EXPORT_FILE).read_text())["adapter"] == "export-probe"


def test_export_refuses_other_bases_and_folders_it_does_not_own(settings, tmp_path):
    # Every refusal comes before any model loads: the adapter's weights are never read.
    from training.registry import AdapterInfo

    adapter = AdapterInfo(
        name="probe",
        path=tmp_path / "adapters" / "probe",
        created_at="2026-03-01T09:00:00+00:00",
        base_model=base_model_id(settings),
    )
    with pytest.raises(InputError, match=OTHER_BASE) as info:
        export_merged(settings, replace(adapter, base_model=OTHER_BASE), tmp_path / "out")
    assert base_model_id(settings) in str(info.value)
    assert not (tmp_path / "out").exists()

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "plan.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        export_merged(settings, adapter, notes)
    with pytest.raises(InputError, match="only replaces"):
        export_merged(settings, adapter, notes, force=True)
    assert (notes / "plan.txt").read_text() == "keep me"

    a_file = tmp_path / "model.bin"
    a_file.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export_merged(settings, adapter, a_file)
