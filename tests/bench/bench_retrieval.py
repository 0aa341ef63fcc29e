"""Retrieval figures on the real insurance calls (`make bench ARGS="-k retrieval"`).

- recall@5 of hybrid, vector-only and BM25-only retrieval on the labelled query set
  (data/labels/retrieval-queries.jsonl: our own wording, each naming the customer
  message it should find), all 82 calls indexed, in one run;
- p50/p99 query latency with 100k chunks indexed, hybrid against vector-only in the
  same process. The 100k are the ~4.5k real chunks repeated with new ids, call ids
  and accounts; the real vectors are reused for the copies (``add`` with
  ``embeddings=``), since embedding 100k texts would take most of an hour on 2 cores.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from copilot.settings import load_settings
from rag.index import ChunkIndex
from rag.retrieve import ChunkFilter, search
from tests.conftest import INSURANCE_CALLS
from tests.rag.test_retrieve import assert_query_set_resolves, load_query_set, recall_at

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

TARGET_CHUNKS = 100_000
ADD_BATCH = 5000


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, bench_report):
    """All real calls ingested (embedded once) through the service."""
    from serve.service import CopilotService

    queries = load_query_set()
    service = CopilotService(load_settings(data_dir=tmp_path_factory.mktemp("bench-rag")))
    started = time.perf_counter()
    report = service.ingest([INSURANCE_CALLS])
    elapsed = time.perf_counter() - started
    assert not report.failed, report.failed
    bench_report(
        "ingest of the 82 insurance calls (parse, redact, chunk, embed, index)",
        elapsed,
        "s",
        note=f"{service.index.count()} chunks",
    )
    assert_query_set_resolves(service.index, queries)
    return service, queries


def test_recall_at_5_hybrid_vs_vector_vs_bm25(indexed, bench_report) -> None:
    service, queries = indexed
    recall = {
        mode: recall_at(service.index, queries, 5, mode) for mode in ("hybrid", "vector", "lexical")
    }
    note = f"{len(queries)} queries, {service.index.count()} chunks"
    bench_report(
        "recall@5 hybrid (baseline: vector-only)", recall["hybrid"], "", recall["vector"], note
    )
    bench_report(
        "recall@5 BM25-only (baseline: vector-only)", recall["lexical"], "", recall["vector"], note
    )
    assert recall["hybrid"] >= recall["vector"]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def test_query_latency_at_100k_chunks(indexed, tmp_path_factory, bench_report) -> None:
    service, queries = indexed
    source = service.index.store._collection.get(include=["documents", "metadatas", "embeddings"])
    n_real = len(source["ids"])

    # Build 100k chunks from copies of the real ones, reusing their vectors
    big = ChunkIndex(
        load_settings(data_dir=tmp_path_factory.mktemp("bench-100k")),
        embedder=service.index.embedder,
    )
    collection = big.store._collection
    started = time.perf_counter()
    ids, docs, metas, vecs = [], [], [], []
    for n in range(TARGET_CHUNKS):
        i, copy = n % n_real, n // n_real
        meta = dict(source["metadatas"][i])
        meta["call_id"] = f"{meta['call_id']}~{copy}"
        meta["account_id"] = f"acct-{(i + copy) % 500}"
        ids.append(f"{source['ids'][i]}~{copy}")
        docs.append(source["documents"][i])
        metas.append(meta)
        vecs.append(source["embeddings"][i])
        if len(ids) == ADD_BATCH or n == TARGET_CHUNKS - 1:
            collection.add(ids=ids, documents=docs, metadatas=metas, embeddings=vecs)
            ids, docs, metas, vecs = [], [], [], []
    build_s = time.perf_counter() - started
    assert big.count() == TARGET_CHUNKS
    bench_report(
        "build of the 100k-chunk Chroma collection (precomputed vectors)",
        build_s,
        "s",
        note=f"{n_real} real chunks repeated",
    )

    started = time.perf_counter()
    lexical = big.lexical
    bench_report(
        "BM25 rebuild from Chroma at start-up, 100k chunks", time.perf_counter() - started, "s"
    )
    started = time.perf_counter()
    lexical.search("warm up", 1)  # compiles the postings
    bench_report("BM25 postings compile, 100k chunks", time.perf_counter() - started, "s")

    # The same queries, with and without filters, on both paths
    filters = [
        None,
        ChunkFilter(polarity=1),
        ChunkFilter(account_id="acct-7"),
        ChunkFilter(polarity=1, with_reply=True),
    ]
    runs = [(q["query"], f) for q in queries for f in filters]
    for query, f in runs[:5]:  # warm-up: embedder and HNSW pages
        search(big, query, 5, f)
    timings: dict[str, list[float]] = {"hybrid": [], "vector": []}
    for query, f in runs:
        for mode in timings:
            t0 = time.perf_counter()
            hits = search(big, query, 5, f, mode=mode)  # type: ignore[arg-type]
            timings[mode].append((time.perf_counter() - t0) * 1000)
            assert hits
    for q in (50, 99):
        bench_report(
            f"p{q} hybrid query latency, 100k chunks (baseline: vector-only)",
            _percentile(timings["hybrid"], q),
            "ms",
            _percentile(timings["vector"], q),
            note=f"{len(runs)} queries, k=5, 4 filter variants",
        )
    assert statistics.median(timings["hybrid"]) < 2000
