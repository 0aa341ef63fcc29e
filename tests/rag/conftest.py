"""Fixtures shared by the transcription tests: one settings and one transcriber per module
(the Whisper model loads once, on first use)."""

from __future__ import annotations

import pytest

from copilot.settings import Settings, load_settings
from rag.transcribe import WhisperTranscriber


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def transcriber(settings: Settings) -> WhisperTranscriber:
    return WhisperTranscriber(settings)
