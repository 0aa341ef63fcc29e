"""Which model answers a request: the names reps and OpenAI clients pass as ``model``.

    choice = resolve_model(service, "copilot", principal)

Names:
  ``copilot``   the default: the running experiment's variant for this rep (by
                ``principal.name``), else the promoted adapter (the registry's
                order: promoted, else newest on this base, else the base model),
                with the active prompt-workshop version.
  ``base``      the base model without an adapter.
  an adapter    any registered adapter by name.
  ``EXP/VAR``   one experiment's variant, named explicitly (for trying a variant out).

``copilot`` and ``base`` are reserved: an adapter registered under either name is
reachable only as ``EXP/VAR`` through an experiment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from copilot.errors import NotFoundError
from copilot.keys import Principal

if TYPE_CHECKING:
    from serve.service import CopilotService
    from training.registry import AdapterInfo

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "copilot"
BASE_MODEL = "base"


@dataclass(frozen=True)
class ModelChoice:
    """What answers: the model name asked for, the adapter, the prompt version behind it."""

    model: str
    adapter: AdapterInfo | None
    system_prompt: str | None = None
    knowledge: list[str] = field(default_factory=list)
    experiment_id: str | None = None
    variant: str | None = None
    prompt_version: str | None = None

    @property
    def adapter_name(self) -> str:
        return self.adapter.name if self.adapter is not None else BASE_MODEL


def resolve_model(
    service: CopilotService, name: str | None, principal: Principal | None
) -> ModelChoice:
    """The ModelChoice for ``name`` (None = ``copilot``); NotFoundError names the known models."""
    name = (name or DEFAULT_MODEL).strip() or DEFAULT_MODEL
    expected = service.generator.base_model

    if name == DEFAULT_MODEL:
        running = _running_variant(service, principal)
        if running is not None:
            experiment_id, variant = running
            return _variant_choice(service, name, experiment_id, variant, expected)
        adapter = service.registry.resolve(None, expected_base=expected)
        return _with_prompt(service, ModelChoice(model=name, adapter=adapter), None)

    if name == BASE_MODEL:
        return _with_prompt(service, ModelChoice(model=name, adapter=None), None)

    if "/" in name:
        experiment_id, _, variant_name = name.partition("/")
        experiments = _experiments(service)
        if experiments is None:
            raise NotFoundError(f"no model '{name}': experiments are not set up on this server")
        try:
            variant = experiments.get(experiment_id).variant(variant_name)
        except NotFoundError:
            # "EXP/VARIANT" is a model name to the client: answer about the model.
            raise _unknown_model(service, name) from None
        return _variant_choice(service, name, experiment_id, variant, expected)

    try:
        adapter = service.registry.resolve(name, expected_base=expected)
    except NotFoundError:
        raise _unknown_model(service, name) from None
    return _with_prompt(service, ModelChoice(model=name, adapter=adapter), None)


def _unknown_model(service: CopilotService, name: str) -> NotFoundError:
    known = ", ".join(model_names(service)[:20])
    return NotFoundError(f"no model '{name}'; GET /v1/models lists them (known: {known})")


@dataclass(frozen=True)
class ModelEntry:
    """One name in GET /v1/models: ``created`` in Unix seconds, ``owned_by`` who made it."""

    id: str
    created: int
    owned_by: str


OWNER = "sales-copilot"


def list_models(service: CopilotService) -> list[ModelEntry]:
    """Every name ``resolve_model`` accepts: copilot, base, the adapters (oldest first),
    then EXP/VAR for the running experiment's variants."""
    entries = [ModelEntry(DEFAULT_MODEL, 0, OWNER), ModelEntry(BASE_MODEL, 0, OWNER)]
    for adapter in service.registry.list():
        if adapter.name not in (DEFAULT_MODEL, BASE_MODEL):
            entries.append(
                ModelEntry(adapter.name, _unix(adapter.created_at), adapter.author or OWNER)
            )
    experiments = _experiments(service)
    running = experiments.running() if experiments is not None else None
    if running is not None:
        for variant in running.variants:
            entries.append(
                ModelEntry(
                    f"{running.id}/{variant.name}",
                    _unix(running.created_at),
                    running.created_by or OWNER,
                )
            )
    return entries


def model_names(service: CopilotService) -> list[str]:
    return [entry.id for entry in list_models(service)]


def _unix(iso: str | None) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp()) if iso else 0
    except ValueError:
        return 0


# --- where the experiment store and the prompt library plug in -------------------------


def _experiments(service: CopilotService) -> Any:
    """The experiment store (copilot/experiments.py) when the service has one, else None."""
    return getattr(service, "experiments", None)


def _prompts(service: CopilotService) -> Any:
    """The prompt library (copilot/prompt_library.py) when the service has one, else None."""
    return getattr(service, "prompts", None)


def _running_variant(
    service: CopilotService, principal: Principal | None
) -> tuple[str, Any] | None:
    """(experiment id, the rep's Variant) while an experiment runs, else None."""
    experiments = _experiments(service)
    if experiments is None or principal is None:
        return None
    running = experiments.running()
    if running is None:
        return None
    return running.id, experiments.assign(running.id, principal.name)


def _variant_choice(
    service: CopilotService, model: str, experiment_id: str, variant: Any, expected_base: str
) -> ModelChoice:
    # A variant's adapter: "base", a registered name, or None = whatever is promoted.
    adapter_name = variant.adapter
    adapter = (
        None
        if adapter_name == BASE_MODEL
        else service.registry.resolve(adapter_name, expected_base=expected_base)
    )
    choice = ModelChoice(
        model=model, adapter=adapter, experiment_id=experiment_id, variant=variant.name
    )
    return _with_prompt(service, choice, variant.prompt_version)


def _with_prompt(service: CopilotService, choice: ModelChoice, ref: str | None) -> ModelChoice:
    """``choice`` with prompt version ``ref`` (None = the active one, if any) filled in."""
    prompts = _prompts(service)
    if prompts is None:
        return choice
    version = prompts.get(ref) if ref else prompts.active()
    if version is None:
        return choice
    return ModelChoice(
        model=choice.model,
        adapter=choice.adapter,
        system_prompt=version.system_prompt,
        knowledge=list(version.knowledge),
        experiment_id=choice.experiment_id,
        variant=choice.variant,
        prompt_version=version.ref,
    )
