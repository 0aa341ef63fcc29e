"""Objection mining over stored calls: detect customer objections, pair each with the rep's reply."""

from __future__ import annotations

import logging
import time
from collections import Counter

from copilot.objections import ObjectionDetector
from copilot.schemas import CallRecord, Objection
from copilot.settings import Settings
from copilot.store import Store
from rag.chunk import chunk_id
from rag.embed import SentenceEmbedder

logger = logging.getLogger(__name__)

MAX_REPLY_TURNS = 2


def reply_after(call: CallRecord, index: int) -> tuple[str, float]:
    """The rep's reply to the customer turn at ``index``: the rep turns up to the next customer turn."""
    parts, end = [], call.turns[index].end
    for turn in call.turns[index + 1 :]:
        if turn.speaker != "rep" or len(parts) == MAX_REPLY_TURNS:
            break
        parts.append(turn.text)
        end = turn.end
    return " ".join(parts), end


def mine_calls(calls: list[CallRecord], detector: ObjectionDetector, outcomes) -> list[Objection]:
    """Objections in ``calls``; every customer turn is classified in one batch (embedding is the cost)."""
    positions = [
        (call, i) for call in calls for i, t in enumerate(call.turns) if t.speaker == "customer"
    ]
    detections = detector.detect([call.turns[i].text for call, i in positions])
    found = []
    for (call, i), detection in zip(positions, detections, strict=True):
        if detection is None:
            continue
        reply, end = reply_after(call, i)
        if not reply:
            continue  # an objection nobody answered gives no pair to learn from
        found.append(
            Objection(
                call_id=call.call_id,
                turn_index=i,
                type=detection.type,
                customer_text=call.turns[i].text,
                reply_text=reply,
                start=call.turns[i].start,
                end=end,
                outcome=call.outcome,
                polarity=outcomes.polarity(call.outcome),
                score=round(detection.score, 4),
                method=detection.method,  # type: ignore[arg-type]
            )
        )
    return found


def mine_store(
    settings: Settings, store: Store, embedder: SentenceEmbedder
) -> tuple[list[Objection], dict[str, list[str]]]:
    """Every objection in every stored call, and the chunk labels to write into the index."""
    started = time.perf_counter()
    detector = ObjectionDetector(settings.objections, embed=embedder.encode)
    calls = [store.get_call(meta.call_id) for meta in store.list_calls()]
    objections = mine_calls(calls, detector, settings.outcomes)

    labels: dict[str, list[str]] = {}
    for o in objections:
        labels.setdefault(chunk_id(o.call_id, o.turn_index), []).append(o.type)
    logger.info(
        "mined %d objections in %.1f s: %s",
        len(objections),
        time.perf_counter() - started,
        dict(Counter(o.type for o in objections)),
    )
    return objections, labels
