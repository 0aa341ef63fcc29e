"""Objection detection on the labelled set (data/labels/objections/, text from ../shared/data):
precision and recall per type, micro and macro, on the held-out split, for the detector
before the set existed (the committed version below, loaded from git), the lexicon
alone, the current detector, and a logistic-regression head trained on the tuning split
(a reference for what a learned classifier over MiniLM gets; it is not shipped). Then
detection speed against bare embedding of the same turns.

Run: .venv/bin/python -m pytest -q -s tests/bench/bench_objections.py -o python_files='bench_*.py'
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import numpy as np
import pytest

from copilot.objections import TYPES, ObjectionDetector, lexicon_types
from copilot.settings import ObjectionSettings, load_settings
from tests.conftest import REPO
from tests.copilot.test_objections import (
    LabelledTurn,
    Scores,
    is_held_out,
    load_labelled_set,
    predict,
    score,
)

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

# The detector as it was before the labelled set existed (the commit this work started from).
BEFORE_COMMIT = "bf062e29c3e80bfac54ac0711e6560093b58f2be"


@pytest.fixture(scope="module")
def embed():
    from rag.embed import SentenceEmbedder

    embedder = SentenceEmbedder(load_settings(data_dir="/tmp/copilot-bench-unused"))
    embedder.encode(["warm up"])
    return embedder.encode


@pytest.fixture(scope="module")
def split() -> tuple[list[LabelledTurn], list[LabelledTurn]]:
    turns = load_labelled_set()
    return [t for t in turns if not is_held_out(t.group)], [
        t for t in turns if is_held_out(t.group)
    ]


def _before_module():
    try:
        source = subprocess.run(
            ["git", "show", f"{BEFORE_COMMIT}:copilot/objections.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot read the earlier detector from git commit {BEFORE_COMMIT}: {exc}")
    spec = importlib.util.spec_from_loader("objections_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    exec(compile(source, f"{BEFORE_COMMIT[:8]}:copilot/objections.py", "exec"), module.__dict__)
    return module


def _report(bench_report, name: str, scores: Scores, n: int, before: Scores | None = None) -> None:
    note = f"held-out split, {n} customer turns"
    pairs = (
        ("micro precision", scores.micro_precision, before and before.micro_precision),
        ("micro recall", scores.micro_recall, before and before.micro_recall),
        ("macro precision", scores.macro_precision, before and before.macro_precision),
        ("macro recall", scores.macro_recall, before and before.macro_recall),
        ("detection precision", scores.detect_precision, before and before.detect_precision),
        ("detection recall", scores.detect_recall, before and before.detect_recall),
    )
    for label, value, baseline in pairs:
        bench_report(f"objections {name}: {label}", value, "", baseline=baseline or None, note=note)


def _memo(embed):
    """The same vectors for the same text across detectors: the accuracy figures need
    each turn embedded once, not once per detector (the speed figure embeds afresh)."""
    cache: dict[str, np.ndarray] = {}

    def encode(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, embed(missing), strict=True))
        return np.stack([cache[t] for t in texts])

    return encode


def test_precision_and_recall_before_and_after(bench_report, embed, split) -> None:
    tuning, held_out = split
    embed = _memo(embed)
    gold = [t.label for t in held_out]

    # Before: the committed detector with its own defaults
    old = _before_module()
    old_detector = old.ObjectionDetector(ObjectionSettings(), embed=embed)
    before = score(
        gold, [d.type if d else "none" for d in old_detector.detect([t.text for t in held_out])]
    )
    _report(bench_report, "before", before, len(held_out))

    # The lexicon alone, then the lexicon with the embedding classifier
    lexicon_only = score(gold, predict(ObjectionDetector(ObjectionSettings()), held_out))
    _report(bench_report, "lexicon only", lexicon_only, len(held_out))
    after = score(gold, predict(ObjectionDetector(ObjectionSettings(), embed=embed), held_out))
    _report(bench_report, "after", after, len(held_out), before=before)
    for t in TYPES:
        precision, recall, count = after.per_type[t]
        was_p, was_r, _ = before.per_type[t]
        bench_report(
            f"objections after: {t} precision / recall",
            precision,
            "",
            note=f"recall {recall:.2f}; before {was_p:.2f} / {was_r:.2f}; {count} held-out turns",
        )

    # Reference: a learned head on the tuning split (C fixed at 10, balanced classes)
    from sklearn.linear_model import LogisticRegression

    def features(turns: list[LabelledTurn]) -> np.ndarray:
        cues = [[float(t in lexicon_types(turn.text)) for t in TYPES] for turn in turns]
        return np.hstack([embed([turn.text for turn in turns]), np.array(cues)])

    head = LogisticRegression(C=10, max_iter=2000, class_weight="balanced")
    head.fit(features(tuning), [t.label for t in tuning])
    learned = score(gold, list(head.predict(features(held_out))))
    _report(bench_report, "logistic head (reference)", learned, len(held_out))

    assert after.micro_precision > before.micro_precision
    assert after.micro_recall > before.micro_recall


def test_detection_speed_against_bare_embedding(bench_report, embed, split) -> None:
    texts = [t.text for part in split for t in part]
    detector = ObjectionDetector(ObjectionSettings(), embed=embed)
    detector.detect(texts[:4])  # embeds the prototypes once

    started = time.perf_counter()
    embed(texts)
    bare_s = time.perf_counter() - started
    started = time.perf_counter()
    detector.detect(texts)
    detect_s = time.perf_counter() - started

    per_turn_ms = 1000 * detect_s / len(texts)
    bench_report(
        "objections: detection time per customer turn",
        per_turn_ms,
        "ms",
        baseline=1000 * bare_s / len(texts),
        note=f"{len(texts)} turns; baseline = embedding the same turns alone",
    )
