"""A/B experiments: managers start, list, stop and read them; reps are refused (403).

The chat and objection routes assign reps to the running experiment's variants
(copilot/experiments.py); these routes only manage experiments and read their
statistics (copilot/abstats.py).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from copilot.abstats import DailyPoint, SrmCheck, VariantStats, experiment_results
from copilot.experiments import Experiment
from serve.api.auth import Manager
from serve.api.deps import Service
from serve.api.schemas import StrictBody

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])


class VariantIn(StrictBody):
    name: str = Field(min_length=1, max_length=100, description="Unique in the experiment.")
    adapter: str | None = Field(
        None,
        max_length=200,
        description="A registered adapter, 'base', or null for whichever is promoted.",
    )
    prompt_version: str | None = Field(
        None,
        max_length=200,
        description="A prompt-workshop ref such as 'default@3', or null for the active prompt.",
    )
    weight: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="Relative share of reps; normalised. Keep the weights on a small common "
        "scale (1 and 3): a sum that overflows, or a share of 0, is refused.",
    )


class ExperimentIn(StrictBody):
    name: str = Field(min_length=1, max_length=100)
    variants: list[VariantIn] = Field(min_length=2, max_length=20)
    control: str | None = Field(None, description="A variant's name; omitted = the first.")


class VariantOut(BaseModel):
    name: str
    adapter: str | None
    prompt_version: str | None
    weight: float = Field(description="Share of new reps, 0-1; the shares sum to 1.")


class ExperimentOut(BaseModel):
    id: str
    name: str
    status: str
    created_by: str
    created_at: str
    stopped_at: str | None
    control: str
    variants: list[VariantOut]
    weights_changed_at: str | None = None

    @classmethod
    def of(cls, experiment: Experiment) -> ExperimentOut:
        return cls.model_validate(experiment.to_dict())


class ExperimentsOut(BaseModel):
    experiments: list[ExperimentOut]


class ResultsOut(BaseModel):
    experiment: ExperimentOut
    variants: list[VariantStats]
    srm: SrmCheck | None = Field(
        description="Chi-square of reps per variant against the weights; null before "
        "exposures, or when the stored weights give no expected counts (see warnings)."
    )
    warnings: list[str] = Field(description="Reasons not to act on these numbers yet.")
    daily: list[DailyPoint]
    computed_at: str
    methods: dict[str, str]


@router.post("", status_code=201, response_model=ExperimentOut)
def create_experiment(body: ExperimentIn, service: Service, principal: Manager) -> ExperimentOut:
    """Start an experiment (409 while another one runs: stop that one first)."""
    experiment = service.experiments.create(
        body.name,
        [v.model_dump() for v in body.variants],
        control=body.control,
        created_by=principal.name,
        known_adapters={a.name for a in service.registry.list()},
        check_prompt=service.prompts.get,
    )
    return ExperimentOut.of(experiment)


@router.get("", response_model=ExperimentsOut)
def list_experiments(service: Service, principal: Manager) -> ExperimentsOut:
    """Every experiment, newest first."""
    return ExperimentsOut(experiments=[ExperimentOut.of(e) for e in service.experiments.list()])


@router.get("/{experiment_id}", response_model=ExperimentOut)
def read_experiment(experiment_id: str, service: Service, principal: Manager) -> ExperimentOut:
    return ExperimentOut.of(service.experiments.get(experiment_id))


@router.post("/{experiment_id}/stop", response_model=ExperimentOut)
def stop_experiment(experiment_id: str, service: Service, principal: Manager) -> ExperimentOut:
    """Stop it; reps keep the variant they had in the log, and a new experiment may start."""
    return ExperimentOut.of(service.experiments.stop(experiment_id))


@router.get("/{experiment_id}/results", response_model=ResultsOut)
def read_results(experiment_id: str, service: Service, principal: Manager) -> ResultsOut:
    """Per-variant conversion with 95 % Wilson intervals, the chance to beat control, the
    test against control, deal win rates, the SRM check, guard warnings and a daily series."""
    results = experiment_results(service.experiments, service.decisions, experiment_id)
    return ResultsOut.model_validate(results.to_dict())
