"""Transcript quality measures shared by the tests and the benches.

``word_error_rate`` compares texts after the same normalisation on both sides
(case folded, punctuation removed), so it measures recognition, not formatting.
``speaker_time_accuracy`` measures attribution: how much reference speech time
is covered by hypothesis turns of the same speaker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import jiwer

from copilot.schemas import Turn

_PUNCT = re.compile(r"[^\w\s]")  # \w is Unicode-aware, so non-Latin words survive


def normalise_text(text: str) -> str:
    """Case-folded words without punctuation; "I'm" -> "im", "ten-year" -> "tenyear"."""
    return " ".join(_PUNCT.sub("", text.casefold()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of ``hypothesis`` against ``reference`` after ``normalise_text`` on both.

    NOTE: words are split on whitespace, which suits English; for Chinese, compare
    characters (a character error rate) instead.
    """
    ref = normalise_text(reference)
    if not ref:
        raise ValueError("the reference text is empty after normalisation; WER is undefined")
    return float(jiwer.wer(ref, normalise_text(hypothesis)))


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def speaker_time_accuracy(reference: list[Turn], hypothesis: list[Turn]) -> float:
    """Share of the reference's speech time that hypothesis turns of the same speaker cover.

    1.0 means every second a party speaks in the reference lies inside one of
    that party's hypothesis turns. It is recall-like: a hypothesis that gave
    every second to both speakers would also score 1.0, so read it beside the
    reverse call, ``speaker_time_accuracy(hypothesis, reference)``, which is
    the share of hypothesis time the reference confirms (hypothesis turns span
    short pauses, so that figure sits somewhat lower even when labels are right).
    """
    total = covered = 0.0
    for speaker in {t.speaker for t in reference}:
        ref_spans = _union((t.start, t.end) for t in reference if t.speaker == speaker)
        hyp_spans = _union((t.start, t.end) for t in hypothesis if t.speaker == speaker)
        total += sum(end - start for start, end in ref_spans)
        for r_start, r_end in ref_spans:
            for h_start, h_end in hyp_spans:
                covered += max(0.0, min(r_end, h_end) - max(r_start, h_start))
    if total <= 0:
        raise ValueError("the reference turns hold no speech time; the accuracy is undefined")
    return covered / total
