"""Calls: upload a recording or transcript (ingested in the background), poll the upload's
job, list the stored calls, read one.

Every route takes the caller's key. A call's team is the team of its account in the
account store, looked up when it is read (an account moved to another team takes its
calls along). A caller limited to a team sees only calls of that team's accounts; a call
of another team, or with no account, answers 404 exactly as a call that does not exist,
so a key cannot probe which call ids exist. Upload jobs answer the same way: a job is
visible to the key that created it and to managers and admins who see its team.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from copilot.errors import NotFoundError
from copilot.keys import Principal
from serve.api.auth import Caller
from serve.api.deps import Service
from serve.api.errors import ApiError
from serve.api.schemas import CallDetail, CallSummary, UploadAccepted, UploadJobOut
from serve.jobs import (
    QueueFullError,
    UnsupportedUploadError,
    UploadJob,
    UploadTooLargeError,
    account_teams,
    check_suffix,
    unknown_job,
    upload_names,
)
from serve.service import CopilotService

logger = logging.getLogger(__name__)

__all__ = ["router", "upload_names"]


@asynccontextmanager
async def calls_lifespan(app: Any) -> AsyncIterator[None]:
    """Start the upload worker with the server (queued jobs of a stopped one run now)."""
    jobs = app.state.service.call_jobs
    await run_in_threadpool(jobs.start)
    try:
        yield
    finally:
        await run_in_threadpool(jobs.close)


router = APIRouter(prefix="/v1/calls", tags=["calls"], lifespan=calls_lifespan)


# --- who sees what --------------------------------------------------------------------


def sees_call(caller: Principal, account_id: str | None, teams: dict[str, str | None]) -> bool:
    if caller.all_teams:
        return True
    return account_id is not None and teams.get(account_id) == caller.team


def sees_job(caller: Principal, job: UploadJob) -> bool:
    if job.key_id is not None and job.key_id == caller.key_id:
        return True
    return caller.at_least("manager") and caller.sees_team(job.team)


def _no_call(call_id: str) -> NotFoundError:
    # The store's own wording, so a hidden call reads exactly like a missing one.
    return NotFoundError(
        f"no call with id '{call_id}'; list the stored calls with `copilot status` "
        "or ingest it first"
    )


def upload_team(caller: Principal, service: CopilotService, account_id: str | None) -> str | None:
    """The team an upload for ``account_id`` belongs to; 403 when the caller may not upload it.

    A team key must name one of its team's accounts: a call without one would be
    invisible to its own uploader. An unknown account gets the same 403 as another
    team's, so a key cannot probe which accounts exist.
    """
    team = account_teams(service).get(account_id) if account_id else None
    if caller.all_teams:
        return team
    if account_id is None:
        raise ApiError(
            403,
            "forbidden",
            f"a key for team '{caller.team}' must say whose call this is: pass account_id "
            "of one of the team's accounts",
        )
    if team != caller.team:
        raise ApiError(
            403,
            "forbidden",
            f"account '{account_id}' is not one of team '{caller.team}''s accounts; "
            "upload it with a key of its team, or fix account_id",
        )
    return team


# --- routes ---------------------------------------------------------------------------


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


@router.post(
    "",
    status_code=202,
    response_model=UploadAccepted,
    responses={
        403: {"description": "The account is not one of the caller's team's."},
        409: {
            "description": "A call of that id is stored under another account, or has an "
            "outcome this new version does not restate; rename the file or pass outcome."
        },
        413: {"description": "The file is over serve.max_upload_mb."},
        415: {"description": "Not an audio file or a transcript."},
        429: {"description": "Too many uploads queued; Retry-After says when to try again."},
    },
)
async def upload_call(
    request: Request,
    response: Response,
    service: Service,
    caller: Caller,
    file: Annotated[UploadFile, File(description="An audio recording or a transcript.")],
    outcome: Annotated[str | None, Form(description="won, lost, open or another label.")] = None,
    account_id: Annotated[str | None, Form()] = None,
) -> UploadAccepted:
    """Store one call's file and queue its ingest; poll ``status_url`` for the result.

    The call id is the file's name. A call of that id already stored is replaced only by an
    upload for the same account (so never by another team's key), and a new version of a
    call with an outcome must pass its outcome; otherwise 409, and nothing is stored.
    Re-uploading the same content ends as a job with the call ids under ``unchanged``.
    """
    # The cheap refusals first: nothing is stored for a wrong type or another team's account.
    # A conflict with a stored call is found once the file is stored, and removes it.
    try:
        check_suffix(file.filename)
    except UnsupportedUploadError as exc:
        raise ApiError(415, "unsupported_media_type", str(exc)) from exc
    account_id = _blank_to_none(account_id)
    team = await run_in_threadpool(upload_team, caller, service, account_id)

    try:
        job = await run_in_threadpool(
            service.call_jobs.accept,
            file.file,
            file.filename,
            _blank_to_none(outcome),
            account_id,
            team,
            caller.key_id,
        )
    except UploadTooLargeError as exc:
        raise ApiError(413, "too_large", str(exc)) from exc
    except QueueFullError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc

    status_url = request.app.url_path_for("read_upload_job", job_id=job.job_id)
    response.headers["Location"] = status_url
    return UploadAccepted(job_id=job.job_id, status=job.status, status_url=status_url)


@router.get("/jobs/{job_id}", response_model=UploadJobOut)
def read_upload_job(job_id: str, service: Service, caller: Caller) -> UploadJobOut:
    """Where an upload's ingest stands: queued, running, done (with the call ids) or failed
    (with the reason and the fix)."""
    job = service.call_jobs.get(job_id)
    if not sees_job(caller, job):
        raise unknown_job(job_id)  # another key's job reads as one that does not exist
    return UploadJobOut.of(job)


@router.get("", response_model=list[CallSummary])
def list_calls(service: Service, caller: Caller) -> list[CallSummary]:
    """The metadata of every stored call the caller's team may see, by call id."""
    records = service.list_calls()
    if not caller.all_teams:
        teams = account_teams(service)
        records = [r for r in records if sees_call(caller, r.account_id, teams)]
    return [CallSummary.of(record) for record in records]


@router.get("/{call_id}", response_model=CallDetail)
def read_call(call_id: str, service: Service, caller: Caller) -> CallDetail:
    """One call with its turns (speaker, start and end in seconds, text)."""
    record = service.transcript(call_id)
    if not caller.all_teams and not sees_call(caller, record.account_id, account_teams(service)):
        raise _no_call(call_id)
    return CallDetail.of(record)
