"""Inputs into stored, indexed calls: discovery, parsing or transcription, redaction, indexing.

Each input is content-hashed: an input seen before is skipped, and a call whose
content did not change is left alone. One bad input is reported and skipped;
the rest of the batch goes on. For each call the index is written before the
store commits, so a crash never marks a call done whose chunks are missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from copilot.errors import CopilotError, InputError
from copilot.schemas import CallRecord, Turn
from copilot.settings import Settings
from copilot.store import Store
from rag.chunk import chunk_call
from rag.index import ChunkIndex
from rag.parse import (
    TEXT_SUFFIXES,
    is_csv_call_folder,
    parse_csv_folder,
    parse_transcript_file,
    read_sidecar,
)
from rag.redact import redact
from rag.transcribe import AUDIO_SUFFIXES

logger = logging.getLogger(__name__)

Overrides = dict[str, str]


@dataclass
class IngestReport:
    stored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_minutes: float = 0.0
    wall_s: float = 0.0


def discover(paths: list[Path]) -> Iterator[Path]:
    """Inputs under ``paths``: audio files, transcripts and CSV call folders (JSON sidecars excluded)."""
    for path in paths:
        if is_csv_call_folder(path):
            yield path
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                if is_csv_call_folder(child):
                    yield child
                elif (
                    child.is_file()
                    and _is_input(child)
                    and not any(is_csv_call_folder(p) for p in child.parents)
                ):
                    yield child
        else:
            yield path


def _is_input(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return True
    if suffix == ".json":
        return not any(
            path.with_suffix(s).exists() for s in AUDIO_SUFFIXES
        )  # a recording's sidecar
    return suffix in TEXT_SUFFIXES and path.name.lower() not in {
        "readme.md",
        "license",
        "source.txt",
    }


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def input_hash(path: Path, overrides: Overrides) -> str:
    marker = json.dumps(overrides, sort_keys=True).encode()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv"))
        return _digest(marker, *(p.name.encode() + p.read_bytes() for p in files))
    sidecar = path.with_suffix(".json")
    extra = (
        sidecar.read_bytes() if path.suffix.lower() in AUDIO_SUFFIXES and sidecar.is_file() else b""
    )
    return _digest(marker, path.read_bytes(), extra)


def call_hash(call_id: str, turns: list[Turn], meta: dict[str, Any]) -> str:
    payload = json.dumps(
        {"id": call_id, "turns": [t.__dict__ for t in turns], "meta": meta},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        index: ChunkIndex,
        transcriber_factory: Callable[[], Any],
    ):
        self.settings = settings
        self.store = store
        self.index = index
        self._transcriber_factory = transcriber_factory
        self._transcriber = None

    @property
    def transcriber(self):
        if self._transcriber is None:
            self._transcriber = self._transcriber_factory()
        return self._transcriber

    def run(
        self, paths: list[Path], overrides: Overrides | None = None, show_progress: bool = False
    ) -> IngestReport:
        overrides = {k: v for k, v in (overrides or {}).items() if v}
        report = IngestReport()
        started = time.perf_counter()
        inputs = list(discover([Path(p) for p in paths]))
        for path in tqdm(inputs, desc="ingest", unit="input", disable=not show_progress):
            try:
                self._ingest_one(path, overrides, report)
            except CopilotError as exc:
                logger.error("skipped %s: %s", path, exc)
                report.failed.append((str(path), str(exc)))
            except Exception as exc:  # one odd input must never end the batch
                logger.exception("skipped %s after an unexpected error", path)
                report.failed.append((str(path), f"unexpected error: {exc}"))
        report.wall_s = round(time.perf_counter() - started, 2)
        logger.info(
            "ingest: %d calls stored, %d unchanged, %d inputs failed, %.1f min of audio in %.1f s",
            len(report.stored),
            len(report.unchanged),
            len(report.failed),
            report.audio_minutes,
            report.wall_s,
        )
        return report

    def _ingest_one(self, path: Path, overrides: Overrides, report: IngestReport) -> None:
        if not path.exists():
            raise InputError(f"{path} does not exist; check the path")
        if path.is_file() and path.stat().st_size == 0:
            raise InputError(f"{path} is empty; nothing to ingest")
        if path.is_file() and not _is_input(path):
            raise InputError(
                f"{path} has an unsupported type '{path.suffix}'; use audio ({', '.join(sorted(AUDIO_SUFFIXES))}) "
                f"or a transcript ({', '.join(sorted(TEXT_SUFFIXES))}) or a folder with messages.csv"
            )

        digest = input_hash(path, overrides)
        known = self.store.input_call_ids(digest)
        if known is not None and known and self.store.existing_call_ids(known) == set(known):
            report.unchanged.extend(known)
            return

        records = self._records(path, overrides, report)
        fresh = [r for r in records if self.store.call_hash(r.call_id) != r.content_hash]
        report.unchanged.extend(r.call_id for r in records if r not in fresh)
        for record in fresh:
            if self.store.has_call(record.call_id):
                logger.warning("call %s changed since it was stored; replacing it", record.call_id)
        self.index.replace_calls(
            {r.call_id: chunk_call(r, self.settings.index, self.settings.outcomes) for r in fresh}
        )
        self.store.save_calls(fresh, digest, str(path))
        report.stored.extend(r.call_id for r in fresh)

    def _records(self, path: Path, overrides: Overrides, report: IngestReport) -> list[CallRecord]:
        if path.is_dir():
            parsed = [(p.call_id, p.turns, p.meta, "csv") for p in parse_csv_folder(path)]
            if not parsed:
                raise InputError(f"{path}/messages.csv holds no messages")
            language = None
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            meta = read_sidecar(path)
            transcript = self.transcriber.transcribe(path)
            meta.setdefault("duration_s", transcript.duration_s)
            report.audio_minutes += transcript.duration_s / 60
            parsed = [
                (path.stem, transcript.turns, {**meta, "language": transcript.language}, "audio")
            ]
        else:
            call = parse_transcript_file(path)
            parsed = [(call.call_id, call.turns, call.meta, "transcript")]

        records = []
        for call_id, turns, meta, kind in parsed:
            meta = {**meta, **overrides}
            turns = [replace(t, text=redact(t.text)) for t in turns]
            language = meta.pop("language", None)
            extra = meta.pop("extra", {}) or {}
            known = {
                k: meta.pop(k)
                for k in ("outcome", "account_id", "rep_id", "deal_id", "date", "duration_s")
                if k in meta
            }
            extra.update(meta)  # anything else the source carried stays with the call
            if known.get("duration_s") is None and turns:
                known["duration_s"] = turns[-1].end
            records.append(
                CallRecord(
                    call_id=str(call_id),
                    turns=turns,
                    source=str(path),
                    source_kind=kind,
                    content_hash=call_hash(str(call_id), turns, {**known, **extra}),
                    language=language,
                    extra=extra,
                    **{
                        k: (str(v) if k != "duration_s" and v is not None else v)
                        for k, v in known.items()
                    },
                )
            )
        return records
