"""Turns into retrieval chunks: each customer utterance with the rep turns around it.

A chunk keeps the objection and the answer together, which is what a rep asking
"how did we handle this before?" needs to see.
"""

from __future__ import annotations

from copilot.schemas import CallRecord, Chunk, Turn
from copilot.settings import IndexSettings, OutcomeSettings

SPEAKER_LABEL = {"rep": "Rep", "customer": "Customer"}


def chunk_id(call_id: str, turn_index: int) -> str:
    return f"{call_id}#{turn_index}"


def _render(turns: list[Turn]) -> str:
    return "\n".join(f"{SPEAKER_LABEL[t.speaker]}: {t.text}" for t in turns)


def chunk_call(call: CallRecord, index: IndexSettings, outcomes: OutcomeSettings) -> list[Chunk]:
    turns = call.turns
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
                    "call_id": call.call_id,
                    "turn_index": i,
                    "speaker": "customer",
                    "customer_text": turn.text,
                    "reply_text": " ".join(t.text for t in after),
                    "outcome": call.outcome or "",
                    "polarity": outcomes.polarity(call.outcome),
                    "account_id": call.account_id or "",
                    "rep_id": call.rep_id or "",
                    "language": call.language or "",
                    "start": window[0].start,
                    "end": window[-1].end,
                },
            )
        )
    return chunks
