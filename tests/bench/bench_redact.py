"""Redaction recall per kind and false positives on the insurance calls (`make bench`).

The labelled set (data/labels/redaction/insurance-pii.jsonl: rows and tag counts, no
text) marks where the corpus removed personal data; seeded synthetic values go back in
those places, decoy prices, dates and times in the places of the corpus's other numeric
tags, and redaction runs over the lot. Throughput is measured against a baseline in the
same process: a plain pass that only scans each message for digits and '@'.
"""

from __future__ import annotations

import re
import time

import pytest

from rag.redact import find_personal_data
from tests.conftest import require_shared_data
from tests.rag.test_redact import NAMES, build_redaction_set, score_redaction


@pytest.mark.real_data
def test_bench_redaction_recall(bench_report) -> None:
    require_shared_data()
    samples, clean = build_redaction_set()
    score = score_redaction(samples, clean)
    for kind, recall in score.recall.items():
        bench_report(
            f"redaction recall {kind}", recall, "share", note=f"n={score.counts[kind]} values"
        )
    bench_report(
        "redaction false positives, untouched messages",
        score.fp_token_rate,
        "share of tokens",
        note=f"{score.clean_messages} messages, {score.fp_message_rate:.4f} of them altered",
    )
    bench_report(
        "redaction false positives, decoy numbers",
        score.decoy_fp_rate,
        "share of decoys",
        note=f"{score.decoys} prices/dates/times/ages; redacted: {score.decoys_redacted[:5]}",
    )

    texts = [s.text for s in samples] + clean
    probe = re.compile(r"[\d@]")
    started = time.perf_counter()
    for text in texts:
        probe.search(text)
    baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    for text in texts:
        find_personal_data(text, NAMES)
    redact_s = time.perf_counter() - started
    bench_report(
        "redaction time per message",
        redact_s / len(texts) * 1e6,
        "us",
        baseline=baseline_s / len(texts) * 1e6,
        note=f"{len(texts)} messages, {len(NAMES)} configured names; baseline = one regex probe",
    )
