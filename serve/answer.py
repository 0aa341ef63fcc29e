"""Answers for reps: ground the question, build the prompt, generate, check the reply.

    prepared = prepare_objection(service, "Too expensive.", account_id, choice, principal)
    answer = generate_answer(service, prepared)               # or:
    for item in stream_answer(service, prepared): ...         # str pieces, then the Answer

Both the objection handler and chat go through here, called from the generation
queue's worker thread (serve/generation.py), never on the event loop. The grounding
is the account's won-call excerpts (``rag.retrieve.references``, drawn only from
calls the caller's team may see) and, for chat, the account's strongest signals; all of it is quoted as data (copilot/prompts.py),
and every reply passes the output guard (copilot/guard.py) before anyone sees it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from copilot.errors import InputError, NotFoundError
from copilot.guard import ReplyGuard, Verdict, fallback
from copilot.prompts import DATA_RULE, chat_messages, objection_messages
from copilot.schemas import Citation
from training.generate import clean_reply

if TYPE_CHECKING:
    from copilot.keys import Principal
    from serve.service import CopilotService
    from serve.variants import ModelChoice

logger = logging.getLogger(__name__)

MAX_REFERENCES = 2  # won-call replies quoted in the prompt (a 135M model loses more in noise)
MAX_ACCOUNT_FACTS = 3  # signal summaries quoted in a chat prompt
MAX_FACT_CHARS = 240
# Streamed text is held back this many characters until more follows, so the guard and
# the reply cleaner (which cuts at "Customer:") see a figure or a label before it is sent.
HOLDBACK_CHARS = 24

# The prompt fences quoted data as <<...>> (copilot/prompts.py) and a model that copies a
# quote keeps the markers. A whole run of < and > goes at once, so that cutting one can
# never join its neighbours into a new marker.
_FENCE_MARKS = re.compile(r"[<>]{2,}")

Kind = Literal["objection", "chat"]


@dataclass
class Answer:
    reply: str
    adapter: str  # adapter name, or "base" for the base model
    citations: list[Citation]
    model: str = "copilot"
    guarded: str | None = None  # why the guard replaced the model's reply, else None
    experiment_id: str | None = None
    variant: str | None = None
    prompt_version: str | None = None
    suggestion_id: str | None = None  # set once the answer is in the decision log


@dataclass
class Prepared:
    """Everything one generation needs, built before the model is touched."""

    kind: Kind
    question: str
    messages: list[dict[str, str]]
    choice: ModelChoice
    citations: list[Citation]
    candidates: list[str]  # won-call replies, best first: the answer when the model gives none
    guard: ReplyGuard
    notes: list[str] = field(default_factory=list)
    max_new_tokens: int | None = None  # a client's lower limit (OpenAI's max_tokens)
    account_id: str | None = None  # the account asked about, for the decision log


def account_team(service: CopilotService, account_id: str) -> str | None:
    """The team that owns ``account_id`` (None when no team is recorded).

    An account known only from its calls has no team. NotFoundError when neither the
    account store nor any stored call knows the account."""
    try:
        return service.accounts.store.context(account_id).account.team
    except NotFoundError:
        if account_id in service.store.call_account_ids():
            return None
        raise NotFoundError(
            f"no account '{account_id}' among the stored accounts or calls; check the id "
            "(GET /v1/calls lists calls with their account_id)"
        ) from None


def _policy(service: CopilotService) -> list[str]:
    limit = service.settings.quotes.max_discount
    return [DATA_RULE, f"Never offer a discount above {limit * 100:g}%."]


def visible_accounts(
    service: CopilotService, principal: Principal | None
) -> tuple[str, ...] | None:
    """The accounts whose calls ``principal`` may see; None when no team limits it.

    The rule of GET /v1/calls (serve/api/routes/calls.py): a key limited to a team sees
    the calls of that team's accounts, and no call without an account."""
    if principal is None or principal.all_teams:
        return None
    from serve.jobs import account_teams

    teams = account_teams(service)
    return tuple(sorted(a for a, team in teams.items() if a and team == principal.team))


def _grounding(
    service: CopilotService,
    query: str,
    account_id: str | None,
    principal: Principal | None,
) -> tuple[list[Citation], list[str]]:
    """The cited excerpts the caller may see and the won-call replies among them (best first)."""
    from rag.retrieve import references

    hits = references(
        service.index,
        query,
        service.settings.index.top_k,
        account_id=account_id,
        account_ids=visible_accounts(service, principal),
    )
    outcomes = service.settings.outcomes
    won = [reply for c, reply in hits if reply and outcomes.polarity(c.outcome) > 0]
    return [c for c, _ in hits], won


def _account_facts(service: CopilotService, account_id: str | None) -> list[str]:
    """The account's strongest signals, one short line each (nothing for an unknown account)."""
    if not account_id:
        return []
    try:
        signals = service.accounts.signals(account_id)
    except NotFoundError:
        return []  # known only from its calls: no CRM facts to add
    return [s.summary[:MAX_FACT_CHARS] for s in signals[:MAX_ACCOUNT_FACTS] if s.summary]


def _customer_lines(excerpt: str) -> list[str]:
    """The customer's lines of a cited excerpt (rendered by rag.chunk as "Customer: ...")."""
    from rag.chunk import SPEAKER_LABEL

    label = f"{SPEAKER_LABEL['customer']}:"
    return [line[len(label) :] for line in excerpt.splitlines() if line.startswith(label)]


def _guard(
    service: CopilotService,
    citations: list[Citation],
    won: list[str],
    facts: list[str],
    choice: ModelChoice,
) -> ReplyGuard:
    # What the customer said and what the CRM says may not be recited; what reps said in
    # the cited calls may (the discount rule still applies to it).
    heard = [line for c in citations for line in _customer_lines(c.text)]
    return ReplyGuard(
        service.settings.quotes.max_discount,
        untrusted=heard + facts,
        allowed=won,
        trusted=choice.knowledge,
    )


def prepare_objection(
    service: CopilotService,
    text: str,
    account_id: str | None,
    choice: ModelChoice,
    principal: Principal | None = None,
) -> Prepared:
    """The prompt for a reply to the customer's ``text``, grounded in the account's won calls
    (of the calls ``principal`` may see; None: every call, for the CLI)."""
    if not text or not text.strip():
        raise InputError("'text' is empty; pass the customer's words, e.g. \"it's too expensive\"")
    citations, won = _grounding(service, text, account_id, principal)
    messages = objection_messages(
        text,
        won[:MAX_REFERENCES],
        system=choice.system_prompt,
        knowledge=choice.knowledge,
        policy=_policy(service),
    )
    return Prepared(
        kind="objection",
        question=text,
        messages=messages,
        choice=choice,
        citations=citations,
        candidates=won,
        guard=_guard(service, citations, won, [], choice),
        account_id=account_id,
    )


def chat_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rep's user/assistant turns; a client's system message is never trusted: it is
    dropped (and logged), as are empty messages."""
    turns = [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m.get("role") in {"user", "assistant"} and str(m.get("content", "")).strip()
    ]
    if not turns or turns[-1]["role"] != "user":
        raise InputError("messages must end with a non-empty 'user' message")
    dropped = [m.get("role") for m in messages if m.get("role") not in {"user", "assistant"}]
    if dropped:
        logger.warning("chat: dropped %d client message(s) with role %s", len(dropped), dropped)
    return turns


def prepare_chat(
    service: CopilotService,
    messages: list[dict[str, str]],
    account_id: str | None,
    choice: ModelChoice,
    principal: Principal | None = None,
) -> Prepared:
    """The prompt for the next chat message, grounded in the account's calls and signals
    (of the calls ``principal`` may see; None: every call, for the CLI)."""
    turns = chat_turns(messages)
    question = turns[-1]["content"]
    citations, won = _grounding(service, question, account_id, principal)
    facts = _account_facts(service, account_id)
    prompt = chat_messages(
        turns,
        excerpts=[c.text for c in citations[:MAX_REFERENCES]],
        account_facts=facts,
        system=choice.system_prompt,
        knowledge=choice.knowledge,
        policy=_policy(service),
    )
    return Prepared(
        kind="chat",
        question=question,
        messages=prompt,
        choice=choice,
        citations=citations,
        candidates=won,
        guard=_guard(service, citations, won, facts, choice),
        notes=facts,
        account_id=account_id,
    )


def _unfence(text: str) -> str:
    return _FENCE_MARKS.sub("", text).strip()


def _clean(prepared: Prepared, raw: str) -> str:
    """The reply so far, as a rep may see it; streamed pieces are cut from this too, so no
    fence marker reaches a rep on either path."""
    return _unfence(clean_reply(raw) if prepared.kind == "objection" else raw)


def _finish(prepared: Prepared, reply: str, verdict: Verdict | None = None) -> Answer:
    """The Answer for ``reply``: guarded, and never empty."""
    if verdict is None:
        reply, verdict = prepared.guard.safe_reply(reply, prepared.question, prepared.kind)
    elif not verdict.ok:
        reply, _ = prepared.guard.safe_reply(reply, prepared.question, prepared.kind)
    if not reply:
        # A small model sometimes produces nothing usable after cleaning; the best reply
        # from a won call is a better answer than none.
        logger.warning("the model gave no usable reply; answering with a won-call reply")
        usable = (_unfence(c) for c in prepared.candidates)
        reply = next(
            (c for c in usable if c and prepared.guard.check(c).ok),
            fallback(prepared.question, prepared.kind),
        )
    choice = prepared.choice
    return Answer(
        reply=reply,
        adapter=choice.adapter_name,
        citations=prepared.citations,
        model=choice.model,
        guarded=verdict.reason if not verdict.ok else None,
        experiment_id=choice.experiment_id,
        variant=choice.variant,
        prompt_version=choice.prompt_version,
    )


def generate_answer(
    service: CopilotService, prepared: Prepared, stop: threading.Event | None = None
) -> Answer:
    """Generate, clean and guard the whole reply at once."""
    raw = service.generator.chat(
        prepared.messages,
        prepared.choice.adapter,
        stop=stop,
        max_new_tokens=prepared.max_new_tokens,
    )
    return _finish(prepared, _clean(prepared, raw))


def stream_answer(
    service: CopilotService, prepared: Prepared, stop: threading.Event | None = None
) -> Iterator[str | Answer]:
    """The reply's text in pieces as it is generated, then the final Answer.

    The joined pieces are a prefix of the final reply, except when the guard refuses
    the reply part-way: generation stops there and the Answer carries the replacement
    (``guarded`` says why). Clients show the Answer's reply as the final text.
    """
    raw = ""
    sent = ""
    verdict: Verdict | None = None
    pieces = service.generator.stream(
        prepared.messages,
        prepared.choice.adapter,
        stop=stop,
        max_new_tokens=prepared.max_new_tokens,
    )
    with contextlib.closing(pieces):
        for piece in pieces:
            raw += piece
            cleaned = _clean(prepared, raw)
            verdict = prepared.guard.check(cleaned)
            if not verdict.ok:
                break  # closing the stream stops the generation
            ready = cleaned[: max(0, len(cleaned) - HOLDBACK_CHARS)]
            if ready.startswith(sent) and len(ready) > len(sent):
                yield ready[len(sent) :]
                sent = ready
    final = _finish(prepared, _clean(prepared, raw), verdict)
    if final.guarded is None and final.reply.startswith(sent) and len(final.reply) > len(sent):
        yield final.reply[len(sent) :]
    yield final
