"""Retrieval of call excerpts with metadata filters, as citations."""

from __future__ import annotations

from copilot.schemas import Citation
from rag.index import ChunkIndex


def build_filter(
    outcome: str | None = None,
    objection: str | None = None,
    polarity: int | None = None,
    account_id: str | None = None,
) -> dict | None:
    clauses: list[dict] = []
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


def retrieve(index: ChunkIndex, query: str, k: int, **filters) -> list[Citation]:
    hits = index.search(query, k=k, where=build_filter(**filters))
    return [
        Citation(
            call_id=meta["call_id"],
            start=float(meta["start"]),
            end=float(meta["end"]),
            text=text,
            score=round(score, 4),
            outcome=meta.get("outcome") or None,
        )
        for meta, text, score in hits
    ]


def references(
    index: ChunkIndex, query: str, k: int, account_id: str | None = None
) -> list[tuple[Citation, str]]:
    """Excerpts from positive-outcome calls first (what worked), then any call; with the rep's reply."""
    where = build_filter(polarity=1, account_id=account_id)
    hits = index.search(query, k=k, where=where)
    if not hits:
        hits = index.search(query, k=k, where=build_filter(account_id=account_id))
    out = []
    for meta, text, score in hits:
        citation = Citation(
            call_id=meta["call_id"],
            start=float(meta["start"]),
            end=float(meta["end"]),
            text=text,
            score=round(score, 4),
            outcome=meta.get("outcome") or None,
        )
        out.append((citation, meta.get("reply_text", "")))
    return out
