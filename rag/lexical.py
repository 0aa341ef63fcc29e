"""The lexical (BM25) side of hybrid retrieval, and the metadata filter both sides share.

Why our own index rather than langchain-community's ``BM25Retriever``: that one
wraps ``rank_bm25``, which scores by looping over every document in Python for
each query term, takes no metadata filter, and can only be rebuilt whole when a
call is replaced. Here each term keeps a postings array, so a query touches only
the documents that hold its terms; replacing a call marks the index dirty and the
arrays are recompiled on the next query. The index is not persisted: it is
rebuilt from the documents Chroma already stores (see ``rag.index``).

Filters are Chroma ``where`` clauses, evaluated here by ``matches`` with the
same meaning Chroma gives them, so one clause restricts both sides alike.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

# Han, kana, Hangul and CJK punctuation-free ranges: scripts written without spaces
# (Hangul uses spaces but its syllable blocks behave the same way under bigrams).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = rf"[^\W_{_CJK}]+"  # letters and digits of the scripts that space their words
_TOKEN = re.compile(rf"[{_CJK}]+|{_WORD}(?:['’]{_WORD})*")
_IS_CJK = re.compile(rf"[{_CJK}]")

K1 = 1.5
B = 0.75


def tokenize(text: str) -> list[str]:
    """Case-folded words; runs of CJK characters become overlapping character bigrams.

    Chinese has no spaces and no word list is bundled, so bigrams are the usual
    dictionary-free choice: "太贵了" -> "太贵", "贵了". A lone CJK character stays a
    unigram so a one-character query still matches.
    """
    tokens: list[str] = []
    for run in _TOKEN.findall(text.casefold()):
        if _IS_CJK.match(run):
            if len(run) == 1:
                tokens.append(run)
            else:
                tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            tokens.append(run)
    return tokens


# --- the filter both sides share ---------------------------------------------


def matches(where: dict[str, Any] | None, meta: dict[str, Any]) -> bool:
    """Whether ``meta`` satisfies the Chroma ``where`` clause (None matches all).

    Mirrors Chroma's rules: a comparison on a key the record lacks is false, except
    ``$ne``/``$nin``/``$not_contains``, which a missing key satisfies.
    """
    if not where:
        return True
    for key, cond in where.items():
        if key == "$and":
            if not all(matches(c, meta) for c in cond):
                return False
        elif key == "$or":
            if not any(matches(c, meta) for c in cond):
                return False
        elif isinstance(cond, dict):
            if not all(_compare(op, meta.get(key), arg, key in meta) for op, arg in cond.items()):
                return False
        elif not _compare("$eq", meta.get(key), cond, key in meta):
            return False
    return True


def _compare(op: str, value: Any, arg: Any, present: bool) -> bool:
    negated = {"$ne": "$eq", "$nin": "$in", "$not_contains": "$contains"}
    if op in negated:
        return not present or not _compare(negated[op], value, arg, present)
    if not present:
        return False
    if op == "$eq":
        return value == arg if not isinstance(value, list) else False
    if op == "$in":
        return value in arg
    if op == "$contains":
        return isinstance(value, list) and arg in value
    if op in {"$gt", "$gte", "$lt", "$lte"}:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return {
            "$gt": value > arg,
            "$gte": value >= arg,
            "$lt": value < arg,
            "$lte": value <= arg,
        }[op]
    raise ValueError(
        f"unsupported filter operator {op!r}; use $eq, $ne, $in, $nin, $gt(e), $lt(e), $contains"
    )


# --- the index -----------------------------------------------------------------


@dataclass(frozen=True)
class LexicalHit:
    chunk_id: str
    score: float


@dataclass
class _Compiled:
    ids: list[str]
    lengths: np.ndarray
    avg_length: float
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term -> (doc positions, term counts)


class LexicalIndex:
    """BM25 (Okapi, k1=1.5, b=0.75) over chunk texts, with per-chunk metadata for filters."""

    def __init__(self) -> None:
        self._terms: dict[str, Counter[str]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._text: dict[str, str] = {}  # kept so a hit needs no second trip to Chroma
        self._compiled: _Compiled | None = None

    def __len__(self) -> int:
        return len(self._terms)

    def add(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        for cid, text, meta in zip(ids, texts, metadatas, strict=True):
            self._terms[cid] = Counter(tokenize(text or ""))
            self._meta[cid] = dict(meta or {})
            self._text[cid] = text or ""
        self._compiled = None

    def remove(self, ids: list[str]) -> None:
        for cid in ids:
            self._terms.pop(cid, None)
            self._meta.pop(cid, None)
            self._text.pop(cid, None)
        self._compiled = None

    def ids_where(self, where: dict[str, Any]) -> list[str]:
        return [cid for cid, meta in self._meta.items() if matches(where, meta)]

    def update_metadata(self, cid: str, meta: dict[str, Any]) -> None:
        """Metadata only (objection labels): the postings stay valid."""
        if cid in self._meta:
            self._meta[cid] = dict(meta)

    def metadata(self, cid: str) -> dict[str, Any]:
        return self._meta[cid]

    def text(self, cid: str) -> str:
        return self._text[cid]

    def _compile(self) -> _Compiled:
        ids = list(self._terms)
        lengths = np.fromiter((sum(self._terms[c].values()) for c in ids), np.float32, len(ids))
        docs: dict[str, list[int]] = {}
        counts: dict[str, list[int]] = {}
        for pos, cid in enumerate(ids):
            for term, n in self._terms[cid].items():
                docs.setdefault(term, []).append(pos)
                counts.setdefault(term, []).append(n)
        postings = {
            t: (np.asarray(docs[t], np.int32), np.asarray(counts[t], np.float32)) for t in docs
        }
        avg = float(lengths.mean()) if len(ids) else 0.0
        return _Compiled(ids=ids, lengths=lengths, avg_length=avg or 1.0, postings=postings)

    def search(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[LexicalHit]:
        """The ``k`` best-scoring chunks that match ``where``; chunks sharing no term are left out."""
        if self._compiled is None:
            self._compiled = self._compile()
        c = self._compiled
        n_docs = len(c.ids)
        terms = set(tokenize(query)) & c.postings.keys()
        if not n_docs or not terms:
            return []

        scores = np.zeros(n_docs, np.float32)
        for term in terms:
            docs, tf = c.postings[term]
            # The "+1" form of idf stays positive for terms in most documents.
            idf = math.log(1.0 + (n_docs - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = K1 * (1.0 - B + B * c.lengths[docs] / c.avg_length)
            scores[docs] += idf * tf * (K1 + 1.0) / (tf + norm)

        # Walk candidates best first until k pass the filter; argsort only the scored ones.
        scored = np.flatnonzero(scores)
        order = scored[np.argsort(-scores[scored], kind="stable")]
        hits: list[LexicalHit] = []
        for pos in order:
            cid = c.ids[pos]
            if cid in self._meta and matches(where, self._meta[cid]):
                hits.append(LexicalHit(cid, float(scores[pos])))
                if len(hits) == k:
                    break
        return hits
