"""Call uploads ingested in the background, one at a time, off the request path.

``POST /v1/calls`` and the UI's upload store the file, add a job here and answer at
once; one worker thread runs the ingest (a recording's transcription can take
minutes), so chat and the rest of the API never wait for it. The worker never
touches the generation queue or the event loop.

The jobs live in the ``call_upload_jobs`` table of the copilot's SQLite file, so
they outlast the process:

* a job still ``queued`` when the server stopped runs after the next start;
* a job that was ``running`` when its process died is queued again once (ingest is
  idempotent: what the dead run stored comes back as ``unchanged``); interrupted a
  second time it is marked ``failed`` with a reason that says so, so an input that
  kills the process cannot bring the server down on every start.

Only jobs whose process is gone are touched at start, so two servers on one data
dir leave each other's running jobs alone.

An upload's call id is its file's stem (or the id a JSON or Markdown transcript names),
so two teams can upload files of the same name. ``check_replacement`` decides whether an
upload may replace a stored call of that id; it runs when the upload is accepted and
again in the job right before the ingest, so a call stored in between is not replaced
either.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Literal

from sqlalchemy import JSON, Integer, String, Text, create_engine, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from copilot.errors import CopilotError, InputError, NotFoundError, StateError
from copilot.store import process_alive
from rag.parse import TEXT_SUFFIXES, parse_transcript_file
from rag.transcribe import AUDIO_SUFFIXES

if TYPE_CHECKING:
    from serve.service import CopilotService

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed"]
PENDING: tuple[JobStatus, ...] = ("queued", "running")
MAX_ATTEMPTS = 2  # a job interrupted this many times is failed rather than run again
RETRY_AFTER_S = 30  # what a client refused for a full queue is told to wait
IDLE_WAIT_S = 5.0  # the worker re-reads the table this often even when nobody wakes it
_CHUNK_BYTES = 1 << 20


class _Base(DeclarativeBase):
    pass


class UploadJobRow(_Base):
    __tablename__ = "call_upload_jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    input_name: Mapped[str] = mapped_column(Text)  # the client's file name, shown back to it
    path: Mapped[str] = mapped_column(Text)  # where the upload is stored on the server
    outcome: Mapped[str | None] = mapped_column(String, nullable=True)
    account_id: Mapped[str | None] = mapped_column(String, nullable=True)
    team: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the account's team
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: from the UI
    stored: Mapped[list] = mapped_column(JSON, default=list)
    unchanged: Mapped[list] = mapped_column(JSON, default=list)
    failed: Mapped[list] = mapped_column(JSON, default=list)  # [{"input", "reason"}]
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str | None] = mapped_column(String, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[str] = mapped_column(String(32), index=True)
    started_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


@dataclass(frozen=True)
class UploadJob:
    """One upload and where its ingest stands."""

    job_id: str
    status: JobStatus
    input_name: str
    outcome: str | None
    account_id: str | None
    team: str | None
    key_id: str | None
    created_at: str
    path: str = ""
    stored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class QueueFullError(StateError):
    """Too many uploads are queued or ingesting; the client should retry later."""

    code = "too_many_requests"

    def __init__(self, pending: int, retry_after_s: int = RETRY_AFTER_S):
        super().__init__(
            f"{pending} call uploads are already queued or ingesting (serve.max_queued_uploads); "
            f"retry in {retry_after_s} s, or raise serve.max_queued_uploads in the config"
        )
        self.retry_after_s = retry_after_s


class UnsupportedUploadError(InputError):
    code = "unsupported_media_type"


class UploadTooLargeError(InputError):
    code = "too_large"

    def __init__(self, max_bytes: int):
        super().__init__(
            f"upload exceeds the limit of {max_bytes / 2**20:g} MB (serve.max_upload_mb); "
            "split the recording or raise serve.max_upload_mb in the config"
        )


class CallConflictError(StateError):
    """An upload would replace a stored call it may not replace."""

    code = "conflict"


def unknown_job(job_id: str) -> NotFoundError:
    return NotFoundError(
        f"no upload job '{job_id}'; use the job_id that POST /v1/calls answered with"
    )


# --- storing an upload --------------------------------------------------------------


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
    # Unicode word characters stay: a recording named 华信医疗-续约.wav keeps its name as its
    # call id. Separators, dots at the ends and punctuation do not.
    stem = re.sub(r"[^\w.-]+", "_", PurePosixPath(base).stem).strip("._")[:80]
    stem = stem or "upload"
    return (base or "upload")[:200], f"{uuid.uuid4().hex}/{stem}{suffix}"


def check_suffix(client_filename: str | None) -> None:
    """UnsupportedUploadError unless the file's suffix is one ingest reads."""
    display_name, stored_name = upload_names(client_filename)
    suffix = PurePosixPath(stored_name).suffix
    # The ingest pipeline's own lists, so an upload is accepted exactly when it can be parsed.
    if suffix in AUDIO_SUFFIXES or suffix in TEXT_SUFFIXES:
        return
    audio = " ".join(sorted(AUDIO_SUFFIXES))
    transcripts = " ".join(sorted(TEXT_SUFFIXES))
    raise UnsupportedUploadError(
        f"'{display_name}' has suffix '{suffix or '(none)'}'; upload audio ({audio}) "
        f"or a transcript ({transcripts})"
    )


def save_upload(source: BinaryIO, dest: Path, max_bytes: int) -> int:
    """Copy ``source`` to ``dest`` in chunks; past ``max_bytes`` dest is removed and
    UploadTooLargeError raised. Returns the bytes written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with dest.open("xb") as out:
            while chunk := source.read(_CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLargeError(max_bytes)
                out.write(chunk)
    except BaseException:
        discard_upload(dest)
        raise
    return written


def discard_upload(path: Path) -> None:
    """Remove a stored upload and its uuid folder (when empty)."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty, or already gone
        pass


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def upload_calls(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """The call ids a stored upload will be ingested as, each with the (account_id, outcome)
    the file itself names.

    A recording is its stem (an upload has no sidecar: it sits alone in its folder); a
    transcript is parsed, as ingest will parse it. One that does not parse is taken by its
    stem: ingest reports why it does not parse.
    """
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return {path.stem: (None, None)}
    try:
        parsed = parse_transcript_file(path)
    except CopilotError:
        return {path.stem: (None, None)}
    meta = parsed.meta
    return {str(parsed.call_id): (_text(meta.get("account_id")), _text(meta.get("outcome")))}


def check_replacement(
    service: CopilotService, path: Path, account_id: str | None, outcome: str | None
) -> None:
    """CallConflictError when ingesting the upload at ``path`` would replace a stored call
    it may not replace.

    The rule, for each call id the upload holds that is already stored:

    * the upload must leave the call with the account it has: an upload never moves a
      call to another account. A team key must name an account of its team, so a call it
      may replace is one it can see; a call of another team (or with no account) reads
      as "stored under another account", and the uploader is told to rename the file.
    * a new version of a call that has an outcome must say its outcome (the outcome
      field, or the file's own): ingest keeps a stored outcome the input leaves unset,
      which for changed content would pin the old result on the new text unasked. A
      re-upload of the same content is unchanged and needs nothing.

    NOTE: the store has no compare-and-swap on a call, so an ingest run outside this
    server (``copilot ingest``) between this check and the job's ingest is not seen;
    the job re-checks right before ingesting, which closes the window for uploads.
    """
    from rag.ingest import input_hash  # the ingest pipeline loads the index modules

    calls = upload_calls(path)
    stored = {c: service.store.get_call(c) for c in calls if service.store.has_call(c)}
    if not stored:
        return
    same_content = set(service.store.input_call_ids(input_hash(path)) or []) >= set(calls)
    for call_id, record in stored.items():
        own_account, own_outcome = calls[call_id]
        account = account_id or own_account or record.account_id
        if account != record.account_id:
            # Never name the stored call's account: it may be another team's.
            raise CallConflictError(
                f"a call with id '{call_id}' is already stored under another account, and an "
                "upload cannot replace it; the call id is the file's name (or the call_id "
                "the transcript names): rename the file and upload it again"
            )
        if record.outcome and not (outcome or own_outcome) and not same_content:
            raise CallConflictError(
                f"call '{call_id}' is already stored with outcome '{record.outcome}', and this "
                f"upload changes it without saying its outcome; pass outcome "
                f"(e.g. outcome={record.outcome} to keep it), or rename the file to store it "
                "as a new call"
            )


def account_teams(service: CopilotService) -> dict[str, str | None]:
    """Each stored account's team: an upload's job belongs to its account's team."""
    return {a.account_id: a.team for a in service.accounts.store.accounts()}


# --- the jobs -----------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _job(row: UploadJobRow) -> UploadJob:
    return UploadJob(
        job_id=row.job_id,
        status=row.status,  # type: ignore[arg-type]
        input_name=row.input_name,
        outcome=row.outcome,
        account_id=row.account_id,
        team=row.team,
        key_id=row.key_id,
        created_at=row.created_at,
        path=row.path,
        stored=list(row.stored or []),
        unchanged=list(row.unchanged or []),
        failed=[dict(f) for f in row.failed or []],
        error=row.error,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class CallJobs:
    """The upload job table and its one worker thread (started by the app's lifespan)."""

    def __init__(self, service: CopilotService):
        self.service = service
        self.max_pending = service.settings.serve.max_queued_uploads
        self.engine = create_engine(f"sqlite:///{service.settings.db_path}")
        _Base.metadata.create_all(self.engine)
        self._submit_lock = threading.Lock()  # the count and the insert of one submit together
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- intake -----------------------------------------------------------------------

    def accept(
        self,
        source: BinaryIO,
        client_filename: str | None,
        outcome: str | None = None,
        account_id: str | None = None,
        team: str | None = None,
        key_id: str | None = None,
    ) -> UploadJob:
        """Store an upload under uploads_dir (the client never picks the path) and queue it.

        UnsupportedUploadError, UploadTooLargeError, CallConflictError or QueueFullError
        leave nothing stored.
        """
        check_suffix(client_filename)
        display_name, stored_name = upload_names(client_filename)
        settings = self.service.settings
        dest = settings.uploads_dir / stored_name
        size = save_upload(source, dest, int(settings.serve.max_upload_mb * 2**20))
        logger.info("received upload %s (%d bytes) as %s", display_name, size, stored_name)
        try:
            check_replacement(self.service, dest, account_id, outcome)
            return self.submit(dest, display_name, outcome, account_id, team, key_id)
        except BaseException:
            discard_upload(dest)
            raise

    def submit(
        self,
        path: Path,
        input_name: str,
        outcome: str | None = None,
        account_id: str | None = None,
        team: str | None = None,
        key_id: str | None = None,
    ) -> UploadJob:
        """Queue the stored upload at ``path``; QueueFullError when the queue is full."""
        with self._submit_lock, self._session() as s, s.begin():
            pending = s.scalar(
                select(func.count())
                .select_from(UploadJobRow)
                .where(UploadJobRow.status.in_(PENDING))
            )
            if pending >= self.max_pending:
                raise QueueFullError(pending)
            row = UploadJobRow(
                job_id=uuid.uuid4().hex,
                status="queued",
                input_name=input_name,
                path=str(path),
                outcome=outcome,
                account_id=account_id,
                team=team,
                key_id=key_id,
                stored=[],
                unchanged=[],
                failed=[],
                attempts=0,
                created_at=_now(),
            )
            s.add(row)
        self._wake.set()
        logger.info("queued upload %s as job %s (%d ahead)", input_name, row.job_id, pending)
        return _job(row)

    def get(self, job_id: str) -> UploadJob:
        with self._session() as s:
            row = s.get(UploadJobRow, job_id)
            if row is None:
                raise unknown_job(job_id)
            return _job(row)

    def ahead_of(self, job: UploadJob) -> int:
        """How many pending jobs were queued before ``job`` (for a progress line)."""
        with self._session() as s:
            return s.scalar(
                select(func.count())
                .select_from(UploadJobRow)
                .where(UploadJobRow.status.in_(PENDING), UploadJobRow.created_at < job.created_at)
            )

    # --- the worker ---------------------------------------------------------------------

    def start(self) -> None:
        """Recover jobs of dead processes and start the worker; idempotent."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self.recover()
            self._thread = threading.Thread(
                target=self._run, name="call-upload-worker", daemon=True
            )
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the job in hand; a job still running when the process exits is
        recovered by the next start."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout_s)

    def recover(self) -> list[UploadJob]:
        """Re-queue (or, past MAX_ATTEMPTS, fail) the jobs left running by a dead process."""
        recovered = []
        with self._session() as s, s.begin():
            rows = s.scalars(select(UploadJobRow).where(UploadJobRow.status == "running")).all()
            for row in rows:
                if process_alive(row.host, row.pid or 0):
                    continue
                if row.attempts >= MAX_ATTEMPTS:
                    row.status, row.finished_at = "failed", _now()
                    row.error = (
                        f"{row.input_name}: the server stopped {row.attempts} times while "
                        "ingesting this upload; check the server log for what stopped it, "
                        "then upload the file again"
                    )
                    logger.warning(
                        "upload job %s failed: interrupted %d times", row.job_id, row.attempts
                    )
                else:
                    row.status, row.started_at = "queued", None
                    logger.warning("upload job %s was interrupted; queued again", row.job_id)
                recovered.append(_job(row))
        return recovered

    def _run(self) -> None:
        logger.info("call upload worker started")
        while not self._stop.is_set():
            self._wake.clear()
            try:
                job = self._claim()
                if job is not None:
                    self.run_job(job)
                    continue
            except Exception:
                # The table itself failed (disk full, locked too long): wait and try again.
                logger.exception("call upload worker: reading the job table failed")
            self._wake.wait(IDLE_WAIT_S)

    def _claim(self) -> UploadJob | None:
        """The oldest queued job, marked running by this process (None when there is none)."""
        with self._session() as s, s.begin():
            row = s.scalars(
                select(UploadJobRow)
                .where(UploadJobRow.status == "queued")
                .order_by(UploadJobRow.created_at)
            ).first()
            if row is None:
                return None
            # Conditional, so two processes on one file never both take the same job.
            claimed = s.execute(
                update(UploadJobRow)
                .where(UploadJobRow.job_id == row.job_id, UploadJobRow.status == "queued")
                .values(
                    status="running",
                    started_at=_now(),
                    attempts=UploadJobRow.attempts + 1,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                )
            ).rowcount
            if not claimed:
                return None
        return self.get(row.job_id)

    def run_job(self, job: UploadJob) -> UploadJob:
        """Ingest one claimed job's file and record the result; never raises."""
        path = Path(job.path)
        if not path.is_file():
            return self._finish(
                job,
                error=f"{job.input_name}: the stored upload is gone from the server; "
                "upload the file again",
            )
        try:
            # Again here: a call of that id may have been stored since the upload was accepted.
            check_replacement(self.service, path, job.account_id, job.outcome)
            report = self.service.ingest([path], job.outcome, job.account_id)
        except CopilotError as exc:
            logger.warning("upload job %s failed: %s", job.job_id, exc)
            discard_upload(path)
            reason = str(exc).replace(str(path), job.input_name)
            return self._finish(job, error=f"{job.input_name}: {reason}")
        except Exception as exc:
            logger.exception("upload job %s failed", job.job_id)
            discard_upload(path)
            return self._finish(
                job,
                error=f"{job.input_name}: internal error while ingesting "
                f"({type(exc).__name__}); see the server log",
            )

        # The server's path means nothing to the client: report its own file name.
        failed = [
            {"input": job.input_name, "reason": reason.replace(str(path), job.input_name)}
            for _, reason in report.failed
        ]
        if not report.stored:
            # Nothing refers to this copy: a failed input, or a duplicate of one stored before.
            discard_upload(path)
        error = None
        if failed and not report.stored and not report.unchanged:
            error = f"{job.input_name}: {failed[0]['reason']}"
        return self._finish(
            job, stored=report.stored, unchanged=report.unchanged, failed=failed, error=error
        )

    def _finish(
        self,
        job: UploadJob,
        stored: list[str] | None = None,
        unchanged: list[str] | None = None,
        failed: list[dict[str, str]] | None = None,
        error: str | None = None,
    ) -> UploadJob:
        with self._session() as s, s.begin():
            row = s.get(UploadJobRow, job.job_id)
            row.status = "failed" if error else "done"
            row.stored, row.unchanged = list(stored or []), list(unchanged or [])
            row.failed, row.error, row.finished_at = list(failed or []), error, _now()
            finished = _job(row)
        logger.info(
            "upload job %s %s: %d calls stored, %d unchanged",
            job.job_id,
            finished.status,
            len(finished.stored),
            len(finished.unchanged),
        )
        return finished
