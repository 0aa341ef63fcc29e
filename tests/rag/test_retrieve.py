"""Hybrid retrieval: tokenising, the shared filter, BM25 kept in step, odd metadata,
embedder changes, and recall on the real insurance calls."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from copilot.schemas import CallRecord, Turn
from copilot.settings import load_settings
from rag.chunk import chunk_call
from rag.index import ChunkIndex
from rag.lexical import LexicalIndex, matches, tokenize
from rag.retrieve import MODES, ChunkFilter, search
from tests.conftest import INSURANCE_CALLS, REPO, require_shared_data, write_call_slice

QUERY_SET = REPO / "data" / "labels" / "retrieval-queries.jsonl"


class HashEmbedder(Embeddings):
    """A model-free stand-in: a bag of hashed tokens, so similar wording is near."""

    def __init__(self, model_id: str = "hash-embedder", dim: int = 64):
        self.model_id = model_id
        self.dim = dim

    def _vector(self, text: str) -> list[float]:
        v = np.zeros(self.dim, np.float32)
        for token in tokenize(text):
            v[int(hashlib.md5(token.encode()).hexdigest(), 16) % self.dim] += 1.0
        v[0] += 1e-3  # never the zero vector
        return (v / np.linalg.norm(v)).tolist()

    def encode(self, texts):
        return np.asarray([self._vector(t) for t in texts], np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def _call(call_id: str, lines: list[tuple[str, str]], **meta) -> CallRecord:
    turns = [Turn(s, float(i * 5), float(i * 5 + 4), t) for i, (s, t) in enumerate(lines)]
    return CallRecord(
        call_id=call_id,
        turns=turns,
        source="test",
        source_kind="transcript",
        content_hash=call_id,
        **meta,
    )


CALLS = [
    _call(
        "won-1",
        [
            ("rep", "Thanks for taking the call about your fleet renewal."),
            ("customer", "Honestly the price is too high for our budget this year."),
            ("rep", "We can spread the premium over twelve monthly payments."),
            ("customer", "Send me the paperwork by email."),
            ("rep", "Will do, it goes out today."),
        ],
        outcome="won",
        account_id="acme",
        extra={"tags": ["Fleet", "renewal"], "attendees": ["dana", "lee"]},
    ),
    _call(
        "lost-1",
        [
            ("rep", "Calling to compare your car insurance rates."),
            ("customer", "We already signed with another carrier last week."),
            ("rep", "Understood, may I check back at renewal time?"),
            ("customer", "The price you quoted is far above what we pay."),
            ("rep", "Let me look for a discount."),
        ],
        outcome="lost",
        account_id="globex",
        extra={"tags": "renewal; cold-call"},
    ),
    _call(
        "zh-1",
        [
            ("rep", "您好，我是保险公司的销售。"),
            ("customer", "你们的价格太贵了，我们预算不够。"),
            ("rep", "我们可以按月付款，减轻压力。"),
        ],
        outcome="won",
        account_id="acme",
        language="zh",
    ),
]


@pytest.fixture()
def settings(tmp_path: Path):
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture()
def index(settings) -> ChunkIndex:
    idx = ChunkIndex(settings, embedder=HashEmbedder())
    idx.replace_calls({c.call_id: chunk_call(c, settings.index, settings.outcomes) for c in CALLS})
    # what mining would find: price objections in won-1 (turn 1), lost-1 (turn 3), zh-1 (turn 1)
    idx.label_objections(
        {"won-1#1": ["price", "budget"], "lost-1#3": ["price"], "zh-1#1": ["price", "budget"]}
    )
    return idx


# --- tokenising ------------------------------------------------------------------


def test_tokenize_words_and_cjk_bigrams() -> None:
    assert tokenize("It's TOO pricey, isn't it?") == ["it's", "too", "pricey", "isn't", "it"]
    assert tokenize("价格太贵了") == ["价格", "格太", "太贵", "贵了"]
    assert tokenize("报价 ok 贵") == ["报价", "ok", "贵"]
    assert tokenize("Café [PERSON_NAME] 300元") == ["café", "person", "name", "300", "元"]


def test_bm25_ranks_the_chunk_holding_the_rare_terms_first() -> None:
    lexical = LexicalIndex()
    lexical.add(
        ["a", "b", "c"],
        ["the price is too high", "the weather is nice", "我们的预算不够"],
        [{"n": 1}, {"n": 2}, {"n": 3}],
    )
    hits = lexical.search("price too high", k=3)
    assert [h.chunk_id for h in hits] == ["a"]
    assert hits[0].score > 0
    assert [h.chunk_id for h in lexical.search("预算", k=3)] == ["c"]
    assert lexical.search("price", k=3, where={"n": 2}) == []


# --- the shared filter -------------------------------------------------------------

WHERES = [
    {"outcome": "won"},
    {"polarity": 1},
    {"reply_text": {"$ne": ""}},
    {"tags": {"$contains": "renewal"}},
    {"tags": {"$not_contains": "fleet"}},
    {"obj_price": True},
    {"account_id": {"$in": ["acme", "initech"]}},
    {"start": {"$gte": 10.0}},
    {"$and": [{"polarity": 1}, {"obj_budget": True}]},
    {"$or": [{"account_id": "globex"}, {"language": "zh"}]},
    {"$and": [{"tags": {"$contains": "renewal"}}, {"outcome": {"$ne": "lost"}}]},
]


@pytest.mark.parametrize("where", WHERES, ids=[json.dumps(w) for w in WHERES])
def test_lexical_filter_selects_exactly_what_chroma_selects(index: ChunkIndex, where) -> None:
    stored = index.store._collection.get(include=["metadatas"])
    ours = {
        cid for cid, m in zip(stored["ids"], stored["metadatas"], strict=True) if matches(where, m)
    }
    chroma = set(index.store._collection.get(where=where)["ids"])
    assert ours == chroma
    assert ours, "each clause should select something in the fixture"


@pytest.mark.parametrize("mode", MODES)
def test_filters_hold_on_every_side(index: ChunkIndex, mode) -> None:
    cases = {
        ChunkFilter(polarity=1): lambda h: h.outcome == "won",
        ChunkFilter(objection="price"): lambda h: "price" in h.objections,
        ChunkFilter(account_id="globex"): lambda h: h.call_id == "lost-1",
        ChunkFilter(tags=("Renewal", "fleet")): lambda h: h.call_id == "won-1",
    }
    for chunk_filter, holds in cases.items():
        hits = search(index, "price too high budget 价格太贵", 10, chunk_filter, mode=mode)
        assert hits, (chunk_filter, mode)
        assert all(holds(h) for h in hits), (chunk_filter, mode, hits)


def test_hybrid_fuses_both_sides(index: ChunkIndex) -> None:
    hits = search(index, "the price is too high for our budget", 3)
    top = hits[0]
    assert top.chunk_id == "won-1#1"
    assert (top.vector_rank, top.lexical_rank) == (1, 1)
    assert top.score == 1.0  # first on both sides
    assert top.speaker == "customer" and top.objections == ["price", "budget"]
    assert (top.start, top.end) == (0.0, 14.0)  # the rep turn before through the reply
    assert all(0 < h.score <= 1 for h in hits)
    assert [h.chunk_id for h in search(index, "价格太贵", 1, mode="lexical")] == ["zh-1#1"]


def test_bm25_side_follows_replaced_calls_and_new_labels(index: ChunkIndex, settings) -> None:
    assert search(index, "carrier", 5, mode="lexical")[0].call_id == "lost-1"
    changed = _call(
        "lost-1",
        [("rep", "Hello again."), ("customer", "We moved to a mutual insurer, sorry.")],
        outcome="lost",
        account_id="globex",
    )
    index.replace_calls({"lost-1": chunk_call(changed, settings.index, settings.outcomes)})
    assert search(index, "carrier", 5, mode="lexical") == []
    assert [h.chunk_id for h in search(index, "mutual insurer", 5, mode="lexical")] == ["lost-1#1"]
    assert len(index.lexical) == index.count() == 4

    index.label_objections({"lost-1#1": ["competitor"]})
    hits = search(index, "mutual insurer", 5, ChunkFilter(objection="competitor"), mode="lexical")
    assert [h.chunk_id for h in hits] == ["lost-1#1"]


def test_bm25_side_is_rebuilt_from_chroma_on_reopen(index: ChunkIndex, settings) -> None:
    reopened = ChunkIndex(settings, embedder=HashEmbedder())
    assert not reopened.stale
    hits = search(reopened, "paperwork by email", 1, ChunkFilter(tags=("renewal",)), "lexical")
    assert [h.chunk_id for h in hits] == ["won-1#3"]
    assert hits[0].objections == []


# --- odd metadata ------------------------------------------------------------------


def test_odd_metadata_never_fails_the_batch(settings) -> None:
    odd = _call(
        "odd-1",
        [("customer", "Is this a sales call?"), ("rep", "It is, about your policy.")],
        outcome=None,
        account_id=None,
        extra={
            "tags": [],
            "attendees": ["Ann", 7, None, {"x": 1}, "ann"],
            "priority": float("nan"),
            "nested": {"crm": {"id": 3}},
            "score": 0.7,
            "a weird/key!": "kept",
            "none": None,
        },
    )
    weird_tags = _call(
        "odd-2", [("customer", "Fine.")], extra={"tags": "a, ,b;;c", "attendees": "solo"}
    )
    idx = ChunkIndex(settings, embedder=HashEmbedder())
    chunks = {
        c.call_id: chunk_call(c, settings.index, settings.outcomes)
        for c in [*CALLS, odd, weird_tags]
    }
    assert idx.replace_calls(chunks) == 7

    meta = idx.store._collection.get(ids=["odd-1#0"], include=["metadatas"])["metadatas"][0]
    assert meta["outcome"] == "" and meta["account_id"] == "" and meta["polarity"] == 0
    assert "tags" not in meta  # an empty list is left out, Chroma refuses it
    assert meta["attendees"] == ["ann", "7"]
    assert meta["x_score"] == 0.7 and meta["x_a_weird_key"] == "kept"
    assert not {"x_priority", "x_nested", "x_none"} & meta.keys()
    found = idx.store._collection.get(where={"tags": {"$contains": "c"}})["ids"]
    assert found == ["odd-2#0"]
    assert idx.store._collection.get(where={"attendees": {"$contains": "solo"}})["ids"] == [
        "odd-2#0"
    ]


# --- a changed embedder --------------------------------------------------------------


def test_another_embedder_drops_the_index_and_keeps_the_labels(index: ChunkIndex, settings) -> None:
    n = index.count()
    reopened = ChunkIndex(settings, embedder=HashEmbedder("another-model"))
    assert reopened.stale and reopened.count() == 0
    reopened.replace_calls(
        {c.call_id: chunk_call(c, settings.index, settings.outcomes) for c in CALLS}
    )
    assert reopened.count() == n
    assert reopened.store._collection.metadata["embedder"] == "another-model"
    hits = search(reopened, "price", 5, ChunkFilter(objection="price"))
    assert {h.chunk_id for h in hits} == {"won-1#1", "lost-1#3", "zh-1#1"}


@pytest.mark.slow
def test_service_reindexes_when_the_configured_embedder_id_changes(tmp_path: Path) -> None:
    from serve.service import CopilotService

    data = tmp_path / "data"
    transcript = tmp_path / "call.txt"
    transcript.write_text(
        "Rep: Thanks for your time today.\n"
        "Customer: Honestly, it costs too much for us right now.\n"
        "Rep: We could start with the basic plan and add the rest later.\n"
        "Customer: Let me think about it and call you back next week.\n"
        "Rep: Of course, I'll send a summary by email.\n",
        encoding="utf-8",
    )
    first = CopilotService(load_settings(data_dir=data))
    assert first.ingest([transcript], outcome="won").stored == ["call"]
    first.mine_objections()
    before = first.search("too expensive", k=2)
    labelled = {h.chunk_id: h.objections for h in before}
    assert first.index.count() == 2

    config = tmp_path / "other-embedder.yaml"
    config.write_text("models:\n  embedder:\n    id: minilm-retrained\n", encoding="utf-8")
    second = CopilotService(load_settings(config_file=config, data_dir=data))
    assert second.index.stale  # detected on open ...
    assert second.index.count() == 2  # ... and answered with a re-index from the store
    assert second.index.store._collection.metadata["embedder"] == "minilm-retrained"
    after = second.search("too expensive", k=2)
    assert [h.chunk_id for h in after] == [h.chunk_id for h in before]
    assert {h.chunk_id: h.objections for h in after} == labelled
    assert second.search("too expensive", k=1, outcome="won")[0].speaker == "customer"


# --- recall on the real insurance calls ------------------------------------------------


def _normal(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.casefold()).strip()


def load_query_set() -> list[dict]:
    """The labelled queries, each resolved to the text of its target customer message.

    The repo holds only ids, positions and our own query wording; the target text is
    read from ../shared/data at test time.
    """
    require_shared_data()
    queries = [json.loads(line) for line in QUERY_SET.read_text(encoding="utf-8").splitlines()]
    wanted = {q["conversation_id"] for q in queries}
    rows: dict[str, list[dict]] = {}
    with (INSURANCE_CALLS / "messages.csv").open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            if row["conversation_id"] in wanted:
                rows.setdefault(row["conversation_id"], []).append(row)
    for q in queries:
        row = rows[q["conversation_id"]][q["message_index"]]
        assert row["author"] == "Customer", q
        q["target"] = _normal(row["message"])
    return queries


def relevant(q: dict, hit) -> bool:
    """A hit is right when it is the chunk anchored on the target message (a chunk's
    customer utterance may hold several merged messages)."""
    if hit.call_id != q["conversation_id"]:
        return False
    return q["target"] in _normal(hit.metadata["customer_text"])


def recall_at(index: ChunkIndex, queries: list[dict], k: int, mode: str) -> float:
    found = 0
    for q in queries:
        hits = search(index, q["query"], k, mode=mode)  # type: ignore[arg-type]
        metas = index.store._collection.get(ids=[h.chunk_id for h in hits], include=["metadatas"])
        by_id = dict(zip(metas["ids"], metas["metadatas"], strict=True))
        found += any(relevant(q, _Anchored(h.call_id, by_id[h.chunk_id])) for h in hits)
    return found / len(queries)


class _Anchored:
    def __init__(self, call_id: str, metadata: dict):
        self.call_id = call_id
        self.metadata = metadata


def assert_query_set_resolves(index: ChunkIndex, queries: list[dict]) -> None:
    """Every labelled target is one indexed chunk: a wrong label fails loudly, not as a miss."""
    for q in queries:
        found = index.store._collection.get(
            where={"call_id": q["conversation_id"]}, include=["metadatas"]
        )
        hits = [m for m in found["metadatas"] if q["target"] in _normal(m["customer_text"])]
        assert hits, f"query {q['query']!r}: its target message is in no indexed chunk"


# Why 0.45: on the 37 calls the query set names (~2.4k chunks) hybrid measured 24/44 =
# 0.545 and vector-only 17/44 = 0.386 at k=5 (MiniLM, 2 cores). The bound leaves four
# misses of slack for model or library drift, and still fails when fusion is broken and
# retrieval falls back to vector-only quality; a random ranking would find ~0.2 %.
MIN_HYBRID_RECALL_AT_5 = 0.45


@pytest.mark.slow
@pytest.mark.real_data
def test_hybrid_recall_at_5_on_real_calls_beats_vector_only(tmp_path: Path) -> None:
    from serve.service import CopilotService

    queries = load_query_set()
    prefixes = tuple(sorted({q["conversation_id"] for q in queries}))
    service = CopilotService(load_settings(data_dir=tmp_path / "data"))
    report = service.ingest([write_call_slice(tmp_path / "calls", prefixes)])
    assert not report.failed, report.failed
    assert_query_set_resolves(service.index, queries)

    hybrid = recall_at(service.index, queries, 5, "hybrid")
    vector = recall_at(service.index, queries, 5, "vector")
    assert hybrid >= vector, (hybrid, vector)
    assert hybrid >= MIN_HYBRID_RECALL_AT_5, (hybrid, vector)
    assert not math.isnan(hybrid)
