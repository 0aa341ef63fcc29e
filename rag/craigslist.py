"""CraigslistBargain negotiations (He et al., EMNLP 2018) as calls.

The folder holds ``dialogues.json`` (a list of dialogues) beside
``craigslist-schema.json``, the origin's layout. Each dialogue has a ``uuid``, a
``scenario`` whose ``kbs`` give each agent's role (buyer or seller), private
``Target`` price and the listing (``item``: Title, Category, Price = list price),
an ``outcome`` (``reward`` 1 = deal, ``offer.price`` = the final offer), and
``events`` (``agent`` 0/1, ``action`` message / offer / accept / reject / quit,
``data``, epoch ``start_time`` and ``time``).

We sell, so the seller is the rep and the buyer the customer. Messages become
turns, a speaker's consecutive messages one turn. The formal moves (offer,
accept, reject, quit) are kept as turns of their own, written as upper-case tags
(``[OFFER] 2900``, ``[ACCEPT]``): they say who named the final price and how the
talk ended, 12 dialogues consist of nothing else, and the objection detector
reads bracketed upper-case tags as markers, not speech (as it does the redaction
tags), so a move is never mined as an objection. Events carry real times, so turn
times are seconds from the first event.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from copilot.errors import InputError
from copilot.schemas import Speaker, Turn
from rag.parse import ParsedCall, _timed

logger = logging.getLogger(__name__)

DIALOGUES_FILE = "dialogues.json"
SCHEMA_FILE = "craigslist-schema.json"
CALL_PREFIX = "craigslist-"

NEAR_TARGET = "deal near target"
BELOW_TARGET = "deal below target"
NO_DEAL = "no deal"

ROLES: dict[str, Speaker] = {"seller": "rep", "buyer": "customer"}
# Longer than anyone types one chat message; a start time further back is not a start time.
MAX_TYPING_S = 3600.0
MOVES = {"offer": "[OFFER]", "accept": "[ACCEPT]", "reject": "[REJECT]", "quit": "[QUIT]"}


def is_craigslist_folder(path: Path) -> bool:
    return path.is_dir() and (path / DIALOGUES_FILE).is_file() and (path / SCHEMA_FILE).is_file()


def craigslist_files(folder: Path) -> list[Path]:
    """The files a negotiation folder is read from (what its content hash covers)."""
    return [folder / DIALOGUES_FILE]


def call_id_for(uuid: str) -> str:
    return f"{CALL_PREFIX}{uuid}"


def deal_outcome(deal: bool, final_price: float | None, seller_target: float, share: float) -> str:
    """The outcome label: a deal at ``share`` of the seller's target or above is "deal near
    target" (configs/default.yaml, sources.craigslist, says why), a lower one "deal below
    target"; a talk that ended without a deal is "no deal"."""
    if not deal or final_price is None:
        return NO_DEAL
    return NEAR_TARGET if target_share(final_price, seller_target) >= share else BELOW_TARGET


def target_share(final_price: float, seller_target: float) -> float:
    """The final price as a share of the seller's target, rounded so that a deal exactly at
    the threshold (1800 of 2000 at 0.9) counts as at it, whatever the float arithmetic."""
    return round(final_price / seller_target, 4)


def parse_craigslist_folder(folder: Path, near_target_share: float) -> list[ParsedCall]:
    """One call per dialogue, in file order. A dialogue that lacks the fields above is
    skipped with a warning; a file in which none parses is refused."""
    path = folder / DIALOGUES_FILE
    dialogues = _load(path)

    calls: list[ParsedCall] = []
    skipped: list[str] = []
    for i, dialogue in enumerate(dialogues):
        try:
            calls.append(_dialogue_call(dialogue, near_target_share))
        except _Unreadable as exc:
            skipped.append(f"dialogue {i}: {exc}")
    if not calls:
        first = skipped[0] if skipped else "the list is empty"
        raise InputError(
            f"{path} holds no readable CraigslistBargain dialogue ({first}); each needs 'uuid', "
            "'scenario.kbs' with the buyer's and seller's 'personal.Target' and the item "
            "'Price', 'outcome.reward' and a non-empty 'events' list"
        )
    if skipped:
        logger.warning(
            "%s: %d dialogues skipped, first: %s", path, len(skipped), "; ".join(skipped[:3])
        )
    logger.info("%s: %d negotiations", path, len(calls))
    return calls


class _Unreadable(Exception):
    """One dialogue lacks a field the call needs (reported, then skipped)."""


def _load(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text; save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "restore the original file or fix the JSON there"
        ) from exc
    if not isinstance(data, list):
        raise InputError(
            f"{path} must hold a JSON list of dialogues (the CraigslistBargain layout); it holds "
            f"a {type(data).__name__}"
        )
    return data


def _dialogue_call(dialogue: Any, share: float) -> ParsedCall:
    if not isinstance(dialogue, dict) or not isinstance(dialogue.get("uuid"), str):
        raise _Unreadable("no 'uuid'")
    uuid = dialogue["uuid"]
    scenario = dialogue.get("scenario") or {}
    kbs = scenario.get("kbs") if isinstance(scenario, dict) else None
    if not isinstance(kbs, list) or len(kbs) != 2:
        raise _Unreadable(f"{uuid} has no 'scenario.kbs' pair")
    roles: dict[int, str] = {}
    sides: dict[str, dict[str, Any]] = {}
    for agent, kb in enumerate(kbs):
        role = ((kb or {}).get("personal") or {}).get("Role")
        if role not in ROLES:
            raise _Unreadable(f"{uuid}: agent {agent} has role {role!r}, not buyer or seller")
        roles[agent] = role
        sides[role] = kb
    if set(sides) != set(ROLES):
        raise _Unreadable(f"{uuid} needs one buyer and one seller")

    seller, buyer = sides["seller"], sides["buyer"]
    item = seller.get("item") or {}
    seller_target = _price(seller["personal"].get("Target"))
    buyer_target = _price(buyer["personal"].get("Target"))
    list_price = _price(item.get("Price"))
    if seller_target is None or seller_target <= 0 or buyer_target is None or list_price is None:
        raise _Unreadable(f"{uuid} lacks the targets or the list price")
    outcome = dialogue.get("outcome") or {}
    if not isinstance(outcome, dict) or outcome.get("reward") not in (0, 1):
        raise _Unreadable(f"{uuid} has no 'outcome.reward' of 0 or 1")
    deal = outcome["reward"] == 1
    offer = outcome.get("offer")
    final_price = _price(offer.get("price")) if deal and isinstance(offer, dict) else None
    if deal and final_price is None:
        raise _Unreadable(f"{uuid} is a deal without a price ('outcome.offer.price')")

    turns, first_time = _turns(dialogue.get("events"), roles, uuid)
    extra: dict[str, Any] = {
        "dataset": "craigslist",
        "scenario_id": str(dialogue.get("scenario_uuid") or scenario.get("uuid") or ""),
        "post_id": str(scenario.get("post_id") or ""),
        "category": str(scenario.get("category") or item.get("Category") or ""),
        "title": str(item.get("Title") or ""),
        "list_price": list_price,
        "seller_target": seller_target,
        "buyer_target": buyer_target,
        "deal": deal,
    }
    if final_price is not None:
        extra["final_price"] = final_price
        extra["target_share"] = target_share(final_price, seller_target)
    meta: dict[str, Any] = {
        "outcome": deal_outcome(deal, final_price, seller_target, share),
        "extra": {k: v for k, v in extra.items() if v != ""},
    }
    if first_time is not None:
        meta["date"] = datetime.fromtimestamp(first_time, UTC).date().isoformat()
    return ParsedCall(call_id=call_id_for(uuid), turns=turns, meta=meta)


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        price = float(value)
    except ValueError:
        return None
    return price if math.isfinite(price) else None


def _moment(value: Any) -> float | None:
    """An event's epoch seconds; the origin writes 0 for placeholder events."""
    moment = _price(value)
    return moment if moment is not None and moment > 0 else None


def _move_text(action: str, data: Any) -> str:
    tag = MOVES[action]
    price = _price(data.get("price")) if action == "offer" and isinstance(data, dict) else None
    if price is None:
        return tag
    return f"{tag} {int(price) if price.is_integer() else price}"


def _turns(events: Any, roles: dict[int, str], uuid: str) -> tuple[list[Turn], float | None]:
    """Turns with seconds from the first one, and its epoch time. Without usable times the
    turns get the reading-speed estimate of rag/parse.py."""
    if not isinstance(events, list):
        raise _Unreadable(f"{uuid} has no 'events' list")
    said: list[tuple[Speaker, str, bool, float | None, float | None]] = []
    previous_end: float | None = None
    for event in events:
        if not isinstance(event, dict):
            continue
        action, agent = event.get("action"), event.get("agent")
        if agent not in roles or (action != "message" and action not in MOVES):
            continue  # the origin's placeholder events have action "None"
        speaker = ROLES[roles[agent]]
        if action == "message":
            text = " ".join(str(event.get("data") or "").split())
            if not text:
                continue
        else:
            text = _move_text(action, event.get("data"))
        end = _moment(event.get("time"))
        start = _moment(event.get("start_time"))
        if end is not None and (start is None or not 0 <= end - start <= MAX_TYPING_S):
            # Moves have no start time, and 28 messages of the origin carry a small offset
            # there instead of an epoch time: such a turn starts when the one before ended.
            start = min(previous_end, end) if previous_end is not None else end
        previous_end = end if end is not None else previous_end
        said.append((speaker, text, action == "message", start, end))
    if not said:
        raise _Unreadable(f"{uuid} has no messages or moves")

    # A speaker's consecutive messages are one turn; moves stay turns of their own.
    merged: list[list[Any]] = []
    for speaker, text, is_message, start, end in said:
        last = merged[-1] if merged else None
        if last and is_message and last[2] and last[0] == speaker:
            last[1] = f"{last[1]} {text}"
            last[4] = end
        else:
            merged.append([speaker, text, is_message, start, end])

    if any(start is None or end is None for *_, start, end in merged):
        return _timed([(speaker, text) for speaker, text, *_ in merged]), None
    # Seconds from the first turn. A reply may have been started before the message it
    # follows arrived (both typed at once); it is then placed right after that message.
    origin = merged[0][3]
    turns, clock = [], 0.0
    for speaker, text, _, start, end in merged:
        begin = max(start - origin, clock)  # keep the order when clocks disagree
        clock = max(end - origin, begin)
        turns.append(Turn(speaker=speaker, start=round(begin, 2), end=round(clock, 2), text=text))
    return turns, origin
