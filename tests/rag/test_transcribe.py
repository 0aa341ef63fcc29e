"""WhisperTranscriber on real recordings, on the repo's own sample, and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from copilot.errors import InputError
from copilot.schemas import Turn
from copilot.settings import Settings
from rag.metrics import speaker_attribution, speaker_time_accuracy, word_error_rate
from rag.transcribe import WhisperTranscriber, _mono_turns, _Segment, snap_to_speech

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TTS_CALLS = SHARED / "audio" / "insurance-sales-tts"
SAMPLE = REPO / "data" / "sample"


def _reference(sidecar: Path) -> list[Turn]:
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    return [Turn(t["speaker"], t["start"], t["end"], t["text"]) for t in data["turns"]]


def _text(turns: list[Turn], speaker: str | None = None) -> str:
    return " ".join(t.text for t in turns if speaker in (None, t.speaker))


# --- real data ----------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.slow
def test_tts_call_word_error_rate_and_speakers(transcriber: WhisperTranscriber) -> None:
    if not TTS_CALLS.is_dir():
        pytest.skip(f"real data not found at {TTS_CALLS} (the ../shared/data checkout)")
    reference = _reference(TTS_CALLS / "call03.json")

    transcript = transcriber.transcribe(TTS_CALLS / "call03.flac")

    # Measured with tiny.en int8, beam 1, VAD on, over all 8 TTS calls: WER 0.22-0.37
    # (mean 0.29), call03 0.221; decoding is seeded, so a rerun gives the same figure.
    # The synthetic 8 kHz voices and tiny.en's size keep it that high. 0.28 leaves room
    # for a different CPU's arithmetic while failing if a channel or the turn order is
    # lost (segments spanning the other party's replies took call03 to 0.28, call05 to 0.48).
    wer = word_error_rate(_text(reference), _text(transcript.turns))
    assert wer < 0.28, f"WER {wer:.3f} on call03"

    # Where the transcript has speech, it names the party right: 0.994-1.000 on all 8.
    attribution = speaker_attribution(reference, transcript.turns)
    assert attribution > 0.98, f"speaker attribution {attribution:.3f} on call03"

    # The product's requirement: >= 95 % of the reference speech time lies in turns of the
    # same speaker. With segment times snapped to each channel's speech regions
    # (snap_to_speech) the 8 calls measure call00 0.952, call01 0.950, call02 0.972,
    # call03 0.963, call04 0.955, call05 0.955, call06 0.997 (rep only), call07 0.972;
    # before snapping 0.885-0.982, call03 0.921. What is left is not boundary error:
    # every reference sentence ends with ~0.34 s of digital silence (the TTS clip's
    # tail), which an honest turn does not cover, plus one-word replies tiny.en drops
    # ("Okay.", "Perfect.": 0.8-1.9 % of the time on call00, 01, 04, 05).
    coverage = speaker_time_accuracy(reference, transcript.turns)
    assert coverage >= 0.95, f"speaker-time accuracy {coverage:.3f} on call03"
    # The reverse: transcript time the reference confirms; 0.895-0.963 on the 8, call03
    # 0.939 (0.946 before snapping). Turns bridge the pauses between a party's sentences,
    # which the reference leaves out, so it sits below the coverage.
    precision = speaker_time_accuracy(transcript.turns, reference)
    assert precision > 0.90, f"transcript time confirmed by the reference {precision:.3f}"

    assert transcript.language == "en"
    assert abs(transcript.duration_s - 100.31) < 0.1


# --- the repo's own sample ------------------------------------------------------


def test_sample_recording_words_and_sides(transcriber: WhisperTranscriber) -> None:
    reference = _reference(SAMPLE / "sample-call-01.json")

    transcript = transcriber.transcribe(SAMPLE / "sample-call-01.flac")

    rep, customer = _text(transcript.turns, "rep").lower(), _text(transcript.turns, "customer")
    # espeak-ng's voices are hard on tiny.en ("Northwind Cover" comes out as
    # "Northwindcomer"), so the check uses words it gets right on both sides.
    assert "fleet insurance" in rep and "email it today" in rep
    assert "the price" in customer.lower() and "pay now" in customer.lower()
    assert [t.speaker for t in transcript.turns] == [t.speaker for t in reference]
    assert speaker_time_accuracy(reference, transcript.turns) > 0.9
    starts = [t.start for t in transcript.turns]
    assert starts == sorted(starts)


def test_mono_recording_gets_turns_from_the_heuristic(
    transcriber: WhisperTranscriber, tmp_path: Path
) -> None:
    stereo, rate = soundfile.read(SAMPLE / "sample-call-02.flac", dtype="float32")
    path = tmp_path / "mono.wav"
    soundfile.write(path, stereo.sum(axis=1), rate)

    transcript = transcriber.transcribe(path)

    assert transcript.turns[0].speaker == "rep"
    assert "liability" in _text(transcript.turns).lower()
    assert abs(transcript.duration_s - 31.0) < 0.05


def test_mono_heuristic_alternates_at_long_pauses() -> None:
    segments = [
        _Segment(0.0, 2.0, "Hello, this is Dana."),
        _Segment(2.3, 4.0, "Do you have a minute?"),  # 0.3 s pause: still the rep
        _Segment(5.0, 6.0, "Sure."),  # 1.0 s pause: the customer
        _Segment(7.5, 9.0, "Great."),  # the rep again
    ]
    turns = _mono_turns(segments)
    assert [(t.speaker, t.start, t.end) for t in turns] == [
        ("rep", 0.0, 4.0),
        ("customer", 5.0, 6.0),
        ("rep", 7.5, 9.0),
    ]
    assert turns[0].text == "Hello, this is Dana. Do you have a minute?"


def test_snap_to_speech_widens_to_touched_regions_only() -> None:
    regions = [(0.9, 2.1), (2.4, 3.0), (3.5, 4.0), (5.0, 6.2), (6.3, 7.0)]
    segments = [
        _Segment(1.0, 2.8, "first"),  # touches the first two regions
        _Segment(5.1, 6.35, "second"),  # touches (5.0, 6.2) and (6.3, 7.0)
        _Segment(6.9, 8.0, "third"),  # the region it shares with "second" is capped
        _Segment(9.0, 9.5, "no region"),  # the VAD heard nothing: left as it is
    ]
    snapped = snap_to_speech(segments, regions)
    assert [(s.start, s.end) for s in snapped] == [
        (0.9, 3.0),  # (3.5, 4.0) holds none of its words, so it is not taken
        (5.0, 6.9),  # stops where the next segment on the channel starts
        (6.9, 8.0),  # never reaches back over "second", never shrinks
        (9.0, 9.5),
    ]
    assert [s.text for s in snapped] == [s.text for s in segments]
    assert snap_to_speech([], regions) == []
    assert snap_to_speech(segments, []) == segments


# --- bad input --------------------------------------------------------------------


def test_empty_file_is_refused(transcriber: WhisperTranscriber, tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.wav.*not a readable audio file"):
        transcriber.transcribe(path)


def test_text_file_named_wav_is_refused(transcriber: WhisperTranscriber, tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("Rep: hello\nCustomer: hi\n", encoding="utf-8")
    with pytest.raises(InputError, match="notes.wav.*convert it"):
        transcriber.transcribe(path)


def test_too_long_recording_is_refused_before_decoding(settings: Settings, tmp_path: Path) -> None:
    short_limit = settings.model_copy(
        update={"audio": settings.audio.model_copy(update={"max_seconds": 1})}
    )
    transcriber = WhisperTranscriber(short_limit)
    with pytest.raises(InputError, match=r"sample-call-02.flac is 31.0 s long.*limit of 1 s"):
        transcriber.transcribe(SAMPLE / "sample-call-02.flac")
    assert transcriber._model is None  # refused from the header, before any model work


def test_silence_is_refused(transcriber: WhisperTranscriber, tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    soundfile.write(path, np.zeros((16000 * 2, 2), dtype=np.float32), 16000)
    with pytest.raises(InputError, match="no speech found in .*silence.flac"):
        transcriber.transcribe(path)


# --- the metrics ------------------------------------------------------------------


def test_metrics_on_hand_made_turns() -> None:
    reference = [Turn("rep", 0.0, 2.0, "Hello, there!"), Turn("customer", 2.0, 4.0, "Hi.")]
    half_wrong = [Turn("rep", 0.0, 3.0, "hello there"), Turn("customer", 3.0, 4.0, "hi")]

    assert word_error_rate("Hello, there!", "hello there") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5
    assert speaker_time_accuracy(reference, reference) == 1.0
    assert speaker_time_accuracy(reference, half_wrong) == pytest.approx(0.75)
    assert speaker_time_accuracy(reference, []) == 0.0
    assert speaker_attribution(reference, half_wrong) == pytest.approx(0.75)
    assert speaker_attribution(reference, reference[:1]) == 1.0
