"""Recommendation rules: a YAML file a sales manager edits, checked strictly, re-read on change.

The file format is documented at the top of ``configs/rules.yaml``. A rule says when
it fires (conditions on the account's signals, combined with ``all``/``any``/``not``),
how urgent it is, who acts, by when, and what to do. ``copilot.recommend`` applies
the rules to one account.

``RuleBook`` holds the rules in force. Each ``current()`` call costs one ``stat``;
when the file's mtime, size or inode changed it is read again. A broken edit never
takes the rules away: the previous rules stay in force, the problem is logged once
per bad version and kept in ``last_error`` (file, rule, line and the fix) until the
file is fixed. Only the first load may fail, and it raises ``ConfigError`` so that a
server never starts without rules.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import string
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from copilot.errors import ConfigError
from copilot.signals import SIGNAL_TYPES

logger = logging.getLogger(__name__)

# Signals whose value counts down to a moment (in hours or days, per the signal's unit):
# ``due: before_signal`` is measured from the earliest of those moments.
COUNTDOWN_TYPES = frozenset({"tender_countdown", "budget_window_closing", "purchase_rhythm_due"})

# Facts about the account that are not signals but that rules need to say "with a deal".
FACTS: dict[str, str] = {
    "open_opportunity": "the account has a deal in prospecting or engaging",
    "live_tender": "the account has a tender announced or open",
    "past_orders": "the account has ordered before",
}

Priority = Literal["critical", "high", "medium", "low"]
PRIORITY_RANK: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}

# Placeholders an action may use: name -> the signal type it is read from (None: the
# account itself). A placeholder whose signal is not named in the rule's ``when`` is an
# error, because it could never be filled.
PLACEHOLDERS: dict[str, str | None] = {
    "account": None,
    "account_id": None,
    "owner": None,
    "due": None,
    "contacts": None,
    "product": None,
    "tender": "tender_countdown",
    "tender_hours": "tender_countdown",
    "budget_days": "budget_window_closing",
    "lead": "procurement_lead_changed",
    "lead_days": "procurement_lead_changed",
    "champion": "champion_departed",
    "champion_days": "champion_departed",
    "overdue_days": "purchase_rhythm_overdue",
    "reorder_days": "purchase_rhythm_due",
    "stock_units": "low_stock",
    "policy": "policy_change",
    "policy_days": "policy_change",
    "competitor": "competitor_price_below",
    "price_gap": "competitor_price_below",
    "mentions": "competitor_mentioned",
    "objections": "unresolved_objection",
    "objection_quotes": "unresolved_objection",
    "idle_days": "no_activity",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_signal_type(value: str) -> str:
    name = value.strip()
    if name not in SIGNAL_TYPES:
        close = difflib.get_close_matches(name, list(SIGNAL_TYPES), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise PydanticCustomError(
            "unknown_signal",
            "unknown signal type '{name}'",
            {"name": name, "fix": f"{hint}use one of: {', '.join(SIGNAL_TYPES)}"},
        )
    return name


class SignalCondition(_Strict):
    """Holds when the account has a signal of this type with a value in [min, max]."""

    signal: Annotated[str, AfterValidator(_check_signal_type)]
    min: float | None = None
    max: float | None = None
    # Product ids or names (case-folded); the signal must be about one of them.
    product: list[str] | None = None

    @field_validator("product", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _range(self) -> SignalCondition:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError(
                "empty_range",
                "min {min} is above max {max}, so the condition can never hold",
                {"min": self.min, "max": self.max, "fix": "swap min and max"},
            )
        return self


class FactCondition(_Strict):
    """Holds when a fact about the account is true (see ``FACTS``)."""

    fact: str

    @field_validator("fact")
    @classmethod
    def _known_fact(cls, value: str) -> str:
        if value not in FACTS:
            raise PydanticCustomError(
                "unknown_fact",
                "unknown fact '{name}'",
                {"name": value, "fix": f"use one of: {', '.join(FACTS)}"},
            )
        return value


class AllOf(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


class NotOf(_Strict):
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, BaseModel):
        return {
            SignalCondition: "signal",
            FactCondition: "fact",
            AllOf: "all",
            AnyOf: "any",
            NotOf: "not",
        }.get(type(value))
    if isinstance(value, dict):
        for key in ("signal", "fact", "all", "any", "not"):
            if key in value:
                return key
    return None


# A bare signal name is short for ``{signal: name}``: "- budget_window_closing".
SignalName = Annotated[
    str, AfterValidator(lambda name: SignalCondition(signal=_check_signal_type(name)))
]

Condition = Annotated[
    Annotated[SignalCondition, Tag("signal")]
    | Annotated[FactCondition, Tag("fact")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[SignalName, Tag("name")],
    Discriminator(
        _condition_kind,
        custom_error_type="bad_condition",
        custom_error_message=(
            "a condition is a signal name or a mapping with one of the keys "
            "signal, fact, all, any, not"
        ),
    ),
]

for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


def positive_signals(condition: Condition) -> set[str]:
    """The signal types a condition can match on (those under a ``not`` cannot)."""
    if isinstance(condition, SignalCondition):
        return {condition.signal}
    if isinstance(condition, AllOf | AnyOf):
        children = condition.all if isinstance(condition, AllOf) else condition.any
        return set().union(*(positive_signals(c) for c in children))
    return set()


class Rule(_Strict):
    """One rule of the file; see the comments at the top of configs/rules.yaml."""

    id: str = Field(min_length=1, pattern=r"^\S+$")
    description: str = ""
    enabled: bool = True
    when: Condition
    priority: Priority
    owner: str = Field(min_length=1)
    due: Literal["before_signal"] | None = None
    due_in_hours: float | None = Field(None, gt=0)
    due_margin_hours: float = Field(0, ge=0)
    action: str = Field(min_length=1)
    cooldown_hours: float | None = Field(None, ge=0)  # None: alerts.cooldown_hours
    supersedes: list[str] = []

    @field_validator("due")
    @classmethod
    def _has_deadline(cls, value: str | None, info: ValidationInfo) -> str | None:
        when = info.data.get("when")
        if value == "before_signal" and when is not None:
            if not positive_signals(when) & COUNTDOWN_TYPES:
                raise PydanticCustomError(
                    "no_deadline",
                    "'due: before_signal' needs a signal with a deadline in 'when'",
                    {
                        "fix": f"add one of {', '.join(sorted(COUNTDOWN_TYPES))} to 'when', "
                        "or use 'due_in_hours'"
                    },
                )
        return value

    @field_validator("action")
    @classmethod
    def _fillable(cls, value: str, info: ValidationInfo) -> str:
        when = info.data.get("when")
        named = positive_signals(when) if when is not None else None
        for name in placeholders(value):
            if name not in PLACEHOLDERS:
                close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
                hint = f"did you mean {{{close[0]}}}? " if close else ""
                raise PydanticCustomError(
                    "unknown_placeholder",
                    "unknown placeholder '{name}'",
                    {
                        "name": f"{{{name}}}",
                        "fix": f"{hint}use one of "
                        + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                        + ", or write {{ and }} for a literal brace",
                    },
                )
            source = PLACEHOLDERS[name]
            if named is not None and source is not None and source not in named:
                raise PydanticCustomError(
                    "unfillable_placeholder",
                    "placeholder '{name}' is read from a {source} signal, which 'when' never "
                    "matches",
                    {
                        "name": f"{{{name}}}",
                        "source": source,
                        "fix": f"add a {source} condition to 'when' or drop the placeholder",
                    },
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.due is None and self.due_in_hours is None:
            raise PydanticCustomError(
                "no_due",
                "the rule says no due time",
                {"fix": "add 'due_in_hours: 24' or 'due: before_signal'"},
            )
        if self.id in self.supersedes:
            raise PydanticCustomError(
                "self_supersede", "the rule supersedes itself", {"fix": "remove its own id"}
            )
        return self


def placeholders(text: str) -> list[str]:
    """The ``{name}`` fields of an action text; format specs and conversions are refused."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PydanticCustomError(
            "bad_braces",
            "the action has an unmatched brace: {detail}",
            {"detail": str(exc), "fix": "write {{ and }} for a literal brace"},
        ) from exc
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise PydanticCustomError(
                "placeholder_format",
                "placeholder '{name}' has a format ('{spec}'); placeholders take none",
                {
                    "name": f"{{{name}}}",
                    "spec": (f"!{conversion}" if conversion else "") + (spec or ""),
                    "fix": f"write just {{{name}}}",
                },
            )
        names.append(name)
    return names


class RuleFile(_Strict):
    """The whole file: the rules, and optionally the people behind the roles they name."""

    # Role -> person, e.g. "bid_desk: Li Wei"; roles are matched case-folded.
    owners: dict[str, str] = {}
    rules: list[Rule] = Field(min_length=1)


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong in a rule file, said so that its author can fix it."""

    problem: str
    fix: str
    rule_id: str | None = None
    line: int | None = None  # 1-based, in the file
    where: str | None = None  # the field inside the rule, e.g. "when.all[1].signal"

    def describe(self) -> str:
        at = f"line {self.line}: " if self.line else ""
        rule = f"rule '{self.rule_id}': " if self.rule_id else ""
        where = f"{self.where}: " if self.where else ""
        return f"{at}{rule}{where}{self.problem}; fix: {self.fix}"


@dataclass(frozen=True)
class RuleFileError:
    """Why a version of the rule file was refused."""

    path: Path
    version: str | None  # None when the file could not be read at all
    problems: tuple[RuleProblem, ...]

    def __str__(self) -> str:
        lines = "\n".join(f"  {p.describe()}" for p in self.problems)
        return f"rule file {self.path} was refused:\n{lines}"


@dataclass(frozen=True)
class RuleSet:
    """The rules of one version of the file. Iterating gives the enabled rules."""

    rules: tuple[Rule, ...]
    version: str  # the file's content hash, recorded with every recommendation
    path: Path
    owners: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Rule]:
        return (r for r in self.rules if r.enabled)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def file_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def parse_rules(data: bytes, path: Path) -> RuleSet | RuleFileError:
    """Check ``data`` (the bytes of ``path``) and return its rules or every problem found."""
    version = file_version(data)

    def refused(*problems: RuleProblem) -> RuleFileError:
        return RuleFileError(path=path, version=version, problems=problems)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return refused(RuleProblem(f"not UTF-8 text ({exc})", "save the file as UTF-8"))
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        return refused(
            RuleProblem(
                f"not valid YAML: {what}",
                "check the indentation and colons there; quote text that holds ': ' or '#'",
                line=mark.line + 1 if mark else None,
            )
        )
    if not isinstance(raw, dict):
        return refused(
            RuleProblem("the file must be a mapping with a 'rules:' list", "start with 'rules:'")
        )

    try:
        parsed = RuleFile.model_validate(raw)
    except ValidationError as exc:
        return refused(*(_problem(err, raw, root) for err in exc.errors()))

    problems = []
    seen: dict[str, int] = {}
    for index, rule in enumerate(parsed.rules):
        if rule.id in seen:
            problems.append(
                RuleProblem(
                    f"duplicate rule id (rule #{seen[rule.id] + 1} has it too)",
                    "give each rule its own id",
                    rule_id=rule.id,
                    line=_line(root, ("rules", index, "id")),
                )
            )
        seen.setdefault(rule.id, index)
    for index, rule in enumerate(parsed.rules):
        for other in rule.supersedes:
            if other not in seen:
                problems.append(
                    RuleProblem(
                        f"supersedes unknown rule '{other}'",
                        "name the id of a rule in this file",
                        rule_id=rule.id,
                        line=_line(root, ("rules", index, "supersedes")),
                    )
                )
    cycle = _supersede_cycle(parsed.rules)
    if cycle:
        problems.append(
            RuleProblem(
                f"rules supersede each other in a circle: {' -> '.join(cycle)}",
                "remove one of these 'supersedes' entries",
                rule_id=cycle[0],
            )
        )
    if problems:
        return refused(*problems)

    owners = {role.strip().casefold(): person for role, person in parsed.owners.items()}
    return RuleSet(rules=tuple(parsed.rules), version=version, path=path, owners=owners)


def _supersede_cycle(rules: list[Rule]) -> list[str] | None:
    edges = {r.id: r.supersedes for r in rules}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return trail[trail.index(node) :] + [node]
        if node in done:
            return None
        for nxt in edges.get(node, []):
            found = visit(nxt, [*trail, node])
            if found:
                return found
        done.add(node)
        return None

    for rule_id in edges:
        found = visit(rule_id, [])
        if found:
            return found
    return None


def load_rules(path: Path) -> RuleSet:
    """The rules of ``path``, or ConfigError naming every problem and its fix."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"rule file {path} cannot be read ({exc.strerror}); "
            "set rules.path to an existing YAML file or restore configs/rules.yaml"
        ) from exc
    loaded = parse_rules(data, path)
    if isinstance(loaded, RuleFileError):
        raise ConfigError(str(loaded))
    return loaded


def _problem(err: Any, raw: dict[str, Any], root: yaml.Node | None) -> RuleProblem:
    loc = tuple(err["loc"])
    rule_id = None
    where = ".".join(str(p) for p in loc) or None
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules")
        entry = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        rule_id = entry.get("id") if isinstance(entry, dict) else None
        rule_id = str(rule_id) if rule_id is not None else f"#{loc[1] + 1}"
        where = _field_path(loc[2:]) or None
    ctx = err.get("ctx") or {}
    fix = ctx.get("fix") or _default_fix(err)
    return RuleProblem(
        problem=err["msg"].removeprefix("Value error, "),
        fix=fix,
        rule_id=rule_id,
        line=_line(root, loc),
        where=where,
    )


def _without_tags(loc: tuple[Any, ...]) -> list[Any]:
    """``loc`` less the union tags pydantic puts at each condition ("when", "all", 0, "signal")."""
    kept: list[Any] = []
    expect_tag = False
    for step in loc:
        if expect_tag and isinstance(step, str):
            expect_tag = False
            continue
        expect_tag = step in ("when", "not") or (
            isinstance(step, int) and bool(kept) and kept[-1] in ("all", "any")
        )
        kept.append(step)
    return kept


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for step in _without_tags(loc):
        if isinstance(step, int) and parts:
            parts[-1] = f"{parts[-1]}[{step}]"
        else:
            parts.append(str(step))
    return ".".join(parts)


def _default_fix(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return (
            "remove or rename the key; a rule takes id, description, enabled, when, priority, "
            "owner, due, due_in_hours, due_margin_hours, action, cooldown_hours, supersedes"
        )
    if kind == "bad_condition":
        return "write a signal name ('- low_stock') or a mapping ('- signal: low_stock')"
    if kind == "missing":
        return "add the key"
    if kind == "literal_error":
        return f"write {err['ctx']['expected']}" if "ctx" in err else "use an allowed value"
    return "correct the value"


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node that ``loc`` reaches."""
    node, line = root, None
    for step in _without_tags(loc):
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
    if node is not None:
        line = node.start_mark.line + 1
    return line


class RuleBook:
    """The rules in force from one file, re-read when the file changes. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._last_error: RuleFileError | None = None
        self._logged_bad: str | None = None
        self._signature = self._stat()
        self._ruleset = load_rules(self.path)
        logger.info(
            "loaded %d rules from %s (version %s)",
            len(self._ruleset),
            self.path,
            self._ruleset.version,
        )

    def current(self) -> RuleSet:
        """The rules in force; re-reads the file first if it changed since the last look."""
        if self._stat() != self._signature:
            with self._lock:
                signature = self._stat()
                if signature != self._signature:
                    self._reload(signature)
        return self._ruleset

    @property
    def version(self) -> str:
        return self.current().version

    @property
    def last_error(self) -> RuleFileError | None:
        """Why the file on disk is not in force; None when it is."""
        self.current()
        return self._last_error

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self, signature: tuple[int, int, int] | None) -> None:
        # The signature is taken before reading: a write that lands during the read
        # changes the file again, so the next call reads it once more.
        self._signature = signature
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            loaded: RuleSet | RuleFileError = RuleFileError(
                path=self.path,
                version=None,
                problems=(
                    RuleProblem(
                        f"the file cannot be read ({exc.strerror})",
                        "restore the file; the previous rules stay in force until then",
                    ),
                ),
            )
        else:
            if file_version(data) == self._ruleset.version:
                self._last_error = None  # touched, or a broken edit undone
                return
            loaded = parse_rules(data, self.path)

        if isinstance(loaded, RuleFileError):
            self._last_error = loaded
            bad = loaded.version or "unreadable"
            if bad != self._logged_bad:
                self._logged_bad = bad
                logger.error(
                    "%s; keeping the %d rules of version %s",
                    loaded,
                    len(self._ruleset),
                    self._ruleset.version,
                )
            return

        logger.info(
            "reloaded %d rules from %s (version %s, was %s)",
            len(loaded),
            self.path,
            loaded.version,
            self._ruleset.version,
        )
        self._ruleset = loaded
        self._last_error = None
        self._logged_bad = None
