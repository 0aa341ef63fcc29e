"""Turns into retrieval chunks: each customer utterance with the rep turns around it.

A chunk keeps the objection and the answer together, which is what a rep asking
"how did we handle this before?" needs to see.

Chunk metadata must be storable and filterable in Chroma, which takes only str,
int, float, bool and non-empty lists of one such type, never None. So a missing
value is stored as "" (strings) or left out (lists), lists (``tags``,
``attendees`` from the call's extra metadata) become lists of strings, filterable
with ``{"tags": {"$contains": "vip"}}``, other scalar extras are kept as
``x_<key>``, and anything else is dropped with a warning: one odd record never
fails a batch.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from copilot.schemas import CallRecord, Chunk, Turn
from copilot.settings import IndexSettings, OutcomeSettings

logger = logging.getLogger(__name__)

SPEAKER_LABEL = {"rep": "Rep", "customer": "Customer"}


def chunk_id(call_id: str, turn_index: int) -> str:
    return f"{call_id}#{turn_index}"


def _render(turns: list[Turn]) -> str:
    return "\n".join(f"{SPEAKER_LABEL[t.speaker]}: {t.text}" for t in turns)


LIST_FIELDS = ("tags", "attendees")
_KEY = re.compile(r"[^0-9a-zA-Z_]+")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _string_list(value: Any) -> list[str]:
    """Tags from a list, or from a "a, b; c" string; case-folded, unique, in order."""
    if value is None:
        return []
    items = re.split(r"[,;]", value) if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set):
        items = [items]
    seen: dict[str, None] = {}
    for item in items:
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            tag = str(item).strip().casefold()
            if tag:
                seen[tag] = None
    return list(seen)


def _scalar(value: Any) -> str | int | float | bool | None:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def call_metadata(call: CallRecord, outcomes: OutcomeSettings) -> dict[str, Any]:
    """The metadata every chunk of ``call`` carries, in the form Chroma can store and filter."""
    meta: dict[str, Any] = {
        "call_id": call.call_id,
        "outcome": _text(call.outcome),
        "polarity": outcomes.polarity(call.outcome),
        "account_id": _text(call.account_id),
        "rep_id": _text(call.rep_id),
        "deal_id": _text(call.deal_id),
        "date": _text(call.date),
        "language": _text(call.language),
    }
    extra = call.extra if isinstance(call.extra, dict) else {}
    for field in LIST_FIELDS:
        values = _string_list(extra.get(field))
        if values:
            meta[field] = values
    dropped = []
    for key, value in extra.items():
        if key in LIST_FIELDS:
            continue
        name = "x_" + _KEY.sub("_", str(key)).strip("_")[:60]
        stored = _scalar(value)
        if stored is None or name == "x_":
            dropped.append(str(key))
        else:
            meta[name] = stored
    if dropped:
        logger.warning(
            "call %s: extra metadata %s is not a string, number or flag; not indexed",
            call.call_id,
            dropped,
        )
    return meta


def chunk_call(call: CallRecord, index: IndexSettings, outcomes: OutcomeSettings) -> list[Chunk]:
    turns = call.turns
    base = call_metadata(call, outcomes)
    chunks = []
    for i, turn in enumerate(turns):
        if turn.speaker != "customer":
            continue
        before = []
        j = i - 1
        while j >= 0 and turns[j].speaker == "rep" and len(before) < index.context_turns:
            before.insert(0, turns[j])
            j -= 1
        after = []
        j = i + 1
        while j < len(turns) and turns[j].speaker == "rep" and len(after) < index.reply_turns:
            after.append(turns[j])
            j += 1
        window = [*before, turn, *after]
        chunks.append(
            Chunk(
                chunk_id=chunk_id(call.call_id, i),
                call_id=call.call_id,
                text=_render(window),
                start=window[0].start,
                end=window[-1].end,
                metadata={
                    **base,
                    "turn_index": i,
                    # the speaker of the utterance the chunk is anchored on
                    "speaker": turn.speaker,
                    "customer_text": turn.text,
                    "reply_text": " ".join(t.text for t in after),
                    "start": float(window[0].start),
                    "end": float(window[-1].end),
                },
            )
        )
    return chunks
