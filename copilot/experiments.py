"""A/B experiments: which model variant a rep gets, decided once and kept.

An experiment splits reps between two or more variants; each variant names an
adapter (``"base"``, a registered adapter, or None for whichever is promoted) and a
prompt version (a prompt-workshop ref like ``"default@3"``, or None for the active
prompt). Reps, not requests, are randomised: a rep sees one variant for the whole
experiment, so their customers never get a mix and a rep's habits stay in one arm.

Public API (the chat and objection routes and the dashboard call these)::

    store = ExperimentStore(settings.db_path)
    exp = store.create("price replies", [{"name": "control", "adapter": "base"},
                                         {"name": "dpo-v2", "adapter": "dpo-v2", "weight": 1}],
                       created_by="maria")
    store.running()                 # the running experiment, or None
    store.assign(exp.id, "rep-7")   # -> Variant, deterministic and sticky
    store.get(exp.id); store.list(); store.stop(exp.id)
    store.update_weights(exp.id, {"control": 1, "dpo-v2": 3})  # new reps only

Assignment: SHA-256 of ``"<experiment id>\\x1f<rep id>"`` gives a point in [0, 1)
(the first 8 bytes over 2^64) that falls into one variant's share of the weights,
in the order the variants were given. The same rep and experiment always give the
same point, in any process. The first assignment is stored, and a stored one wins
over the hash: editing the weights later moves the split for reps not yet assigned
and never moves a rep who already saw a variant.

At most one experiment runs at a time: two experiments over the same reps would
each see the other's variants as noise. A unique ``running_slot`` column (1 while
running, NULL once stopped) makes the database refuse a second one, even from
another process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, ForeignKey, Integer, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from copilot.errors import InputError, NotFoundError, StateError
from copilot.sqlite import open_engine

logger = logging.getLogger(__name__)

Status = Literal["running", "stopped"]
BASE_ADAPTER = "base"
MAX_VARIANTS = 20
MAX_NAME_CHARS = 100
# "/" joins an experiment id and a variant name into a model name ("<id>/<variant>").
_FORBIDDEN_IN_NAMES = "/"
_HASH_SPACE = 2**64


class _Base(DeclarativeBase):
    pass


class ExperimentRow(_Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    status: Mapped[str] = mapped_column(String(16))
    # 1 while running, NULL once stopped; unique, so the database holds one running at most.
    running_slot: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40))
    stopped_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    control: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    variants: Mapped[list] = mapped_column(JSON)
    weights_changed_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class AssignmentRow(_Base):
    __tablename__ = "experiment_assignments"

    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), primary_key=True)
    rep_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    variant: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    assigned_at: Mapped[str] = mapped_column(String(40))


@dataclass(frozen=True)
class Variant:
    """One arm. ``weight`` is its share of new reps; the shares of an experiment sum to 1."""

    name: str
    adapter: str | None  # a registered adapter, "base", or None = the promoted one
    prompt_version: str | None  # a prompt-workshop ref like "default@3", or None = active
    weight: float


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    status: Status
    created_by: str
    created_at: str
    stopped_at: str | None
    control: str
    variants: tuple[Variant, ...]
    weights_changed_at: str | None = None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise NotFoundError(
            f"experiment '{self.id}' has no variant '{name}'; "
            f"its variants are {', '.join(v.name for v in self.variants)}"
        )

    @property
    def weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.variants}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["variants"] = [asdict(v) for v in self.variants]
        return out


def hash_point(experiment_id: str, rep_id: str) -> float:
    """The rep's fixed point in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{rep_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPACE


def bucket(point: float, variants: Sequence[Variant]) -> Variant:
    """The variant whose share of [0, 1) holds ``point`` (shares laid out in order)."""
    edge = 0.0
    for v in variants:
        edge += v.weight
        if point < edge:
            return v
    return variants[-1]  # the shares' float sum can fall a hair short of 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _clean_name(value: Any, what: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise InputError(f"{what} is empty; give it a short name, e.g. 'control' or 'dpo-v2'")
    if len(text) > MAX_NAME_CHARS:
        raise InputError(f"{what} is {len(text)} characters; keep it to {MAX_NAME_CHARS}")
    if any(ch in text for ch in _FORBIDDEN_IN_NAMES):
        raise InputError(
            f"{what} '{text}' contains '/'; a model name joins experiment and variant with "
            "'/', so use '-' instead"
        )
    return text


def _optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        raise InputError(f"{what} is blank; leave it out (null) to use the default")
    return text


def _weight(value: Any, what: str) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} is {value!r}; give a positive number, e.g. 1") from None
    if not math.isfinite(weight) or weight <= 0:
        raise InputError(
            f"{what} is {value!r}; weights must be positive numbers (1 and 1 split evenly)"
        )
    return weight


def _variants(
    specs: Sequence[Mapping[str, Any] | Variant], known_adapters: Collection[str] | None
) -> tuple[Variant, ...]:
    if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
        raise InputError("variants must be a list of {name, adapter, prompt_version, weight}")
    if not 2 <= len(specs) <= MAX_VARIANTS:
        raise InputError(
            f"an experiment needs 2 to {MAX_VARIANTS} variants (a control and at least one "
            f"challenger); got {len(specs)}"
        )

    raw: list[Variant] = []
    for i, spec in enumerate(specs):
        fields = asdict(spec) if isinstance(spec, Variant) else dict(spec)
        unknown = set(fields) - {"name", "adapter", "prompt_version", "weight"}
        if unknown:
            raise InputError(
                f"variant {i + 1} has unknown fields {', '.join(sorted(unknown))}; "
                "use name, adapter, prompt_version and weight"
            )
        name = _clean_name(fields.get("name"), f"variant {i + 1}'s name")
        adapter = _optional_text(fields.get("adapter"), f"variant '{name}' adapter")
        if adapter is not None and known_adapters is not None:
            if adapter != BASE_ADAPTER and adapter not in known_adapters:
                known = ", ".join(sorted(known_adapters)) or "none registered"
                raise InputError(
                    f"variant '{name}' names adapter '{adapter}', which is not registered "
                    f"(known: {known}); use 'base', a registered adapter, or null for the "
                    "promoted one"
                )
        prompt = _optional_text(fields.get("prompt_version"), f"variant '{name}' prompt_version")
        weight = _weight(fields.get("weight", 1.0), f"variant '{name}' weight")
        raw.append(Variant(name, adapter, prompt, weight))

    names = [v.name for v in raw]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"variant names must be unique; repeated: {', '.join(repeated)}")
    return _normalised(raw)


def _check_prompt(check: Callable[[str], object], variant: Variant) -> None:
    try:
        check(variant.prompt_version)
    except (InputError, NotFoundError) as exc:
        raise InputError(
            f"variant '{variant.name}' prompt_version: {exc}; or null for the active prompt"
        ) from None


def _normalised(variants: Sequence[Variant]) -> tuple[Variant, ...]:
    """The weights as shares summing to 1; InputError when they cannot be (a sum that
    overflows, or a weight too small beside the others to get any share at all)."""
    total = sum(v.weight for v in variants)
    given = ", ".join(f"{v.name} {v.weight:g}" for v in variants)
    if not math.isfinite(total) or total <= 0:
        raise InputError(
            f"variants' weight: the weights ({given}) sum to {total:g}, which is not a finite "
            "positive number; give weights on a small common scale, e.g. 1 and 3"
        )
    arms = tuple(Variant(v.name, v.adapter, v.prompt_version, v.weight / total) for v in variants)
    starved = [v.name for v in arms if not v.weight > 0]
    if starved:
        raise InputError(
            f"variants' weight: beside the others ({given}), the weight of "
            f"{', '.join(repr(n) for n in starved)} gets a share of 0 of the reps; give "
            "weights on a small common scale, e.g. 1 and 3"
        )
    return arms


def _slug(name: str) -> str:
    # Only a readable prefix for the id: a name in another script simply gives "exp".
    ascii_part = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24].strip("-")
    return f"{ascii_part or 'exp'}-{uuid.uuid4().hex[:6]}"


def _experiment(row: ExperimentRow) -> Experiment:
    return Experiment(
        id=row.id,
        name=row.name,
        status=row.status,  # type: ignore[arg-type]
        created_by=row.created_by,
        created_at=row.created_at,
        stopped_at=row.stopped_at,
        control=row.control,
        variants=tuple(Variant(**v) for v in row.variants),
        weights_changed_at=row.weights_changed_at,
    )


class ExperimentStore:
    """The ``experiments`` and ``experiment_assignments`` tables in the copilot's SQLite file."""

    def __init__(self, db_path: Path | str):
        self.engine = open_engine(db_path)
        _Base.metadata.create_all(self.engine)

    # --- experiments ---------------------------------------------------------------

    def create(
        self,
        name: str,
        variants: Sequence[Mapping[str, Any] | Variant],
        control: str | None = None,
        created_by: str = "unknown",
        known_adapters: Collection[str] | None = None,
        check_prompt: Callable[[str], object] | None = None,
    ) -> Experiment:
        """Start an experiment. ``control`` defaults to the first variant; weights are
        normalised to shares. ``known_adapters``, when given, must hold every named adapter;
        ``check_prompt`` (e.g. ``PromptLibrary.get``) must accept every prompt version."""
        name = _clean_name(name, "the experiment's name")
        arms = _variants(variants, known_adapters)
        if check_prompt is not None:
            for v in arms:
                if v.prompt_version is not None:
                    _check_prompt(check_prompt, v)
        control = arms[0].name if control is None else str(control).strip()
        if control not in {v.name for v in arms}:
            raise InputError(
                f"control '{control}' is not one of the variants "
                f"({', '.join(v.name for v in arms)}); name one of them or leave it out "
                "for the first"
            )

        running = self.running()
        if running is not None:
            raise StateError(_one_running_message(running))
        experiment_id = _slug(name)
        row = ExperimentRow(
            id=experiment_id,
            name=name,
            status="running",
            running_slot=1,
            created_by=(created_by or "").strip() or "unknown",
            created_at=_now(),
            control=control,
            variants=[asdict(v) for v in arms],
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            # Another process started one between the check and the insert.
            running = self.running()
            raise StateError(
                _one_running_message(running) if running else "another experiment just started"
            ) from None
        experiment = self.get(experiment_id)
        logger.info(
            "experiment %s started by %s: %s",
            experiment.id,
            experiment.created_by,
            ", ".join(f"{v.name} {v.weight:.0%}" for v in experiment.variants),
        )
        return experiment

    def get(self, experiment_id: str) -> Experiment:
        with Session(self.engine) as session:
            row = session.get(ExperimentRow, experiment_id)
            if row is None:
                raise NotFoundError(
                    f"no experiment '{experiment_id}'; GET /v1/experiments lists them"
                )
            return _experiment(row)

    def list(self) -> list[Experiment]:
        """Every experiment, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(ExperimentRow).order_by(ExperimentRow.created_at.desc())
            ).all()
            return [_experiment(r) for r in rows]

    def running(self) -> Experiment | None:
        with Session(self.engine) as session:
            row = session.scalars(
                select(ExperimentRow).where(ExperimentRow.running_slot == 1)
            ).one_or_none()
            return _experiment(row) if row is not None else None

    def stop(self, experiment_id: str) -> Experiment:
        """Stop it: reps keep their variant in the log, new suggestions are no longer exposures."""
        experiment = self.get(experiment_id)
        if experiment.status == "stopped":
            raise StateError(
                f"experiment '{experiment_id}' was already stopped at {experiment.stopped_at}"
            )
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(ExperimentRow)
                .where(ExperimentRow.id == experiment_id)
                .values(status="stopped", running_slot=None, stopped_at=_now())
            )
        logger.info("experiment %s stopped", experiment_id)
        return self.get(experiment_id)

    def update_weights(self, experiment_id: str, weights: Mapping[str, float]) -> Experiment:
        """New shares for reps not yet assigned; reps already assigned keep their variant."""
        experiment = self.get(experiment_id)
        names = {v.name for v in experiment.variants}
        if set(weights) != names:
            raise InputError(
                f"give a weight for every variant of '{experiment_id}' "
                f"({', '.join(sorted(names))}); got {', '.join(sorted(weights)) or 'none'}"
            )
        arms = _normalised(
            [
                Variant(v.name, v.adapter, v.prompt_version, _weight(weights[v.name], v.name))
                for v in experiment.variants
            ]
        )
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(ExperimentRow)
                .where(ExperimentRow.id == experiment_id)
                .values(variants=[asdict(v) for v in arms], weights_changed_at=_now())
            )
        logger.info(
            "experiment %s weights now %s",
            experiment_id,
            ", ".join(f"{v.name} {v.weight:.0%}" for v in arms),
        )
        return self.get(experiment_id)

    # --- assignment ------------------------------------------------------------------

    def assign(self, experiment_id: str, rep_id: str) -> Variant:
        """The rep's variant: the stored one, else the hashed bucket (then stored)."""
        rep_id = (rep_id or "").strip()
        if not rep_id:
            raise InputError("rep_id is empty; assignments are per rep (the API key's name)")
        experiment = self.get(experiment_id)

        stored = self._stored_variant(experiment_id, rep_id)
        if stored is not None:
            return experiment.variant(stored)
        if experiment.status != "running":
            raise StateError(
                f"experiment '{experiment_id}' is stopped and rep '{rep_id}' was never "
                "assigned; start a new experiment to test again"
            )

        chosen = bucket(hash_point(experiment_id, rep_id), experiment.variants)
        try:
            with Session(self.engine) as session, session.begin():
                session.add(
                    AssignmentRow(
                        experiment_id=experiment_id,
                        rep_id=rep_id,
                        variant=chosen.name,
                        assigned_at=_now(),
                    )
                )
        except IntegrityError:
            # A concurrent request assigned this rep first; the stored variant is the answer.
            stored = self._stored_variant(experiment_id, rep_id)
            if stored is not None:
                return experiment.variant(stored)
            raise
        return chosen

    def assignments(self, experiment_id: str) -> dict[str, str]:
        """rep id -> variant name, for every rep assigned so far."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(AssignmentRow.rep_id, AssignmentRow.variant).where(
                    AssignmentRow.experiment_id == experiment_id
                )
            ).all()
        return {rep: variant for rep, variant in rows}

    def _stored_variant(self, experiment_id: str, rep_id: str) -> str | None:
        with Session(self.engine) as session:
            row = session.get(AssignmentRow, (experiment_id, rep_id))
            return row.variant if row is not None else None


def _one_running_message(running: Experiment) -> str:
    return (
        f"experiment '{running.id}' ({running.name}) is still running and only one runs at a "
        f"time; stop it first (POST /v1/experiments/{running.id}/stop)"
    )
