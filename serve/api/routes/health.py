"""Liveness: cheap enough for a load balancer to poll (no model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter

from serve.api.deps import Service
from serve.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(service: Service) -> Health:
    """The server is up; ``calls`` is how many calls are stored."""
    return Health(status="ok", calls=int(service.store.counts()["calls"]))
