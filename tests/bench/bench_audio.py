"""Audio figures (`make bench`): ingest overhead over bare faster-whisper and real-time
factor, word error rate on real phone calls, the mono speaker methods, and resident memory
over a long batch. Every figure reads ``../shared/data/audio`` and skips without it.

Run alone: ``.venv/bin/python -m pytest -q tests/bench/bench_audio.py``. The memory bench
transcribes ``BENCH_AUDIO_RECORDINGS`` recordings (default 50, about 6 minutes).
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from copilot.schemas import Turn
from copilot.settings import Settings, load_settings, resolve_model_path
from rag.metrics import best_mapping_attribution, word_error_rate
from rag.transcribe import WhisperTranscriber

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO.parent / "shared" / "data" / "audio"
TTS_CALLS = AUDIO / "insurance-sales-tts"
PHONE_STEREO = AUDIO / "phone-stereo"
PHONE_MONO = AUDIO / "phone-mono" / "two_party_phone_sample"


def _require(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (the ../shared/data checkout)")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(data_dir=tmp_path_factory.mktemp("bench-audio"))


def _bare_transcription_s(files: list[Path], settings: Settings) -> float:
    """faster-whisper alone, with the same options as the product: load, decode, transcribe
    each channel, consume the words."""
    from faster_whisper import WhisperModel, decode_audio

    options = settings.models.transcriber
    started = time.perf_counter()
    model = WhisperModel(
        str(resolve_model_path("transcriber", options.path)),
        device="cpu",
        compute_type=options.compute_type,
        cpu_threads=2,
    )
    for path in files:
        for channel in decode_audio(str(path), sampling_rate=16000, split_stereo=True):
            pieces, _ = model.transcribe(
                channel,
                beam_size=options.beam_size,
                vad_filter=options.vad_filter,
                condition_on_previous_text=False,
                word_timestamps=True,
            )
            _ = [w for piece in pieces for w in piece.words or []]
    return time.perf_counter() - started


def test_ingest_overhead_and_real_time_factor(bench_report, tmp_path: Path) -> None:
    _require(TTS_CALLS)
    from serve.service import CopilotService

    files = sorted(TTS_CALLS.glob("*.flac"))
    audio_s = sum(json.loads(f.with_suffix(".json").read_text())["seconds"] for f in files)
    service = CopilotService(load_settings(data_dir=tmp_path / "data"))

    # Bare first, full second: the OS file cache is warm for both, and each pays its own
    # model loads (the full ingest also loads the embedder and opens the index).
    bare_s = _bare_transcription_s(files, service.settings)
    started = time.perf_counter()
    report = service.ingest([TTS_CALLS])
    full_s = time.perf_counter() - started

    assert not report.failed, report.failed
    assert len(report.stored) == len(files)
    bench_report(
        "audio ingest wall time, 8 stereo TTS calls",
        full_s,
        "s",
        baseline=bare_s,
        note="decode+transcribe+redact+embed+index vs bare faster-whisper; target ratio < 1.15",
    )
    bench_report(
        "audio ingest real-time factor",
        full_s / audio_s,
        "x",
        note=f"{audio_s:.0f} s of audio (2 channels each), 2-core CPU",
    )


def _phone_reference(stem: str) -> str:
    words = json.loads((PHONE_STEREO / "text" / f"{stem}.json").read_text(encoding="utf-8"))
    return " ".join(w["word"] for w in sorted(words, key=lambda w: w["start"]))


def test_word_error_rate_on_real_phone_calls(bench_report, settings: Settings) -> None:
    _require(PHONE_STEREO)
    transcriber = WhisperTranscriber(settings)
    per_call = {}
    for path in sorted((PHONE_STEREO / "audio").glob("*.flac")):
        transcript = transcriber.transcribe(path)
        hypothesis = " ".join(t.text for t in transcript.turns)
        per_call[path.stem] = word_error_rate(_phone_reference(path.stem), hypothesis)
    bench_report(
        "WER, phone-stereo real calls",
        float(np.mean(list(per_call.values()))),
        "",
        note="mean of " + ", ".join(f"{k} {v:.3f}" for k, v in per_call.items()),
    )


def test_mono_speaker_attribution(bench_report, settings: Settings, tmp_path: Path) -> None:
    """Both mono methods on the phone-mono sample and on the stereo calls mixed to mono."""
    _require(PHONE_MONO)
    import soundfile

    cases: list[tuple[Path, list[Turn]]] = []
    rttm = (PHONE_MONO / "sample.rttm").read_text(encoding="utf-8").splitlines()
    rows = [line.split() for line in rttm]
    cases.append(
        (
            PHONE_MONO / "sample.wav",
            [Turn(r[7], float(r[3]), float(r[3]) + float(r[4]), "") for r in rows],
        )
    )
    for path in sorted(TTS_CALLS.glob("*.flac")) if TTS_CALLS.is_dir() else []:
        turns = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["turns"]
        cases.append((path, [Turn(t["speaker"], t["start"], t["end"], "") for t in turns]))
    for path in sorted((PHONE_STEREO / "audio").glob("*.flac")) if PHONE_STEREO.is_dir() else []:
        lines = (PHONE_STEREO / "text" / f"{path.stem}.turns.txt").read_text().splitlines()
        parts = [line.split("\t") for line in lines]
        cases.append((path, [Turn(p[0], float(p[1]), float(p[2]), "") for p in parts]))

    alternate_settings = settings.model_copy(
        update={"audio": settings.audio.model_copy(update={"mono_speakers": "alternate"})}
    )
    cluster, alternate = WhisperTranscriber(settings), WhisperTranscriber(alternate_settings)
    alternate._model = cluster.model
    scores: dict[str, tuple[float, float]] = {}
    for path, reference in cases:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        mono = tmp_path / f"{path.stem}-mono.wav"
        soundfile.write(mono, audio.mean(axis=1), rate)
        scores[path.stem] = (
            best_mapping_attribution(reference, alternate.transcribe(mono).turns),
            best_mapping_attribution(reference, cluster.transcribe(mono).turns),
        )
    before, after = scores["sample"]
    bench_report(
        "mono speaker attribution, phone-mono sample",
        after,
        "",
        baseline=before,
        note="cluster vs alternate; best rep/customer mapping onto the RTTM speakers",
    )
    means = np.mean(list(scores.values()), axis=0)
    bench_report(
        f"mono speaker attribution, {len(scores)} recordings mixed to mono",
        float(means[1]),
        "",
        baseline=float(means[0]),
        note="cluster vs alternate; "
        + ", ".join(f"{k} {a:.2f}->{c:.2f}" for k, (a, c) in scores.items()),
    )


def test_resident_memory_over_a_long_batch(bench_report, settings: Settings) -> None:
    _require(TTS_CALLS)
    import psutil

    count = int(os.environ.get("BENCH_AUDIO_RECORDINGS", "50"))
    files = sorted(TTS_CALLS.glob("*.flac"))
    process = psutil.Process()
    transcriber = WhisperTranscriber(settings)
    after_five = peak = 0
    for i in range(count):
        transcript = transcriber.transcribe(files[i % len(files)])
        # Keep what a batch keeps (the turns go on to the store), so a leak in them shows.
        pickle.dumps(transcript)
        rss = process.memory_info().rss
        peak = max(peak, rss)
        if i == 4:
            after_five = rss
    final = process.memory_info().rss
    mib = 2**20
    bench_report(
        f"resident memory after {count} recordings",
        final / mib,
        "MiB",
        baseline=after_five / mib,
        note=f"vs after the first 5 (target ratio <= 1.10); peak {peak / mib:.0f} MiB",
    )
