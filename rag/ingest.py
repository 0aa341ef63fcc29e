"""Inputs into stored, indexed calls: discovery, parsing or transcription, redaction, indexing.

Each input is content-hashed: an input seen before is skipped, and a call whose
content did not change is left alone. One bad input is reported and skipped;
the rest of the batch goes on.

A run is a batch in the store's job table, one job per input, recorded before
any work. For each input the index is written first (replacing the call's
chunks by call id) and the store then commits the calls together with the job's
"done" mark, so a process killed at any point leaves nothing half-stored: an
input is either done, or redone by the next run of the same command, and the
redo overwrites whatever chunks the dead process had written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from copilot.errors import CopilotError, InputError
from copilot.importers import is_account_folder
from copilot.schemas import CallRecord, Chunk, Turn
from copilot.settings import Settings
from copilot.store import IngestJob, Store
from rag.chunk import chunk_call
from rag.craigslist import craigslist_files, is_craigslist_folder, parse_craigslist_folder
from rag.index import ChunkIndex
from rag.parse import (
    TEXT_SUFFIXES,
    is_csv_call_folder,
    parse_csv_folder,
    parse_transcript_file,
    read_sidecar,
)
from rag.persuasion import is_persuasion_folder, parse_persuasion_folder, persuasion_files
from rag.redact import raw_turn_dicts, redact_turns
from rag.transcribe import AUDIO_SUFFIXES

logger = logging.getLogger(__name__)

Overrides = dict[str, str]


@dataclass
class IngestReport:
    """What one run did. ``stored``/``unchanged`` are call ids; ``files_*`` count inputs."""

    stored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    audio_minutes: float = 0.0
    wall_s: float = 0.0
    batch_id: str = ""
    resumed: bool = False  # an earlier run of the same inputs was killed and is continued here
    files_done: int = 0
    files_unchanged: int = 0
    files_failed: int = 0

    def summary(self) -> str:
        """The closing line a person reads after a batch."""
        return (
            f"ingest {'resumed' if self.resumed else 'batch'} {self.batch_id}: "
            f"{self.files_done} files done, {self.files_unchanged} unchanged, "
            f"{self.files_failed} failed; {len(self.stored)} calls stored; "
            f"{self.audio_minutes:.1f} min of audio; {len(self.failed)} errors; "
            f"{self.wall_s:.1f} s"
        )


def is_folder_input(path: Path) -> bool:
    """A folder read as one input: a CSV message export, a Persuasion for Good folder or a
    CraigslistBargain folder. Nothing inside it is an input of its own (its readmes are not
    transcripts)."""
    return is_csv_call_folder(path) or is_persuasion_folder(path) or is_craigslist_folder(path)


def discover(paths: list[Path]) -> Iterator[Path]:
    """Inputs under ``paths``: audio files, transcripts and call folders (JSON sidecars excluded)."""
    for path in paths:
        if is_folder_input(path):
            yield path
        elif path.is_dir():
            children = sorted(path.rglob("*"))
            skipped = [d for d in [path, *children] if is_account_folder(d)]
            for folder in skipped:
                logger.info(
                    "skipped %s: it holds account data; import it with `copilot accounts import`",
                    folder,
                )
            for child in children:
                if any(folder in child.parents for folder in skipped):
                    continue
                if is_folder_input(child):
                    yield child
                elif (
                    child.is_file()
                    and _is_input(child)
                    and not any(is_folder_input(p) for p in child.parents)
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


def input_hash(path: Path) -> str:
    """The input's content (with a recording's sidecar); overrides are checked separately."""
    if path.is_dir():
        # Only the files the folder is read from: the annotated 300_* files beside the
        # persuasion dialogues do not make it a new input.
        if is_persuasion_folder(path):
            files = [p for p in persuasion_files(path) if p.is_file()]
        elif is_craigslist_folder(path):
            files = craigslist_files(path)
        else:
            files = sorted(p for p in path.glob("*.csv"))
        return _digest(*(p.name.encode() + p.read_bytes() for p in files))
    sidecar = path.with_suffix(".json")
    extra = (
        sidecar.read_bytes() if path.suffix.lower() in AUDIO_SUFFIXES and sidecar.is_file() else b""
    )
    return _digest(path.read_bytes(), extra)


# Call fields an input or an override can set; a re-ingest that does not say keeps them.
KEPT_FIELDS = ("outcome", "account_id", "rep_id", "deal_id", "date")


def batch_key(inputs: list[Path], overrides: Overrides) -> str:
    """Names a batch by its inputs and overrides: running the same command again resumes it."""
    payload = json.dumps(
        {"inputs": [str(p.resolve()) for p in inputs], "overrides": overrides}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def chroma_safe(chunks: list[Chunk]) -> list[Chunk]:
    """Chunks whose metadata Chroma accepts: scalars and non-empty lists of one scalar type,
    never None.

    rag/chunk.py builds such metadata already; this guard keeps one odd record (a null
    field, a mixed list, a nested value) from failing the batch at the index write.
    """
    safe = []
    for chunk in chunks:
        meta: dict[str, Any] = {}
        for key, value in chunk.metadata.items():
            if isinstance(value, list | tuple | set):
                items = [v for v in value if _scalar(v) is not None]
                if len({type(v) for v in items}) > 1:
                    items = [str(v) for v in items]  # Chroma wants one type per list
                value = items or None
            elif isinstance(value, float):
                value = _scalar(value)  # NaN and infinity are missing values
            elif value is not None and _scalar(value) is None:
                value = json.dumps(value, default=str, ensure_ascii=False)
            if value is None:
                continue
            meta[key] = value
        safe.append(chunk if meta == chunk.metadata else replace(chunk, metadata=meta))
    return safe


def _scalar(value: Any) -> str | int | float | bool | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, str | int | float | bool) else None


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
        """Ingest ``paths`` as one batch of the job table, resuming it if an earlier run died."""
        overrides = {k: v for k, v in (overrides or {}).items() if v}
        report = IngestReport()
        started = time.perf_counter()

        # Record every input before any work, so a killed run knows what was left.
        inputs = list(discover([Path(p) for p in paths]))
        batch = self.store.open_batch(batch_key(inputs, overrides), [str(p) for p in inputs])
        report.batch_id, report.resumed = batch.batch_id, batch.resumed
        if batch.resumed:
            left = sum(j.status != "done" for j in batch.jobs)
            logger.warning(
                "resuming ingest batch %s: %d of %d inputs left (a run of the same inputs was "
                "interrupted)",
                batch.batch_id,
                left,
                len(batch.jobs),
            )

        # Work through the inputs; one bad input is reported and the batch goes on.
        with tqdm(
            batch.jobs, desc="ingest", unit="file", disable=not show_progress, file=sys.stderr
        ) as bar:
            for job in bar:
                self._run_job(job, overrides, report)
                bar.set_postfix_str(
                    f"{report.audio_minutes:.1f} min audio, {report.files_failed} failed"
                )

        self.store.finish_batch(batch.batch_id)
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

    def _run_job(self, job: IngestJob, overrides: Overrides, report: IngestReport) -> None:
        path = Path(job.path)
        minutes_before = report.audio_minutes
        try:
            self._ingest_one(path, overrides, report, job)
        except Exception as exc:  # one odd input must never end the batch
            if isinstance(exc, CopilotError):
                logger.error("skipped %s: %s", path, exc)
                reason = str(exc)
            else:
                logger.exception("skipped %s after an unexpected error", path)
                reason = f"unexpected error: {exc}"
            report.failed.append((str(path), reason))
            report.files_failed += 1
            self.store.fail_job(job.job_id, reason, _seconds(report.audio_minutes - minutes_before))

    def _ingest_one(
        self, path: Path, overrides: Overrides, report: IngestReport, job: IngestJob | None = None
    ) -> None:
        if not path.exists():
            raise InputError(f"{path} does not exist; check the path")
        if path.is_file() and path.stat().st_size == 0:
            raise InputError(f"{path} is empty; nothing to ingest")
        if path.is_file() and not _is_input(path):
            raise InputError(
                f"{path} has an unsupported type '{path.suffix}'; use audio ({', '.join(sorted(AUDIO_SUFFIXES))}) "
                f"or a transcript ({', '.join(sorted(TEXT_SUFFIXES))}) or a folder with messages.csv"
            )

        # An input stored before (by hash) is a no-op; a job the dead run finished stays as it is.
        digest = input_hash(path)
        known = self.store.input_call_ids(digest)
        if (
            known
            and self.store.existing_call_ids(known) == set(known)
            and self._overrides_hold(known, overrides)
        ):
            report.unchanged.extend(known)
            report.files_unchanged += 1
            if job is not None and not (job.status == "done" and job.content_hash == digest):
                self.store.start_job(job.job_id, digest)
                self.store.finish_job(job.job_id, known, unchanged=True)
            return
        if job is not None:
            self.store.start_job(job.job_id, digest)

        minutes_before = report.audio_minutes
        records = self._records(path, overrides, report)
        fresh = [r for r in records if self.store.call_hash(r.call_id) != r.content_hash]
        report.unchanged.extend(r.call_id for r in records if r not in fresh)
        for record in fresh:
            if self.store.has_call(record.call_id):
                logger.warning("call %s changed since it was stored; replacing it", record.call_id)

        # Index first, then commit: a crash in between leaves chunks that the redo replaces.
        self.index.replace_calls(
            {
                r.call_id: chroma_safe(chunk_call(r, self.settings.index, self.settings.outcomes))
                for r in fresh
            }
        )
        self.store.save_calls(
            fresh,
            digest,
            str(path),
            job_id=job.job_id if job is not None else None,
            audio_s=_seconds(report.audio_minutes - minutes_before),
        )
        report.stored.extend(r.call_id for r in fresh)
        if fresh:
            report.files_done += 1
        else:
            report.files_unchanged += 1

    def _overrides_hold(self, call_ids: list[str], overrides: Overrides) -> bool:
        """True when the stored calls already carry every override (so nothing would change)."""
        if not overrides:
            return True
        for call_id in call_ids:
            stored = self.store.get_call(call_id)
            if any(getattr(stored, k, None) != v for k, v in overrides.items() if k in KEPT_FIELDS):
                return False
        return True

    def _kept_metadata(self, call_id: str, known: dict[str, Any]) -> dict[str, Any]:
        """Fields this input leaves unset keep the stored call's values: re-uploading a file
        without its outcome must not wipe the outcome an earlier upload gave it."""
        if not self.store.has_call(call_id):
            return known
        stored = self.store.get_call(call_id)
        kept = {
            k: getattr(stored, k)
            for k in KEPT_FIELDS
            if known.get(k) is None and getattr(stored, k)
        }
        return {**known, **kept}

    def _records(self, path: Path, overrides: Overrides, report: IngestReport) -> list[CallRecord]:
        if path.is_dir() and is_persuasion_folder(path):
            parsed = [(p.call_id, p.turns, p.meta, "csv") for p in parse_persuasion_folder(path)]
        elif path.is_dir() and is_craigslist_folder(path):
            share = self.settings.sources.craigslist.near_target_share
            parsed = [
                (p.call_id, p.turns, p.meta, "transcript")
                for p in parse_craigslist_folder(path, share)
            ]
        elif path.is_dir():
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
            raw, turns = turns, redact_turns(turns, self.settings.redaction.names)
            language = _text(meta.pop("language", None))
            extra = _as_extra(meta.pop("extra", None))
            known = _call_fields(
                str(path),
                {
                    k: meta.pop(k)
                    for k in ("outcome", "account_id", "rep_id", "deal_id", "date", "duration_s")
                    if k in meta
                },
            )
            known = self._kept_metadata(str(call_id), known)
            extra.update(meta)  # anything else the source carried stays with the call
            if self.settings.redaction.keep_raw:  # unredacted text only when config asks
                extra["raw_turns"] = raw_turn_dicts(raw)
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
                    **known,
                )
            )
        return records


def _seconds(minutes: float) -> float | None:
    return round(minutes * 60, 2) if minutes > 0 else None


def _text(value: Any) -> str | None:
    """A metadata value as the string the calls table holds; lists are joined, blanks are None."""
    if value is None:
        return None
    if isinstance(value, list | tuple | set):
        value = ",".join(str(v) for v in value if v is not None)
    text = str(value).strip()
    return text or None


def _as_extra(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(value) if isinstance(value, dict) else {"extra": value}


def _call_fields(source: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The calls table's own columns from a source's metadata; an odd value is coerced, with a
    warning, so one odd record never fails the batch."""
    known: dict[str, Any] = {k: _text(v) for k, v in fields.items() if k != "duration_s"}
    if "duration_s" in fields and fields["duration_s"] is not None:
        try:
            duration = float(fields["duration_s"])
            if not math.isfinite(duration) or duration < 0:
                raise ValueError(duration)
            known["duration_s"] = duration
        except (TypeError, ValueError):
            logger.warning(
                "%s: duration %r is not a number of seconds; estimated from the turns instead",
                source,
                fields["duration_s"],
            )
    return known
