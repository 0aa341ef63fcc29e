"""A 3-hour stereo call goes through the whole ingest, with progress, within the limit.

Built at run time by tiling the repo's own sample recording to exactly 3 hours
(8 kHz stereo FLAC, about 10 minutes to ingest on 2 cores). Run alone with
`make bench ARGS="-k long_call"`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import soundfile

from copilot.settings import load_settings
from serve.service import CopilotService
from tests.conftest import SAMPLE

THREE_HOURS_S = 3 * 3600


def tile_to(source: Path, target: Path, seconds: float) -> Path:
    audio, rate = soundfile.read(str(source), dtype="int16", always_2d=True)
    frames = int(seconds * rate)
    with soundfile.SoundFile(
        str(target), "w", samplerate=rate, channels=audio.shape[1], format="FLAC"
    ) as out:
        written = 0
        while written < frames:
            block = audio[: frames - written]
            out.write(block)
            written += len(block)
    return target


@pytest.fixture(scope="module")
def three_hour_call(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    return tile_to(SAMPLE / "sample-call-01.flac", folder / "three-hour-call.flac", THREE_HOURS_S)


def test_three_hour_call_is_stored_with_progress(three_hour_call, tmp_path, caplog, bench_report):
    service = CopilotService(load_settings(data_dir=tmp_path / "data"))
    caplog.set_level(logging.INFO, logger="rag.transcribe")

    started = time.perf_counter()
    report = service.ingest([three_hour_call])
    wall_s = time.perf_counter() - started

    assert report.failed == [] and report.stored == ["three-hour-call"]
    call = service.transcript("three-hour-call")
    assert call.duration_s == pytest.approx(THREE_HOURS_S, abs=1)
    assert call.turns[-1].end > THREE_HOURS_S - 60  # transcribed to the end, not truncated
    progress = [
        r.getMessage()
        for r in caplog.records
        if "transcribed" in r.getMessage() and " of " in r.getMessage()
    ]
    assert len(progress) >= 30  # every 5 minutes of audio, on each channel
    repeats = THREE_HOURS_S / soundfile.info(str(SAMPLE / "sample-call-01.flac")).duration
    bench_report(
        "3-hour stereo call: ingest wall time", wall_s, "s", note=f"{len(call.turns)} turns"
    )
    bench_report("3-hour stereo call: real-time factor", wall_s / THREE_HOURS_S, "")
    bench_report(
        "3-hour stereo call: turns per repeat of the sample", len(call.turns) / repeats, "turns"
    )


def test_limit_refuses_before_decoding(three_hour_call, tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    settings = settings.model_copy(
        update={"audio": settings.audio.model_copy(update={"max_seconds": 7200})}
    )
    report = CopilotService(settings).ingest([three_hour_call])
    assert report.stored == []
    ((path, reason),) = report.failed
    assert "10800.0 s long, over the limit of 7200 s" in reason
