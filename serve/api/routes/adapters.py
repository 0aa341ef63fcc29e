"""Adapters and training runs: reps may list the adapters; only managers train and promote.

Training runs in a child process (training/jobs.py), the same way the UI starts one,
so a run never holds up chat or any other request of this server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serve.api.auth import Caller, Manager
from serve.api.deps import Service
from serve.api.schemas import StrictBody
from training.registry import AdapterInfo

router = APIRouter(prefix="/v1", tags=["adapters"])


class AdapterOut(BaseModel):
    name: str
    created_at: str
    base_model: str
    method: str
    promoted: bool
    author: str | None = None

    @classmethod
    def of(cls, info: AdapterInfo) -> AdapterOut:
        return cls(
            name=info.name,
            created_at=info.created_at,
            base_model=info.base_model,
            method=info.method,
            promoted=info.promoted,
            author=info.author,
        )


class TrainingRequest(StrictBody):
    name: str | None = Field(None, description="The adapter's name; omitted = a dated default.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="training: settings for this run, e.g. {'max_steps': 40, 'method': 'dpo'}.",
    )
    resume: bool = Field(False, description="Continue the stopped or failed run `name`.")


class TrainingRunOut(BaseModel):
    name: str
    state: str
    step: int
    max_steps: int | None
    status_url: str
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    message: str | None = None


@router.get("/adapters", response_model=list[AdapterOut])
def list_adapters(service: Service, caller: Caller) -> list[AdapterOut]:
    """The fine-tuned adapters, oldest first; ``promoted`` marks the one served by default."""
    return [AdapterOut.of(a) for a in service.registry.list()]


@router.post("/adapters/{name}/promote", response_model=AdapterOut)
def promote_adapter(name: str, service: Service, caller: Manager) -> AdapterOut:
    """Serve ``name`` by default from the next request on (manager or admin)."""
    info = service.registry.promote(name, expected_base=service.generator.base_model)
    return AdapterOut.of(info)


@router.post("/adapters/rollback", response_model=AdapterOut)
def rollback_adapter(service: Service, caller: Manager) -> AdapterOut:
    """Promote again the adapter promoted before the current one (manager or admin)."""
    rollback = service.registry.rollback(expected_base=service.generator.base_model)
    return AdapterOut.of(rollback.current)


@router.post("/training-runs", status_code=202, response_model=TrainingRunOut)
def start_training_run(body: TrainingRequest, service: Service, caller: Manager) -> TrainingRunOut:
    """Start fine-tuning on the stored objections in a child process (manager or admin)."""
    from training.jobs import start_training

    job = start_training(
        service.settings, name=body.name, overrides=body.overrides, resume=body.resume
    )
    return _run_out(service, job.name)


@router.get("/training-runs/{name}", response_model=TrainingRunOut)
def read_training_run(name: str, service: Service, caller: Manager) -> TrainingRunOut:
    """A run's state, step and held-out losses (manager or admin)."""
    return _run_out(service, name)


def _run_out(service: Any, name: str) -> TrainingRunOut:
    from training.jobs import training_status

    status = training_status(service.settings, name)
    return TrainingRunOut(
        name=status.name,
        state=status.state,
        step=status.step,
        max_steps=status.max_steps,
        status_url=f"/v1/training-runs/{status.name}",
        eval_loss_before=status.eval_loss_before,
        eval_loss_after=status.eval_loss_after,
        message=status.message,
    )
