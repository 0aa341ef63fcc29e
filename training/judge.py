"""Judging an adapter against its base model, on calls the adapter never trained on.

    evaluation = evaluate_adapter(settings, registry.get(name), store.objections(), limit=24)
    save_evaluation(evaluation, adapter)  # <adapter>/evaluation.json, read back by the UI

Two questions, two measures:

1. Does the adapter predict what reps said in won calls better? The response loss
   (nats per reply token) on the adapter's own held-out calls, the split recorded
   in ``copilot_adapter.json``, with the adapter disabled (base) and enabled.
2. Do its replies read more like replies from won calls than from lost ones? For
   held-out objections, the base model and the adapter each reply (greedy, no
   retrieved references, so the model is judged and not the retrieval); a reply's
   margin is its mean cosine similarity to its k nearest real replies from
   positive-outcome calls minus that to its k nearest from negative-outcome calls.
   The gain per objection is margin(adapter) - margin(base), reported with a
   bootstrap interval, and the share of objections the adapter wins with a Wilson
   interval.

The real replies compared against come only from calls the adapter never trained
on (and never from the objection's own call): otherwise an adapter that merely
reproduces its training replies would look won-like without having learnt
anything that carries over.
"""

from __future__ import annotations

import json
import logging
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from copilot.errors import ConfigError, InputError, StateError
from copilot.schemas import Objection
from copilot.settings import Settings, TrainingSettings
from training.dataset import SftExample, build_examples, tokenize_example
from training.evaluate import perplexity, response_loss
from training.model import base_model_id, load_base
from training.registry import METADATA_FILE, AdapterInfo, write_json_atomic

if TYPE_CHECKING:
    from training.generate import ReplyGenerator

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
K_NEAREST = 3  # real replies a generated reply is compared with, on each side
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 9999
MIN_OBJECTIONS = 5  # below this an interval says nothing
SHOWN_REPLIES = 3  # real won / lost replies shown beside each generated pair


@dataclass(frozen=True)
class WinLikeness:
    """How much more won-like the adapter's replies are than the base model's.

    A margin is (mean cosine similarity to the k nearest won-call replies) minus
    (the same to lost-call replies); gains are adapter margin - base margin.
    """

    mean_gain: float
    ci_low: float
    ci_high: float
    confidence: float
    share_better: float  # share of objections where the adapter's margin is strictly higher
    share_ci_low: float
    share_ci_high: float
    n: int
    base_margin: float  # mean over the objections
    adapter_margin: float
    method: str


@dataclass(frozen=True)
class SideBySide:
    """One held-out objection: both generated replies and the real replies they were judged by."""

    call_id: str
    type: str
    objection: str
    base_reply: str
    adapter_reply: str
    won_replies: list[str]  # from positive-outcome calls, nearest objection first
    lost_replies: list[str]  # from negative-outcome calls, nearest objection first
    base_margin: float
    adapter_margin: float
    outcome: str | None = None  # the outcome of the call the objection comes from
    won_call_ids: list[str] = field(default_factory=list)  # the call of each won reply
    lost_call_ids: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """An adapter judged against its base; losses are nats per response token."""

    adapter: str
    base_loss: float
    adapter_loss: float
    win_likeness: WinLikeness
    rows: list[SideBySide]
    created_at: str
    eval_examples: int = 0  # held-out examples the losses were measured on

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `copilot eval --json` prints and evaluation.json holds."""
        return {
            "base": {"loss": self.base_loss, "perplexity": perplexity(self.base_loss)},
            "adapter": {
                "name": self.adapter,
                "loss": self.adapter_loss,
                "perplexity": perplexity(self.adapter_loss),
            },
            "eval_examples": self.eval_examples,
            "created_at": self.created_at,
            "win_likeness": asdict(self.win_likeness),
            "rows": [asdict(row) for row in self.rows],
        }


def evaluate_adapter(
    settings: Settings,
    adapter: AdapterInfo,
    objections: Sequence[Objection],
    *,
    limit: int = 24,
    generator: ReplyGenerator | None = None,
    embedder: Any = None,
) -> Evaluation:
    """Judge ``adapter`` against the base model; see the module docstring.

    ``limit`` caps the held-out objections replied to (two generations each).
    ``embedder`` needs ``encode(texts) -> array``; MiniLM from the config by default.
    Every check on the inputs runs before a model is loaded.
    """
    # Checks: the adapter fits the configured base, the held-out data exists
    if limit < MIN_OBJECTIONS:
        raise InputError(
            f"limit must be at least {MIN_OBJECTIONS} held-out objections, got {limit}"
        )
    configured = base_model_id(settings)
    if adapter.base_model != configured:
        raise InputError(
            f"adapter '{adapter.name}' was trained on base model '{adapter.base_model}', but the "
            f"configured base model is '{configured}'; evaluate it with the config it was trained "
            "with (training.base_model / models.generator.path), or train a new adapter"
        )
    if not objections:
        raise StateError("no objections are stored; run `copilot objections` after ingesting")
    meta = _read_metadata(adapter)
    training = _recorded_training(settings, adapter, meta)
    examples = held_out_examples(adapter, meta, objections, training)
    trained_on = set(meta.get("train_calls") or [])
    won_refs, lost_refs, candidates = held_out_objections(adapter, objections, trained_on)
    chosen = select_objections(candidates, limit, training.seed)

    # 1. Held-out response loss, base against adapter
    started = time.perf_counter()
    base_loss, adapter_loss = _losses(settings, adapter, examples, training.max_length)
    logger.info(
        "held-out response loss on %d examples: base %.4f, adapter %s %.4f nats/token (%.1f s)",
        len(examples),
        base_loss,
        adapter.name,
        adapter_loss,
        time.perf_counter() - started,
    )

    # 2. Replies from both models
    started = time.perf_counter()
    generator = generator or _greedy_generator(settings)
    _seed(training.seed)  # in case the configured generator samples
    base_replies, adapter_replies = [], []
    for i, o in enumerate(chosen, 1):
        base_replies.append(generator.reply(o.customer_text, (), None))
        adapter_replies.append(generator.reply(o.customer_text, (), adapter))
        if i % 5 == 0 or i == len(chosen):
            logger.info("generated replies for %d/%d held-out objections", i, len(chosen))
    empty = sum(1 for r in base_replies + adapter_replies if not r.strip())
    if empty:
        logger.warning("%d generated replies were empty after cleaning; judged as empty", empty)
    logger.info("generated %d replies in %.1f s", 2 * len(chosen), time.perf_counter() - started)

    # 3. Embeddings: generated replies, real replies, and objections (to order what is shown)
    if embedder is None:
        from rag.embed import SentenceEmbedder

        embedder = SentenceEmbedder(settings)
    refs = won_refs + lost_refs
    vectors = _unit(
        np.asarray(
            embedder.encode(
                base_replies
                + adapter_replies
                + [r.reply_text for r in refs]
                + [o.customer_text for o in chosen]
                + [r.customer_text for r in refs]
            ),
            dtype=np.float64,
        )
    )
    n, m = len(chosen), len(refs)
    base_vecs, adapter_vecs = vectors[:n], vectors[n : 2 * n]
    ref_vecs = vectors[2 * n : 2 * n + m]
    objection_vecs = vectors[2 * n + m : 3 * n + m]
    ref_objection_vecs = vectors[3 * n + m :]
    won_idx = np.arange(len(won_refs))
    lost_idx = np.arange(len(won_refs), m)

    # 4. Margins per objection
    rows = []
    for i, o in enumerate(chosen):
        won_pool = _pool(refs, won_idx, o)
        lost_pool = _pool(refs, lost_idx, o)
        base_margin = won_likeness_margin(base_vecs[i], ref_vecs[won_pool], ref_vecs[lost_pool])
        adapter_margin = won_likeness_margin(
            adapter_vecs[i], ref_vecs[won_pool], ref_vecs[lost_pool]
        )
        shown_won = _nearest(won_pool, ref_objection_vecs, objection_vecs[i])
        shown_lost = _nearest(lost_pool, ref_objection_vecs, objection_vecs[i])
        rows.append(
            SideBySide(
                call_id=o.call_id,
                type=o.type,
                objection=o.customer_text,
                base_reply=base_replies[i],
                adapter_reply=adapter_replies[i],
                won_replies=[refs[j].reply_text for j in shown_won],
                lost_replies=[refs[j].reply_text for j in shown_lost],
                base_margin=base_margin,
                adapter_margin=adapter_margin,
                outcome=o.outcome,
                won_call_ids=[refs[j].call_id for j in shown_won],
                lost_call_ids=[refs[j].call_id for j in shown_lost],
            )
        )

    # 5. Statistics
    win = win_likeness(
        [r.base_margin for r in rows],
        [r.adapter_margin for r in rows],
        seed=training.seed,
        embedder_name=getattr(embedder, "model_id", type(embedder).__name__),
    )
    logger.info(
        "win-likeness of %s on %d held-out objections: mean gain %+.4f (%d%% CI %+.4f..%+.4f), "
        "more won-like on %.0f%%",
        adapter.name,
        win.n,
        win.mean_gain,
        round(100 * win.confidence),
        win.ci_low,
        win.ci_high,
        100 * win.share_better,
    )
    return Evaluation(
        adapter=adapter.name,
        base_loss=base_loss,
        adapter_loss=adapter_loss,
        win_likeness=win,
        rows=rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        eval_examples=len(examples),
    )


def save_evaluation(evaluation: Evaluation, adapter: AdapterInfo) -> None:
    """Write ``<adapter.path>/evaluation.json`` atomically (the last one wins)."""
    write_json_atomic(adapter.path / EVALUATION_FILE, evaluation.to_dict())


def load_evaluation(adapter: AdapterInfo) -> dict[str, Any] | None:
    """The saved evaluation of ``adapter`` (``Evaluation.to_dict()``), or None when there is none."""
    path = adapter.path / EVALUATION_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable evaluation %s: %s", path, exc)
        return None
    return document if isinstance(document, dict) else None


# --- the held-out data ------------------------------------------------------------


def held_out_examples(
    adapter: AdapterInfo,
    meta: dict[str, Any],
    objections: Sequence[Objection],
    training: TrainingSettings,
) -> list[SftExample]:
    """The eval examples of the adapter's recorded held-out calls, rebuilt from ``objections``.

    With the store unchanged since training this is exactly the trainer's eval set
    (same split, references and subsample).
    """
    recorded = meta.get("eval_calls")
    if not recorded:
        raise StateError(
            f"adapter '{adapter.name}' records no held-out calls (eval_calls in "
            f"{adapter.path / METADATA_FILE}); train it again to evaluate it"
        )
    recorded = set(recorded)
    train, evaluation, _, eval_calls = build_examples(objections, training)
    if set(eval_calls) == recorded:
        return evaluation

    # Today's SFT split differs from the recorded one: the store changed since training
    # (calls added, removed or relabelled), or a DPO run split won and lost calls its own
    # way. Keep the recorded held-out calls that are still here. Their references were
    # drawn from today's training side, which may hold other held-out calls, so they go.
    examples = sorted(
        (replace(e, references=()) for e in train + evaluation if e.call_id in recorded),
        key=lambda e: (e.call_id, e.objection),
    )
    present = {e.call_id for e in examples}
    missing = sorted(recorded - present)
    if not examples:
        raise StateError(
            f"none of the {len(recorded)} held-out calls of adapter '{adapter.name}' "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}) has a won-call "
            "objection/reply pair in the store any more; re-ingest those calls and run "
            "`copilot objections`, or train a new adapter on the current calls"
        )
    logger.warning(
        "adapter %s: today's split differs from the recorded one, so the loss is measured on "
        "%d of its %d held-out calls (without won replies: %s), without reference replies",
        adapter.name,
        len(present),
        len(recorded),
        ", ".join(missing) or "none",
    )
    return examples


def held_out_objections(
    adapter: AdapterInfo, objections: Sequence[Objection], trained_on: set[str]
) -> tuple[list[Objection], list[Objection], list[Objection]]:
    """(won reference replies, lost reference replies, objections that can be judged)."""
    unseen = [o for o in objections if o.call_id not in trained_on and o.polarity != 0]
    won = [o for o in unseen if o.polarity == 1 and o.reply_text.strip()]
    lost = [o for o in unseen if o.polarity == -1 and o.reply_text.strip()]
    if not lost:
        raise StateError(
            f"no rep replies from negative-outcome calls outside the training data of adapter "
            f"'{adapter.name}', so nothing tells won-like from lost-like replies: ingest lost "
            "calls (their outcome in outcomes.negative) and run `copilot objections`"
        )
    if not won:
        raise StateError(
            f"no rep replies from positive-outcome calls that adapter '{adapter.name}' did not "
            "train on: ingest more won calls and run `copilot objections`"
        )
    # An objection is judged only when both sides have replies from other calls.
    candidates = [
        o
        for o in unseen
        if o.customer_text.strip()
        and any(r.call_id != o.call_id for r in won)
        and any(r.call_id != o.call_id for r in lost)
    ]
    if len(candidates) < MIN_OBJECTIONS:
        raise StateError(
            f"only {len(candidates)} objections come from calls adapter '{adapter.name}' never "
            f"trained on (with won and lost replies from other calls to compare with); at least "
            f"{MIN_OBJECTIONS} are needed: ingest more calls, lost ones too, and run "
            "`copilot objections`"
        )
    return won, lost, candidates


def select_objections(candidates: Sequence[Objection], limit: int, seed: int) -> list[Objection]:
    """Up to ``limit`` objections, seeded, taking the types in turn so each is represented."""
    by_type: dict[str, list[Objection]] = defaultdict(list)
    for o in sorted(candidates, key=lambda o: (o.call_id, o.turn_index)):
        by_type[o.type].append(o)
    rng = random.Random(seed)
    queues = []
    for type_ in sorted(by_type):
        rng.shuffle(by_type[type_])
        queues.append(by_type[type_])
    chosen: list[Objection] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop())
    return chosen


# --- measures -----------------------------------------------------------------------


def won_likeness_margin(
    reply: np.ndarray, won: np.ndarray, lost: np.ndarray, k: int = K_NEAREST
) -> float:
    """Mean cosine similarity of ``reply`` to its k nearest rows of ``won`` minus that for ``lost``.

    ``reply`` is one vector, ``won`` and ``lost`` are matrices of real replies; a side
    with fewer than k rows uses all of them.
    """
    if len(won) == 0 or len(lost) == 0:
        raise ValueError("won_likeness_margin needs at least one won and one lost reply")
    r = _unit(np.asarray(reply, dtype=np.float64)[None, :])[0]
    return _mean_top_k(_unit(np.asarray(won, dtype=np.float64)) @ r, k) - _mean_top_k(
        _unit(np.asarray(lost, dtype=np.float64)) @ r, k
    )


def bootstrap_mean_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy.stats.bootstrap, seeded).

    Identical values have no spread to resample: the interval is the value itself.
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2 or np.ptp(data) == 0:
        return float(data.mean()), float(data.mean())
    # BCa first; its acceleration is undefined when a few values dominate, and then
    # the percentile interval still works.
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns before returning NaN for such data
            result = bootstrap(
                (data,),
                np.mean,
                confidence_level=confidence,
                n_resamples=BOOTSTRAP_RESAMPLES,
                method=method,
                rng=np.random.default_rng(seed),
            )
        low, high = result.confidence_interval.low, result.confidence_interval.high
        if np.isfinite(low) and np.isfinite(high):
            break
    return float(low), float(high)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def win_likeness(
    base_margins: Sequence[float],
    adapter_margins: Sequence[float],
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    embedder_name: str = "MiniLM",
) -> WinLikeness:
    """Summary statistics of paired margins (one pair per held-out objection)."""
    base = np.asarray(base_margins, dtype=np.float64)
    tuned = np.asarray(adapter_margins, dtype=np.float64)
    gains = tuned - base
    n = len(gains)
    better = int((gains > 0).sum())
    ci_low, ci_high = bootstrap_mean_interval(gains, confidence, seed)
    share_low, share_high = wilson_interval(better, n, confidence)
    pct = round(100 * confidence)
    return WinLikeness(
        mean_gain=float(gains.mean()),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        share_better=better / n,
        share_ci_low=share_low,
        share_ci_high=share_high,
        n=n,
        base_margin=float(base.mean()),
        adapter_margin=float(tuned.mean()),
        method=(
            f"A reply's margin is its mean cosine similarity ({embedder_name}) to its "
            f"{K_NEAREST} nearest real rep replies from positive-outcome calls minus that to its "
            f"{K_NEAREST} nearest from negative-outcome calls (same objection type when there are "
            "enough, only calls the adapter never trained on, never the objection's own call); "
            "the gain is the adapter's margin minus the base model's for the same held-out "
            f"objection (greedy replies), with a {pct}% BCa bootstrap interval of the mean and a "
            f"{pct}% Wilson interval of the share of objections where the adapter's margin is "
            "higher."
        ),
    )


# --- helpers ------------------------------------------------------------------------


def _read_metadata(adapter: AdapterInfo) -> dict[str, Any]:
    path = adapter.path / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(
            f"cannot read {path} of adapter '{adapter.name}' ({exc}); train the adapter again"
        ) from exc


def _recorded_training(
    settings: Settings, adapter: AdapterInfo, meta: dict[str, Any]
) -> TrainingSettings:
    """The training settings the adapter was made with, so the split and prompts match."""
    recorded = {
        k: v for k, v in (meta.get("training") or {}).items() if k in TrainingSettings.model_fields
    }
    try:
        return settings.with_training(recorded).training
    except ConfigError as exc:
        logger.warning(
            "adapter %s records training settings this version rejects (%s); using the "
            "configured ones, so its held-out split may differ",
            adapter.name,
            exc,
        )
        return settings.training


def _losses(
    settings: Settings, adapter: AdapterInfo, examples: Sequence[SftExample], max_length: int
) -> tuple[float, float]:
    """(base loss, adapter loss) on ``examples``, from one private copy of the base model."""
    from peft import PeftModel

    model, tokenizer = load_base(settings, fresh=True)
    rows = [tokenize_example(e, tokenizer, max_length) for e in examples]
    rows = [r for r in rows if r["response_tokens"] > 0]
    if not rows:
        raise StateError(
            f"every held-out reply of adapter '{adapter.name}' is cut off by "
            f"training.max_length={max_length}; raise max_length and train again"
        )
    tuned = PeftModel.from_pretrained(model, adapter.path)
    with tuned.disable_adapter():
        base_loss = response_loss(tuned, tokenizer, rows)
    adapter_loss = response_loss(tuned, tokenizer, rows)
    return base_loss, adapter_loss


def _greedy_generator(settings: Settings) -> ReplyGenerator:
    """A generator that decodes greedily, so a rerun judges the same replies."""
    from training.generate import ReplyGenerator

    gen = settings.models.generator
    if gen.temperature > 0:
        greedy = gen.model_copy(update={"temperature": 0.0})
        settings = settings.model_copy(
            update={"models": settings.models.model_copy(update={"generator": greedy})}
        )
    return ReplyGenerator(settings)


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _mean_top_k(similarities: np.ndarray, k: int) -> float:
    return float(np.sort(similarities)[-min(k, len(similarities)) :].mean())


def _pool(refs: Sequence[Objection], indices: np.ndarray, objection: Objection) -> np.ndarray:
    """Indices of the real replies to compare with: other calls, same type when there are k."""
    others = [i for i in indices if refs[i].call_id != objection.call_id]
    same = [i for i in others if refs[i].type == objection.type]
    return np.asarray(same if len(same) >= K_NEAREST else others, dtype=int)


def _nearest(pool: np.ndarray, objection_vecs: np.ndarray, query: np.ndarray) -> list[int]:
    """The pool's replies whose objections are nearest ``query``, up to SHOWN_REPLIES."""
    order = np.argsort(-(objection_vecs[pool] @ query), kind="stable")
    return [int(pool[j]) for j in order[:SHOWN_REPLIES]]
