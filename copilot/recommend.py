"""Rules applied to one account's signals: who should do what, by when, and why.

    from copilot.recommend import recommend
    recs = recommend(ctx, compute_signals(ctx, ...), rulebook.current())

Each rule whose condition holds gives one ``Recommendation``. Its id is a hash of
the account, the rule and the evidence of the signals behind it (not their values),
so re-scoring the same situation later, when a tender is a few hours closer, gives
the same id and an alert is not raised twice; a new fact (another tender, a new
contact) gives a new id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from copilot.context import AccountContext
from copilot.errors import InputError
from copilot.rules import (
    COUNTDOWN_TYPES,
    PRIORITY_RANK,
    AllOf,
    AnyOf,
    Condition,
    FactCondition,
    NotOf,
    Rule,
    RuleBook,
    RuleSet,
    SignalCondition,
    placeholders,
)
from copilot.schemas import Recommendation, Signal
from copilot.signals import departed_contacts, iso

logger = logging.getLogger(__name__)

_OPEN_STAGES = ("prospecting", "engaging")
_LIVE_TENDER = ("announced", "open")
_MISSING = "—"  # a placeholder whose signal was not among the matched ones (an ``any`` branch)
_UNIT_SPANS = {"hours": timedelta(hours=1), "days": timedelta(days=1)}
_MAX_LISTED = 3  # names or quotes put into an action text
# Who acts on an account that has no owner and no manager to hand it to; the why says so.
UNASSIGNED = "unassigned"


@dataclass
class _Match:
    """What made a condition hold: the signals (in order, no repeats) and the facts."""

    signals: list[Signal] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)  # (fact, ref)

    def add(self, other: _Match) -> None:
        for signal in other.signals:
            if not any(signal is s for s in self.signals):
                self.signals.append(signal)
        self.facts.extend(f for f in other.facts if f not in self.facts)


def recommend(
    ctx: AccountContext,
    signals: Sequence[Signal],
    rules: RuleSet | RuleBook | Iterable[Rule],
    as_of: datetime | None = None,
    owner_of: Mapping[str, str] | None = None,
) -> list[Recommendation]:
    """One recommendation per rule that holds for ``ctx``'s ``signals``, most urgent first.

    ``as_of`` (default ``ctx.as_of``) is the moment the signals' values refer to; due
    times count from it. ``owner_of`` maps role names used as rule owners to people
    ("bid_desk" -> "Li Wei"), on top of the rule file's ``owners``; ``account_owner``
    and ``manager`` are otherwise read from the account and its agents (see ``_owner``
    for an account without an owner).
    """
    account_id = ctx.account.account_id
    foreign = sorted({s.account_id for s in signals if s.account_id != account_id})
    if foreign:
        raise InputError(
            f"signals of accounts {', '.join(foreign)} were passed for account {account_id}; "
            "pass only the signals computed for this account's context"
        )
    as_of = as_of or ctx.as_of
    if as_of.tzinfo is None:
        raise InputError(f"as_of {as_of.isoformat()} has no time zone; pass an aware UTC time")

    if isinstance(rules, RuleBook):
        rules = rules.current()
    owners = dict(rules.owners) if isinstance(rules, RuleSet) else {}
    owners.update({role.strip().casefold(): person for role, person in (owner_of or {}).items()})

    # Match every rule, then let the rules that fired drop the ones they supersede.
    fired: list[tuple[Rule, _Match]] = []
    for rule in rules:
        if not rule.enabled:
            continue
        match = _evaluate(rule.when, signals, ctx, as_of)
        if match is not None:
            fired.append((rule, match))
    superseded = {other for rule, _ in fired for other in rule.supersedes}
    recs = [
        _recommendation(rule, match, ctx, as_of, owners, superseded & {r.id for r, _ in fired})
        for rule, match in fired
        if rule.id not in superseded
    ]
    recs.sort(key=lambda r: (PRIORITY_RANK[r.priority], r.due, r.rule_id))
    logger.debug(
        "%d recommendations for account %s from %d signals (%d rules fired, %d superseded)",
        len(recs),
        account_id,
        len(signals),
        len(fired),
        len(fired) - len(recs),
    )
    return recs


# --- conditions ----------------------------------------------------------------------


def _evaluate(
    condition: Condition, signals: Sequence[Signal], ctx: AccountContext, as_of: datetime
) -> _Match | None:
    """What makes ``condition`` hold, or None when it does not."""
    if isinstance(condition, SignalCondition):
        hits = [s for s in signals if _signal_holds(condition, s, ctx)]
        return _Match(signals=hits) if hits else None
    if isinstance(condition, FactCondition):
        refs = _fact_refs(condition.fact, ctx, as_of)
        return _Match(facts=[(condition.fact, r) for r in refs]) if refs else None
    if isinstance(condition, AllOf):
        match = _Match()
        for child in condition.all:
            part = _evaluate(child, signals, ctx, as_of)
            if part is None:
                return None
            match.add(part)
        return match
    if isinstance(condition, AnyOf):
        parts = [_evaluate(child, signals, ctx, as_of) for child in condition.any]
        held = [p for p in parts if p is not None]
        if not held:
            return None
        match = _Match()
        for part in held:
            match.add(part)
        return match
    if isinstance(condition, NotOf):
        return _Match() if _evaluate(condition.not_, signals, ctx, as_of) is None else None
    raise TypeError(f"unknown condition {condition!r}")  # the rule models allow no other


def _signal_holds(condition: SignalCondition, signal: Signal, ctx: AccountContext) -> bool:
    if signal.type != condition.signal:
        return False
    if condition.min is not None and signal.value < condition.min:
        return False
    if condition.max is not None and signal.value > condition.max:
        return False
    if condition.product is not None:
        if signal.product_id is None:
            return False
        wanted = {p.strip().casefold() for p in condition.product}
        product = ctx.products.get(signal.product_id)
        names = {signal.product_id.casefold()} | ({product.name.casefold()} if product else set())
        return bool(wanted & names)
    return True


def _fact_refs(fact: str, ctx: AccountContext, as_of: datetime) -> list[str]:
    if fact == "open_opportunity":
        return sorted(
            o.opportunity_id
            for o in ctx.opportunities
            if o.stage in _OPEN_STAGES and o.time <= as_of
        )
    if fact == "live_tender":
        return sorted(t.tender_id for t in ctx.tenders if t.status in _LIVE_TENDER)
    if fact == "past_orders":
        # One ref for "has ordered": a new order must not make it a new situation.
        return ["orders"] if any(o.time <= as_of for o in ctx.orders) else []
    raise ValueError(f"unknown fact {fact!r}")  # the rule models allow no other


# --- one recommendation ----------------------------------------------------------------


def _recommendation(
    rule: Rule,
    match: _Match,
    ctx: AccountContext,
    as_of: datetime,
    owners: Mapping[str, str],
    superseded: set[str],
) -> Recommendation:
    owner, owner_note = _owner(rule.owner, ctx, owners, as_of)
    due, due_note = _due(rule, match.signals, as_of)
    filler = _Filler(ctx, match.signals, owner, due, as_of)
    action = rule.action.format_map(
        {name: _FILLERS[name](filler) for name in placeholders(rule.action)}
    )

    why = [f"rule {rule.id}"]
    why += [_describe(s) for s in match.signals]
    why += [f"{fact}: {ref}" for fact, ref in match.facts]
    why += [due_note, owner_note]
    if superseded & set(rule.supersedes):
        why.append(f"supersedes {', '.join(sorted(superseded & set(rule.supersedes)))}")

    return Recommendation(
        recommendation_id=recommendation_id(
            ctx.account.account_id, rule.id, match.signals, match.facts
        ),
        account_id=ctx.account.account_id,
        rule_id=rule.id,
        priority=rule.priority,
        owner=owner,
        due=iso(due),
        action=action,
        why="; ".join(why),
        signals=list(match.signals),
        created_at=iso(as_of),
    )


def recommendation_id(
    account_id: str,
    rule_id: str,
    signals: Sequence[Signal],
    facts: Sequence[tuple[str, str]] = (),
) -> str:
    """Stable over re-scoring: built from what the signals rest on, never from their values."""
    keys = sorted(
        [
            "|".join(
                [s.type, s.product_id or ""]
                + sorted(
                    f"{e.kind}:{e.ref}:{e.start if e.start is not None else ''}" for e in s.evidence
                )
            )
            for s in signals
        ]
        + [f"fact|{name}|{ref}" for name, ref in facts]
    )
    payload = json.dumps([account_id, rule_id, keys], ensure_ascii=False)
    return "rec_" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _describe(signal: Signal) -> str:
    product = f" [{signal.product_id}]" if signal.product_id else ""
    return f"{signal.type}={_number(signal.value)} {signal.unit}{product} ({signal.summary})"


def _owner(
    role: str, ctx: AccountContext, owners: Mapping[str, str], as_of: datetime
) -> tuple[str, str]:
    """The person for a rule's owner, and a note on how they were found.

    ``account_owner`` and ``manager`` name people, never the role itself. An account
    without an owner goes to the manager of the agent on its latest deal, who can assign
    it, else to ``UNASSIGNED``; a ``manager`` not on record falls back to the owner.
    """
    key = role.strip().casefold()
    if key in owners:
        return owners[key], f"owner: {role} = {owners[key]} (owners)"
    rep = ctx.account.owner
    if key not in ("account_owner", "manager"):
        return role, f"owner: {role}"
    if not rep:
        return _unowned(role, ctx, as_of)
    if key == "account_owner":
        return rep, f"owner: account_owner = {rep}"
    manager = _manager_of(ctx, rep)
    if manager:
        return manager, f"owner: manager of {rep} = {manager}"
    return rep, f"owner: {rep}'s manager is not on record, so the account owner {rep}"


def _unowned(role: str, ctx: AccountContext, as_of: datetime) -> tuple[str, str]:
    """Who acts for ``role`` on an account with no owner, and a note that says so."""
    note = f"owner: the account has no owner on record (rule owner {role})"
    deals = [o for o in ctx.opportunities if o.agent and o.time <= as_of]
    latest = max(deals, key=lambda o: (o.time, o.opportunity_id), default=None)
    if latest is None:
        return UNASSIGNED, f"{note} and no deal names an agent, so {UNASSIGNED}: assign an owner"
    manager = _manager_of(ctx, latest.agent)
    if manager:
        return manager, (
            f"{note}, so {manager}, the manager of {latest.agent} (agent on the latest deal "
            f"{latest.opportunity_id}), to act or assign an owner"
        )
    return UNASSIGNED, (
        f"{note} and the manager of {latest.agent} (agent on the latest deal "
        f"{latest.opportunity_id}) is not on record, so {UNASSIGNED}: assign an owner"
    )


def _manager_of(ctx: AccountContext, agent_name: str | None) -> str | None:
    """The agent's manager from the sales teams, names matched case-folded."""
    if not agent_name:
        return None
    agent = ctx.agents.get(agent_name)
    if agent is None:
        folded = agent_name.casefold()
        agent = next((a for n, a in ctx.agents.items() if n.casefold() == folded), None)
    return agent.manager if agent is not None and agent.manager else None


def _due(rule: Rule, signals: Sequence[Signal], as_of: datetime) -> tuple[datetime, str]:
    """When the action is due, and a note on how that was worked out."""
    latest = as_of + timedelta(hours=rule.due_in_hours) if rule.due_in_hours else None
    if rule.due != "before_signal" and latest is not None:  # the rule model requires one
        return latest, f"due: {_number(rule.due_in_hours)} h after {iso(as_of)}"

    deadlines = []
    for signal in signals:
        if signal.type not in COUNTDOWN_TYPES:
            continue
        span = _UNIT_SPANS.get(signal.unit)
        if span is None:
            logger.warning(
                "signal %s has unit %r, not hours or days; its deadline is left out of rule %s",
                signal.type,
                signal.unit,
                rule.id,
            )
            continue
        deadlines.append((as_of + signal.value * span, signal.type))
    if not deadlines:
        due = latest or as_of
        return due, "due: no matched signal has a deadline, so " + (
            f"{_number(rule.due_in_hours)} h" if latest else "now"
        )

    deadline, source = min(deadlines)
    due = deadline - timedelta(hours=rule.due_margin_hours)
    note = f"due: {_number(rule.due_margin_hours)} h before the {source} deadline {iso(deadline)}"
    if latest is not None and latest < due:
        due, note = latest, note + f", capped at {_number(rule.due_in_hours)} h"
    if due < as_of:
        due, note = as_of, note + ", which leaves no margin: due now"
    return due, note


# --- placeholders ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Filler:
    """What placeholders are filled from: the account and the signals that matched."""

    ctx: AccountContext
    signals: Sequence[Signal]
    owner: str
    due: datetime
    as_of: datetime

    def of(self, signal_type: str) -> list[Signal]:
        return [s for s in self.signals if s.type == signal_type]

    def value(
        self, signal_type: str, pick: Callable[[Iterable[float]], float], scale: float = 1
    ) -> str:
        found = self.of(signal_type)
        return _number(pick(s.value for s in found) * scale) if found else _MISSING

    def names(
        self, signal_type: str, resolve: Callable[[AccountContext, str, str], str | None]
    ) -> str:
        """The records behind the signals' evidence, by name; the evidence text if unknown."""
        found: list[str] = []
        for signal in self.of(signal_type):
            for ev in signal.evidence:
                name = resolve(self.ctx, ev.kind, ev.ref) or ev.text
                if name not in found:
                    found.append(name)
        return _listing(found)


# How each placeholder of copilot.rules.PLACEHOLDERS is filled (the tests hold the two equal).
_FILLERS: dict[str, Callable[[_Filler], str]] = {
    "account": lambda f: f.ctx.account.name,
    "account_id": lambda f: f.ctx.account.account_id,
    "owner": lambda f: f.owner,
    "due": lambda f: f.due.strftime("%Y-%m-%d %H:%M UTC"),
    "contacts": lambda f: _contacts(f.ctx, f.as_of),
    "product": lambda f: _products(f.ctx, f.signals),
    "tender": lambda f: f.names("tender_countdown", _tender_title),
    "tender_hours": lambda f: f.value("tender_countdown", min),
    "budget_days": lambda f: f.value("budget_window_closing", min),
    "lead": lambda f: f.names("procurement_lead_changed", _person),
    "lead_days": lambda f: f.value("procurement_lead_changed", min),
    "champion": lambda f: f.names("champion_departed", _person),
    "champion_days": lambda f: f.value("champion_departed", min),
    "overdue_days": lambda f: f.value("purchase_rhythm_overdue", max),
    "reorder_days": lambda f: f.value("purchase_rhythm_due", min),
    "stock_units": lambda f: _stock_units(f),
    "policy": lambda f: f.names("policy_change", _policy_title),
    "policy_days": lambda f: f.value("policy_change", min),
    "competitor": lambda f: f.names("competitor_price_below", _competitor),
    "price_gap": lambda f: f.value("competitor_price_below", max, scale=100),
    "mentions": lambda f: f.value("competitor_mentioned", max),
    "objections": lambda f: f.value("unresolved_objection", max),
    "objection_quotes": lambda f: _listing(
        [f'"{ev.text}"' for s in f.of("unresolved_objection") for ev in s.evidence], sep="; "
    ),
    "idle_days": lambda f: f.value("no_activity", max),
}


def _number(x: float | None) -> str:
    """At most one decimal, none when whole: 60, 12.5."""
    if x is None:
        return _MISSING
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _listing(items: list[str], sep: str = ", ") -> str:
    if not items:
        return _MISSING
    more = len(items) - _MAX_LISTED
    return sep.join(items[:_MAX_LISTED]) + (f" (+{more})" if more > 0 else "")


def _contacts(ctx: AccountContext, as_of: datetime) -> str:
    """Who to call: the account's contacts still there at ``as_of``, champions first.

    A contact whose row is active but who has a later ``left`` change is gone too.
    """
    gone = departed_contacts(ctx, as_of)
    active = sorted(
        (c for c in ctx.contacts if c.contact_id not in gone and c.time <= as_of),
        key=lambda c: (not c.champion, c.name.casefold()),
    )
    return _listing([f"{c.name} ({c.role})" for c in active])


def _stock_units(f: _Filler) -> str:
    """Units available per low-stock product ("6 x GTX Pro, 1 x MG Advanced"), so that no
    count is read as another product's, in words that need no plural."""
    found = f.of("low_stock")
    if not found:
        return _MISSING
    return _listing([f"{_number(s.value)} x {_product_name(f.ctx, s.product_id)}" for s in found])


def _product_name(ctx: AccountContext, product_id: str | None) -> str:
    if product_id is None:
        return _MISSING
    return ctx.products[product_id].name if product_id in ctx.products else product_id


def _products(ctx: AccountContext, signals: Sequence[Signal]) -> str:
    ids = list(dict.fromkeys(s.product_id for s in signals if s.product_id))
    ids = ids or sorted(ctx.products_in_play())
    return _listing([_product_name(ctx, p) for p in ids])


def _tender_title(ctx: AccountContext, kind: str, ref: str) -> str | None:
    return next((t.title for t in ctx.tenders if t.tender_id == ref), None)


def _policy_title(ctx: AccountContext, kind: str, ref: str) -> str | None:
    return next((p.title for p in ctx.policies if p.policy_id == ref), None)


def _competitor(ctx: AccountContext, kind: str, ref: str) -> str | None:
    return next((p.competitor for p in ctx.competitor_prices if p.observation_id == ref), None)


def _person(ctx: AccountContext, kind: str, ref: str) -> str | None:
    """The contact's name behind a contact or contact-change evidence row."""
    contact_id = ref
    if kind == "contact_change":
        change = next((c for c in ctx.contact_changes if c.change_id == ref), None)
        if change is None:
            return None
        contact_id = change.contact_id
    return next((c.name for c in ctx.contacts if c.contact_id == contact_id), None)
