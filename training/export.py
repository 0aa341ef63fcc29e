"""Adapters leaving this process: a merged plain-transformers model, and portable adapter folders.

    out = export_merged(settings, registry.get("20260301-090000-cccc3333"), Path("merged"))
    AutoModelForCausalLM.from_pretrained(out)  # no peft needed

The merged folder holds safetensors weights, the tokenizer (with its chat
template), ``config.json``, and ``copilot_export.json`` + ``README.md`` naming the
adapter and the base model it was merged into. It serves from any server that
loads transformers folders, vLLM included, without LoRA support.

An adapter folder itself loads with plain peft on the base model's transformers
folder (``base_weights_folder``); ``make_adapter_portable`` replaces the
machine-local cache path peft writes into ``adapter_config.json`` by the base
model's id, so a copied folder names its base the same way on every machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from copilot.errors import InputError
from copilot.settings import Settings
from training.model import base_model_id, base_model_source, dequantised_folder, load_base
from training.registry import AdapterInfo, foreign_base_message, write_json_atomic

logger = logging.getLogger(__name__)

EXPORT_FILE = "copilot_export.json"
ADAPTER_CONFIG = "adapter_config.json"


def base_weights_folder(settings: Settings) -> Path:
    """The unquantised transformers folder of the base model, as ``load_base`` reads it.

    A GGUF base is dequantised once into ``<data dir>/cache/base-models/<id>/`` (it
    exists after the first load); a transformers base is its own folder.
    """
    source = base_model_source(settings)
    if source.gguf_file:
        return dequantised_folder(source, settings.cache_dir)
    return source.folder


def make_adapter_portable(adapter_dir: Path, base_model: str) -> None:
    """Name the base model by its id, not this machine's cache path, in a saved adapter.

    peft records the folder the base was loaded from (``<data dir>/cache/...``) as
    ``base_model_name_or_path`` in ``adapter_config.json`` and in its model card;
    that path means nothing on another machine and leaks the data dir. Our own
    loading never reads the field (it passes the base model in).
    """
    config_path = Path(adapter_dir) / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    local = config.get("base_model_name_or_path")
    if local == base_model:
        return
    config["base_model_name_or_path"] = base_model
    write_json_atomic(config_path, config)

    card = Path(adapter_dir) / "README.md"
    if local and card.is_file():
        card.write_text(
            card.read_text(encoding="utf-8").replace(str(local), base_model), encoding="utf-8"
        )


def export_merged(
    settings: Settings, adapter: AdapterInfo, out_dir: Path, *, force: bool = False
) -> Path:
    """Merge ``adapter`` into a fresh copy of the base model and save it to ``out_dir``.

    ``out_dir`` must not exist or be empty; ``force`` replaces an earlier export
    (a folder holding ``copilot_export.json``) but never any other folder.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    expected = base_model_id(settings)
    if adapter.base_model != expected:
        raise InputError(f"cannot export: {foreign_base_message(adapter, expected)}")
    replacing = _check_out_dir(out_dir, force)
    started = time.perf_counter()

    # Imported only now: a refused export should not wait seconds for torch.
    import peft
    import torch
    import transformers
    from peft import PeftModel

    # Merge: the LoRA deltas are folded into the weights of a private base copy
    model, tokenizer = load_base(settings, fresh=True)
    merged = PeftModel.from_pretrained(model, adapter.path).merge_and_unload()
    merged.eval()

    # Save into a hidden sibling, then move it into place: an interrupted export
    # never leaves a folder that looks complete.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        metadata = {
            "adapter": adapter.name,
            "adapter_created_at": adapter.created_at,
            "adapter_author": adapter.author,
            "adapter_method": adapter.method,
            "adapter_data_hash": adapter.data_hash,
            "adapter_metrics": adapter.metrics,
            "base_model": adapter.base_model,
            "merged_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dtype": str(next(merged.parameters()).dtype).removeprefix("torch."),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }
        write_json_atomic(staging / EXPORT_FILE, metadata)
        (staging / "README.md").write_text(_readme(metadata), encoding="utf-8")
        _move_into_place(staging, out_dir, replacing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logger.info(
        "exported adapter %s merged into %s to %s in %.1f s",
        adapter.name,
        adapter.base_model,
        out_dir,
        time.perf_counter() - started,
    )
    return out_dir


def _check_out_dir(out_dir: Path, force: bool) -> bool:
    """Whether an earlier export at ``out_dir`` will be replaced; raises when it may not."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; pass a folder path for the merged model")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    if not force:
        raise InputError(
            f"--out {out_dir} already exists and is not empty; choose a new folder, or pass "
            "--force to replace an earlier export there"
        )
    if not (out_dir / EXPORT_FILE).is_file():
        raise InputError(
            f"--out {out_dir} is not an earlier export (it holds no {EXPORT_FILE}), and "
            "--force only replaces those; choose a new or empty folder"
        )
    return True


def _move_into_place(staging: Path, out_dir: Path, replacing: bool) -> None:
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    if not replacing:  # an empty folder
        out_dir.rmdir()
        os.replace(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}-old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _readme(metadata: dict) -> str:
    loss_after = metadata["adapter_metrics"].get("eval_loss_after")
    loss = f"held-out response loss {loss_after:.3f}\n" if loss_after is not None else ""
    return (
        f"# {metadata['adapter']} merged into {metadata['base_model']}\n\n"
        f"LoRA adapter `{metadata['adapter']}` (created {metadata['adapter_created_at']}, "
        f"method {metadata['adapter_method']}) folded into the weights of the base model "
        f"`{metadata['base_model']}` on {metadata['merged_at']} by the sales copilot "
        f"(`copilot adapters export`). Weights are {metadata['dtype']} safetensors.\n"
        f"{loss}\n"
        "Loads with transformers alone:\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")\n'
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n'
        "```\n\n"
        f"`{EXPORT_FILE}` holds the adapter's metrics and the library versions used.\n"
    )
