"""Calls: upload a recording or transcript, list the stored calls, read one."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path, PurePosixPath
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from rag.parse import TEXT_SUFFIXES
from rag.transcribe import AUDIO_SUFFIXES
from serve.api.deps import Service
from serve.api.errors import ApiError
from serve.api.limits import UploadTooLarge
from serve.api.schemas import CallDetail, CallSummary, FailedInput, IngestOut

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/calls", tags=["calls"])

_CHUNK_BYTES = 1 << 20


def upload_names(client_filename: str | None) -> tuple[str, str]:
    """(name to show the client, relative path to store under): the client never picks the path.

    Directories are stripped (both separators: browsers on Windows send ``C:\\...``),
    the stem is reduced to safe characters and the suffix kept. Each upload gets
    its own uuid folder, so the stem (which becomes the call id, as it does for
    ``copilot ingest``) stays the client's, and no upload can sit beside another
    as its JSON sidecar.
    """
    base = PurePosixPath((client_filename or "").replace("\\", "/")).name
    suffix = PurePosixPath(base).suffix.lower()
    stem = re.sub(r"[^\w.-]+", "_", PurePosixPath(base).stem, flags=re.ASCII).strip("._")[:80]
    stem = stem or "upload"
    return (base or "upload")[:200], f"{uuid.uuid4().hex}/{stem}{suffix}"


def _check_suffix(display_name: str, stored_name: str) -> None:
    suffix = PurePosixPath(stored_name).suffix
    # The ingest pipeline's own lists, so the API accepts exactly what it can parse.
    if suffix in AUDIO_SUFFIXES or suffix in TEXT_SUFFIXES:
        return
    audio = " ".join(sorted(AUDIO_SUFFIXES))
    transcripts = " ".join(sorted(TEXT_SUFFIXES))
    raise ApiError(
        415,
        "unsupported_media_type",
        f"'{display_name}' has suffix '{suffix or '(none)'}'; upload audio ({audio}) "
        f"or a transcript ({transcripts})",
    )


def _save(source: BinaryIO, dest: Path, max_bytes: int) -> int:
    """Copy ``source`` to ``dest`` in chunks, stopping (and removing dest) past ``max_bytes``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with dest.open("xb") as out:
            while chunk := source.read(_CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLarge(max_bytes)
                out.write(chunk)
    except BaseException:
        _discard(dest)
        raise
    return written


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty, or already gone
        pass


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


@router.post("", status_code=201, response_model=IngestOut)
async def upload_call(
    service: Service,
    file: Annotated[UploadFile, File(description="An audio recording or a transcript.")],
    outcome: Annotated[str | None, Form(description="won, lost, open or another label.")] = None,
    account_id: Annotated[str | None, Form()] = None,
) -> IngestOut:
    """Store one call. Re-uploading the same content is a no-op reported as ``unchanged``."""
    display_name, stored_name = upload_names(file.filename)
    _check_suffix(display_name, stored_name)

    settings = service.settings
    max_bytes = int(settings.serve.max_upload_mb * 2**20)
    dest = settings.uploads_dir / stored_name
    size = await run_in_threadpool(_save, file.file, dest, max_bytes)
    logger.info("received upload %s (%d bytes) as %s", display_name, size, stored_name)

    try:
        report = await run_in_threadpool(
            service.ingest, [dest], _blank_to_none(outcome), _blank_to_none(account_id)
        )
    except BaseException:
        _discard(dest)
        raise

    # The server's path means nothing to the client: report its own file name.
    failed = [
        FailedInput(input=display_name, reason=reason.replace(str(dest), display_name))
        for _, reason in report.failed
    ]
    if not report.stored:
        # Nothing refers to this copy: a failed input, or a duplicate of one stored before.
        _discard(dest)
    if failed and not report.stored and not report.unchanged:
        raise ApiError(422, "ingest_failed", f"{display_name}: {failed[0].reason}")
    return IngestOut(stored=report.stored, unchanged=report.unchanged, failed=failed)


@router.get("", response_model=list[CallSummary])
def list_calls(service: Service) -> list[CallSummary]:
    """Every stored call's metadata, by call id."""
    return [CallSummary.of(record) for record in service.list_calls()]


@router.get("/{call_id}", response_model=CallDetail)
def read_call(call_id: str, service: Service) -> CallDetail:
    """One call with its turns (speaker, start and end in seconds, text)."""
    return CallDetail.of(service.transcript(call_id))
