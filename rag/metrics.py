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


def _spans(turns: list[Turn], speaker: str | None) -> list[tuple[float, float]]:
    return _union((t.start, t.end) for t in turns if speaker in (None, t.speaker))


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(
        max(0.0, min(a_end, b_end) - max(a_start, b_start))
        for a_start, a_end in a
        for b_start, b_end in b
    )


def speaker_time_accuracy(reference: list[Turn], hypothesis: list[Turn]) -> float:
    """Share of the reference's speech time that hypothesis turns of the same speaker cover.

    1.0 means every second a party speaks in the reference lies inside one of
    that party's hypothesis turns. It mixes two errors: speech the hypothesis
    missed (no turn at all) and speech given to the wrong party;
    ``speaker_attribution`` separates the second. It is recall-like: a
    hypothesis that gave every second to both speakers would also score 1.0,
    so read it beside the reverse call, ``speaker_time_accuracy(hypothesis,
    reference)``, the share of hypothesis time the reference confirms.
    """
    speakers = {t.speaker for t in reference}
    # Per speaker, so crosstalk counts once for each party talking.
    total = sum(end - start for s in speakers for start, end in _spans(reference, s))
    if total <= 0:
        raise ValueError("the reference turns hold no speech time; the accuracy is undefined")
    covered = sum(_overlap(_spans(reference, s), _spans(hypothesis, s)) for s in speakers)
    return covered / total


def speaker_attribution(reference: list[Turn], hypothesis: list[Turn]) -> float:
    """Of the reference speech time that any hypothesis turn covers, the share it labels right.

    Unlike ``speaker_time_accuracy`` it ignores speech the transcriber missed, so
    it measures the speaker assignment alone (channel mapping, mono heuristic).
    """
    anyone = _overlap(_spans(reference, None), _spans(hypothesis, None))
    if anyone <= 0:
        raise ValueError("the hypothesis covers none of the reference speech; nothing to judge")
    speakers = {t.speaker for t in reference}
    right = sum(_overlap(_spans(reference, s), _spans(hypothesis, s)) for s in speakers)
    return min(1.0, right / anyone)


def best_mapping_attribution(reference: list[Turn], hypothesis: list[Turn]) -> float:
    """``speaker_attribution`` under the better of the two ways to map rep/customer onto
    the reference's two speakers: a mono clustering has groups, not names."""
    names = sorted({t.speaker for t in reference}) + ["(nobody)"]
    scores = []
    for first, second in ((names[0], names[1]), (names[1], names[0])):
        mapping = {"rep": first, "customer": second}
        mapped = [Turn(mapping[t.speaker], t.start, t.end, t.text) for t in hypothesis]
        scores.append(speaker_attribution(reference, mapped))
    return max(scores)
