"""Retrieval of call excerpts with metadata filters, as citations."""

from __future__ import annotations

from copilot.schemas import Citation
from rag.index import ChunkIndex


def build_filter(
    outcome: str | None = None,
    objection: str | None = None,
    polarity: int | None = None,
    account_id: str | None = None,
    with_reply: bool = False,
) -> dict | None:
    """A Chroma ``where`` clause from the filters that are set (None when none is)."""
    clauses: list[dict] = []
    if with_reply:
        clauses.append({"reply_text": {"$ne": ""}})
    if outcome:
        clauses.append({"outcome": outcome})
    if objection:
        clauses.append({f"obj_{objection}": True})
    if polarity is not None:
        clauses.append({"polarity": polarity})
    if account_id:
        clauses.append({"account_id": account_id})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _citation(meta: dict, text: str, score: float) -> Citation:
    return Citation(
        call_id=meta["call_id"],
        start=float(meta["start"]),
        end=float(meta["end"]),
        text=text,
        score=round(score, 4),
        outcome=meta.get("outcome") or None,
    )


def retrieve(index: ChunkIndex, query: str, k: int, **filters) -> list[Citation]:
    return [_citation(*hit) for hit in index.search(query, k=k, where=build_filter(**filters))]


def references(
    index: ChunkIndex, query: str, k: int, account_id: str | None = None
) -> list[tuple[Citation, str]]:
    """Excerpts in which the rep answered, from positive-outcome calls first (what
    worked), else from any call; each with the rep's reply."""
    hits = index.search(
        query, k=k, where=build_filter(polarity=1, account_id=account_id, with_reply=True)
    )
    if not hits:
        hits = index.search(query, k=k, where=build_filter(account_id=account_id, with_reply=True))
    return [
        (_citation(meta, text, score), meta.get("reply_text", "")) for meta, text, score in hits
    ]
