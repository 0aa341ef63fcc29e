"""Hybrid retrieval of call excerpts: BM25 and vector results fused by reciprocal rank.

Each side ranks the chunks that pass the same metadata filter (one Chroma ``where``
clause, which ``rag.lexical.matches`` evaluates the way Chroma does), fetching
more than ``k`` so that a chunk ranked low by one side and high by the other can
still surface. Reciprocal rank fusion (Cormack et al., 2009) needs no score
calibration between cosine similarities and BM25 scores, which live on
unrelated scales: a chunk scores ``sum(1 / (RRF_K + rank))`` over the sides that
found it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from copilot.schemas import Citation
from rag.index import ChunkIndex, IndexHit

Mode = Literal["hybrid", "vector", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "lexical")

RRF_K = 60  # the constant from the RRF paper; it damps the weight of the very top ranks
FETCH_FACTOR = 4
MIN_FETCH = 20


@dataclass(frozen=True)
class ChunkFilter:
    """Which chunks may be returned; every set field must hold (None / empty = any)."""

    outcome: str | None = None
    polarity: int | None = None  # +1 positive-outcome calls only, -1 negative ones
    objection: str | None = None
    account_id: str | None = None
    # Only calls of these accounts (a caller's visible accounts); None = any account, and
    # an empty tuple matches nothing, not even calls that have no account.
    account_ids: tuple[str, ...] | None = None
    rep_id: str | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()  # all of them
    with_reply: bool = False  # only chunks in which the rep answered

    @property
    def matches_nothing(self) -> bool:
        """True for an empty ``account_ids``: Chroma refuses an empty ``$in``, so ``search``
        answers without asking the index."""
        return self.account_ids is not None and not self.account_ids

    def where(self) -> dict[str, Any] | None:
        """The Chroma ``where`` clause (None when no field is set)."""
        if self.matches_nothing:
            raise ValueError(
                "account_ids is empty, so no chunk can match; check matches_nothing first"
            )
        clauses: list[dict[str, Any]] = []
        if self.with_reply:
            clauses.append({"reply_text": {"$ne": ""}})
        for key in ("outcome", "account_id", "rep_id", "language"):
            value = getattr(self, key)
            if value:
                clauses.append({key: value})
        if self.account_ids is not None:
            clauses.append({"account_id": {"$in": sorted(set(self.account_ids))}})
        if self.objection:
            clauses.append({f"obj_{self.objection}": True})
        if self.polarity is not None:
            clauses.append({"polarity": self.polarity})
        # chunk metadata holds tags case-folded (rag.chunk)
        clauses.extend({"tags": {"$contains": t.strip().casefold()}} for t in self.tags)
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def build_filter(**fields: Any) -> dict[str, Any] | None:
    """A Chroma ``where`` clause from ``ChunkFilter`` fields (kept for existing callers)."""
    return ChunkFilter(**fields).where()


@dataclass(frozen=True)
class SearchHit:
    """A retrieved chunk. ``score`` is the fused score scaled to 0..1 (1 = ranked first by
    every side that ran); the per-side ranks and raw scores say where it came from."""

    call_id: str
    start: float
    end: float
    speaker: str  # the speaker of the utterance the chunk is anchored on
    text: str
    score: float
    chunk_id: str
    outcome: str | None = None
    objections: list[str] = field(default_factory=list)
    vector_rank: int | None = None
    vector_similarity: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None
    reply_text: str = ""

    def citation(self) -> Citation:
        return Citation(
            call_id=self.call_id,
            start=self.start,
            end=self.end,
            text=self.text,
            score=self.score,
            outcome=self.outcome,
        )


def search(
    index: ChunkIndex,
    query: str,
    k: int,
    chunk_filter: ChunkFilter | None = None,
    mode: Mode = "hybrid",
) -> list[SearchHit]:
    """The ``k`` best chunks for ``query`` that pass ``chunk_filter``."""
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; use one of {', '.join(MODES)}")
    chunk_filter = chunk_filter or ChunkFilter()
    if chunk_filter.matches_nothing:
        return []
    where = chunk_filter.where()
    depth = k if mode != "hybrid" else max(k * FETCH_FACTOR, MIN_FETCH)

    # Each side ranks the filtered chunks on its own
    sides: dict[str, list[IndexHit]] = {}
    if mode in ("hybrid", "vector"):
        sides["vector"] = index.vector_search(query, depth, where)
    if mode in ("hybrid", "lexical"):
        sides["lexical"] = index.lexical_search(query, depth, where)

    # Fuse by reciprocal rank
    fused: dict[str, float] = {}
    first: dict[str, IndexHit] = {}
    ranks: dict[str, dict[str, tuple[int, float]]] = {}
    for side, hits in sides.items():
        for rank, hit in enumerate(hits, start=1):
            fused[hit.chunk_id] = fused.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(hit.chunk_id, hit)
            ranks.setdefault(hit.chunk_id, {})[side] = (rank, hit.score)
    best = len(sides) / (RRF_K + 1)
    # ties (one side each at the same rank) go to the vector side's pick, then by id
    order = sorted(
        fused,
        key=lambda cid: (-fused[cid], ranks[cid].get("vector", (depth + 1, 0.0))[0], cid),
    )
    return [_hit(first[cid], fused[cid] / best, ranks[cid]) for cid in order[:k]]


def _hit(hit: IndexHit, score: float, ranks: dict[str, tuple[int, float]]) -> SearchHit:
    meta = hit.metadata
    objections = meta.get("objections") or []
    if isinstance(objections, str):  # chunks labelled before the list form
        objections = [o for o in objections.split(",") if o]
    vector = ranks.get("vector")
    lexical = ranks.get("lexical")
    return SearchHit(
        call_id=str(meta.get("call_id", "")),
        start=float(meta.get("start", 0.0)),
        end=float(meta.get("end", 0.0)),
        speaker=str(meta.get("speaker", "")),
        text=hit.text,
        score=round(score, 4),
        chunk_id=hit.chunk_id,
        outcome=meta.get("outcome") or None,
        objections=list(objections),
        vector_rank=vector[0] if vector else None,
        vector_similarity=round(vector[1], 4) if vector else None,
        lexical_rank=lexical[0] if lexical else None,
        lexical_score=round(lexical[1], 4) if lexical else None,
        reply_text=str(meta.get("reply_text", "")),
    )


def retrieve(index: ChunkIndex, query: str, k: int, **filters: Any) -> list[SearchHit]:
    """Hybrid search with the ``ChunkFilter`` fields given as keywords."""
    return search(index, query, k, ChunkFilter(**filters))


def references(
    index: ChunkIndex,
    query: str,
    k: int,
    account_id: str | None = None,
    account_ids: tuple[str, ...] | None = None,
) -> list[tuple[Citation, str]]:
    """Excerpts in which the rep answered, from positive-outcome calls first (what
    worked), else from any call; each with the rep's reply.

    ``account_ids`` limits both sides of the search to the calls a caller may see (None:
    every call); it is part of the filter, so the ``k`` results are the best visible ones.
    """
    scope = {"account_id": account_id, "account_ids": account_ids, "with_reply": True}
    hits = search(index, query, k, ChunkFilter(polarity=1, **scope))
    if not hits:
        hits = search(index, query, k, ChunkFilter(**scope))
    return [(h.citation(), h.reply_text) for h in hits]
