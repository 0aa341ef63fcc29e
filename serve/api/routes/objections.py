"""Live objection handling for reps."""

from __future__ import annotations

from fastapi import APIRouter

from serve.api.deps import Service
from serve.api.schemas import AnswerOut, ObjectionRequest

router = APIRouter(prefix="/v1/objections", tags=["objections"])


# A plain ``def``: FastAPI runs it in the threadpool, so generation never blocks the loop.
@router.post("/handle", response_model=AnswerOut)
def handle_objection(body: ObjectionRequest, service: Service) -> AnswerOut:
    """A suggested reply to a customer objection, citing the won-call excerpts it drew on."""
    answer = service.ask(body.text, account_id=body.account_id, adapter=body.adapter)
    return AnswerOut.of(answer)
