"""Load the generator's base model once per process, from GGUF or a transformers folder.

A GGUF file is dequantised to float32 (about 20 s for SmolLM2-135M on 2 cores),
then written once as ordinary safetensors under ``<cache_dir>/base-models/`` so
later processes reload it in well under a second.

    model, tokenizer = load_base(settings)            # shared, do not modify in place
    model, tokenizer = load_base(settings, fresh=True)  # a private copy, e.g. to train
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from copilot.errors import ConfigError, ModelMissingError
from copilot.settings import Settings, resolve_model_path

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_loaded: dict[tuple[str, str | None], tuple[object, object]] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class BaseModelSource:
    """Where the base model lives: a folder, and the GGUF file in it when there is one."""

    folder: Path
    gguf_file: str | None
    model_id: str

    @property
    def key(self) -> tuple[str, str | None]:
        return (str(self.folder.resolve()), self.gguf_file)


def base_model_source(settings: Settings) -> BaseModelSource:
    """The base model folder (``training.base_model``, else ``models.generator``)."""
    configured = settings.training.base_model or settings.models.generator.path
    folder = resolve_model_path("generator", configured)
    if folder.is_file() and folder.suffix == ".gguf":
        folder, gguf_file = folder.parent, folder.name
    else:
        gguf_file = settings.models.generator.gguf_file
        if gguf_file and not (folder / gguf_file).is_file():
            gguf_file = None
    if gguf_file is None and not (folder / "config.json").is_file():
        raise ModelMissingError(
            f"generator folder {folder} holds neither the GGUF file "
            f"'{settings.models.generator.gguf_file}' nor a transformers config.json; "
            "set models.generator.path / gguf_file (or training.base_model) to a causal LM"
        )
    return BaseModelSource(folder, gguf_file, _fingerprint(folder, gguf_file))


def base_model_id(settings: Settings) -> str:
    """A stable name for the base model, the same on every machine holding the same files.

    It is the model's file or folder name plus a short hash of its config and weight
    file sizes; adapters record it so one trained on another base is refused.
    """
    return base_model_source(settings).model_id


def _fingerprint(folder: Path, gguf_file: str | None) -> str:
    digest = hashlib.sha256()
    if gguf_file:
        name = gguf_file
        digest.update(f"{gguf_file}:{(folder / gguf_file).stat().st_size}".encode())
    else:
        name = folder.name
        digest.update((folder / "config.json").read_bytes())
        for weight in sorted(folder.iterdir()):
            if weight.suffix in _WEIGHT_SUFFIXES:
                digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return f"{name}@{digest.hexdigest()[:10]}"


def dequantised_folder(source: BaseModelSource, cache_dir: Path) -> Path:
    """Where a GGUF base's float32 safetensors copy lives (written on the first load)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", source.model_id).strip("-.") or "model"
    return cache_dir / "base-models" / safe


def load_base(settings: Settings, *, fresh: bool = False) -> tuple[object, object]:
    """``(model, tokenizer)`` of the base model, float32, in eval mode.

    The result is cached per process: callers share it and must not change its
    weights or wrap it in place (peft injects layers into the model it wraps).
    ``fresh=True`` returns a private copy, loaded from the safetensors cache.
    """
    source = base_model_source(settings)
    if fresh:
        return _load(source, settings.cache_dir)
    with _load_lock:
        if source.key not in _loaded:
            _loaded[source.key] = _load(source, settings.cache_dir)
        return _loaded[source.key]


def _load(source: BaseModelSource, cache_dir: Path) -> tuple[object, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = source.folder
    if source.gguf_file:
        cached = dequantised_folder(source, cache_dir)
        if not (cached / "config.json").is_file():
            _dequantise_to_cache(source, cached)
        folder = cached

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    _prepare_tokenizer(tokenizer, model, source)
    logger.info(
        "loaded base model %s from %s in %.2f s",
        source.model_id,
        folder,
        time.perf_counter() - started,
    )
    return model, tokenizer


def _dequantise_to_cache(source: BaseModelSource, cached: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    logger.info("dequantising %s to float32 (once; cached under %s)", source.gguf_file, cached)
    model = AutoModelForCausalLM.from_pretrained(
        source.folder, gguf_file=source.gguf_file, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file)
    loaded_s = time.perf_counter() - started

    # save_pretrained refuses a model that still carries the GGUF quantizer marks,
    # although its weights are plain float32 tensors by now.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not model.config.architectures:
        model.config.architectures = [type(model).__name__]

    # Write to a sibling temp folder and rename, so an interrupted save never
    # leaves a half-written cache that a later process would trust.
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}-", dir=cached.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, cached)
        except OSError:
            if not (cached / "config.json").is_file():  # not a concurrent writer's result
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "dequantised %s in %.1f s, cached in %.1f s total",
        source.gguf_file,
        loaded_s,
        time.perf_counter() - started,
    )


def _prepare_tokenizer(tokenizer: object, model: object, source: BaseModelSource) -> None:
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"the tokenizer of {source.model_id} has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so reusing eos is safe.
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if not tokenizer.chat_template:
        raise ConfigError(
            f"the base model {source.model_id} has no chat template; point "
            "models.generator.path (or training.base_model) at an instruct/chat model"
        )
    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "ping"}], add_generation_prompt=True, tokenize=False
        )
    except Exception as exc:  # a template error names nothing useful on its own
        raise ConfigError(f"the chat template of {source.model_id} fails to render: {exc}") from exc
