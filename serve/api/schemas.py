"""The API's request and response bodies (they are what /docs shows)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from copilot.schemas import CallRecord, Citation
from serve.answer import Answer


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _account_id(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty; omit account_id to ask without naming an account")
    return value


# An account id named in a request: a blank one is a mistake, not "no account".
AccountId = Annotated[str, AfterValidator(_account_id)]


class StrictBody(BaseModel):
    # A misspelt optional field would otherwise be dropped without a word.
    model_config = ConfigDict(extra="forbid")


MODEL_HELP = (
    'Which model answers (GET /v1/models): "copilot" (default: your experiment variant, else '
    'the promoted adapter), "base", an adapter name, or "EXPERIMENT/VARIANT".'
)


class ObjectionRequest(StrictBody):
    text: str = Field(description="What the customer said.", max_length=4000)
    account_id: AccountId | None = Field(None, description="Account the call is about.")
    model: str | None = Field(None, description=MODEL_HELP, max_length=200)
    adapter: str | None = Field(
        None, description="Older name for `model` (an adapter name).", max_length=200
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return _not_blank(value)

    @model_validator(mode="after")
    def _one_model_name(self) -> ObjectionRequest:
        if self.model and self.adapter and self.model != self.adapter:
            raise ValueError("give `model` or its older name `adapter`, not both")
        return self

    @property
    def model_name(self) -> str | None:
        return self.model or self.adapter


# One message's text, and the messages of one request: a longer conversation would be
# cut to the model's context window anyway, and every character is stored in the
# decision log and goes into its CSV export.
MAX_MESSAGE_CHARS = 8000
MAX_MESSAGES = 64


class ChatMessage(StrictBody):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatRequest(StrictBody):
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=64,
        description="The conversation; a `system` message is not trusted and is dropped.",
    )
    account_id: AccountId | None = Field(
        None, description="Ground the answer in this account's calls and signals."
    )
    model: str | None = Field(None, description=MODEL_HELP, max_length=200)
    stream: bool = Field(
        False,
        description="Answer as server-sent events (citations, token..., done); "
        "so does `Accept: text/event-stream`.",
    )

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.content.strip() for m in messages):
            raise ValueError("must include at least one non-empty message with role 'user'")
        return messages


class CitationOut(BaseModel):
    call_id: str
    start: float = Field(description="Seconds from the start of the call.")
    end: float
    text: str
    outcome: str | None = None
    score: float | None = None

    @classmethod
    def of(cls, citation: Citation) -> CitationOut:
        return cls.model_validate(citation, from_attributes=True)


class AnswerOut(BaseModel):
    reply: str
    model: str = Field("copilot", description="The model name that was asked for.")
    adapter: str = Field(description='Adapter that answered, or "base".')
    citations: list[CitationOut]
    suggestion_id: str | None = Field(
        None, description="The decision-log id to send feedback on this suggestion with."
    )
    guarded: str | None = Field(
        None,
        description="Set when the output guard replaced the model's reply, with the reason "
        "(discount_above_limit, echoes_quoted_data).",
    )
    experiment_id: str | None = None
    variant: str | None = None
    prompt_version: str | None = None

    @classmethod
    def of(cls, answer: Answer) -> AnswerOut:
        return cls(
            reply=answer.reply,
            model=answer.model,
            adapter=answer.adapter,
            citations=[CitationOut.of(c) for c in answer.citations],
            guarded=answer.guarded,
            suggestion_id=answer.suggestion_id,
            experiment_id=answer.experiment_id,
            variant=answer.variant,
            prompt_version=answer.prompt_version,
        )


class TurnOut(BaseModel):
    speaker: str
    start: float
    end: float
    text: str


class CallSummary(BaseModel):
    call_id: str
    outcome: str | None
    account_id: str | None
    rep_id: str | None = None
    deal_id: str | None = None
    date: str | None = None
    duration_s: float | None
    source_kind: str
    language: str | None = None

    @classmethod
    def of(cls, record: CallRecord) -> CallSummary:
        return cls.model_validate(record, from_attributes=True)


class CallDetail(CallSummary):
    turns: list[TurnOut]

    @classmethod
    def of(cls, record: CallRecord) -> CallDetail:
        summary = CallSummary.of(record).model_dump()
        turns = [
            TurnOut(speaker=t.speaker, start=t.start, end=t.end, text=t.text) for t in record.turns
        ]
        return cls(**summary, turns=turns)


class FailedInput(BaseModel):
    input: str = Field(description="The uploaded file's name.")
    reason: str


class UploadAccepted(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed"]
    status_url: str = Field(description="Poll this for the ingest's result.")


class UploadJobOut(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed"]
    input: str = Field(description="The uploaded file's name.")
    account_id: str | None
    outcome: str | None
    stored: list[str] = Field(description="Call ids newly stored.")
    unchanged: list[str] = Field(description="Call ids whose content was already ingested.")
    failed: list[FailedInput]
    error: str | None = Field(
        None, description="Set when the job failed: the input, what went wrong and the fix."
    )
    created_at: str
    started_at: str | None
    finished_at: str | None

    @classmethod
    def of(cls, job) -> UploadJobOut:  # a serve.jobs.UploadJob
        return cls(
            job_id=job.job_id,
            status=job.status,
            input=job.input_name,
            account_id=job.account_id,
            outcome=job.outcome,
            stored=job.stored,
            unchanged=job.unchanged,
            failed=[FailedInput(**f) for f in job.failed],
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class Health(BaseModel):
    status: Literal["ok"]
    calls: int
