"""The Chroma index of call chunks, through langchain's Chroma vector store.

Chroma's own default embedding function downloads a model, so the store is
always given ours; telemetry is off. The collection records which embedder
built it: opening it with another embedder re-indexes instead of failing queries.

Beside the vectors the index keeps a BM25 index of the same chunks
(``rag.lexical``) for hybrid retrieval. It is not persisted separately: on the
first lexical query it is rebuilt from the documents and metadata Chroma already
stores (14 s for 100k chunks, measured by tests/bench/bench_retrieval.py on a busy
2-core machine), then kept in step by ``replace_calls`` and ``label_objections``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import chromadb
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma

from copilot.schemas import Chunk
from copilot.settings import Settings
from rag.embed import SentenceEmbedder
from rag.lexical import LexicalIndex

logger = logging.getLogger(__name__)

ADD_BATCH = 1000  # well under Chroma's maximum batch size
READ_BATCH = 5000  # documents per page when rebuilding the BM25 side


@dataclass(frozen=True)
class IndexHit:
    """One chunk found by one side of the index; ``score`` is cosine similarity or BM25."""

    chunk_id: str
    metadata: dict[str, Any]
    text: str
    score: float


class ChunkIndex:
    def __init__(self, settings: Settings, embedder: SentenceEmbedder | None = None):
        self.settings = settings
        self.embedder = embedder or SentenceEmbedder(settings)
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        self.client = chromadb.PersistentClient(
            path=str(settings.chroma_dir), settings=ChromaSettings(anonymized_telemetry=False)
        )
        self.name = settings.index.collection
        # The configured id wins over the one named after the model folder, so a model
        # replaced in place (same path) can still be declared a different embedder.
        self.embedder_id = settings.models.embedder.id or self.embedder.model_id
        self._carried_labels: dict[str, dict[str, Any]] = {}
        self.stale = self._check_embedder()
        self.store = self._open()
        self._lexical: LexicalIndex | None = None
        self._lexical_count = -1

    def _open(self) -> Chroma:
        return Chroma(
            collection_name=self.name,
            embedding_function=self.embedder,
            client=self.client,
            collection_metadata={"hnsw:space": "cosine", "embedder": self.embedder_id},
        )

    def _check_embedder(self) -> bool:
        """Drop a collection built by another embedder; the caller re-indexes from the store.

        Objection labels live only in the index (mining writes them there), so they
        are carried over to the rebuilt chunks with the same ids.
        """
        try:
            existing = self.client.get_collection(self.name)
        except Exception:  # chromadb raises its own NotFound types, which moved between versions
            return False
        built_with = (existing.metadata or {}).get("embedder")
        if built_with == self.embedder_id:
            return False
        logger.warning(
            "index %s was built with embedder %s, now %s: it will be rebuilt",
            self.name,
            built_with,
            self.embedder_id,
        )
        for offset in range(0, existing.count(), READ_BATCH):
            page = existing.get(include=["metadatas"], limit=READ_BATCH, offset=offset)
            for cid, meta in zip(page["ids"], page["metadatas"], strict=True):
                labels = {k: v for k, v in (meta or {}).items() if _is_label(k)}
                if labels:
                    self._carried_labels[cid] = labels
        self.client.delete_collection(self.name)
        return True

    def count(self) -> int:
        return self.store._collection.count()

    def replace_calls(self, chunks_by_call: dict[str, list[Chunk]]) -> int:
        """Index each call's chunks as its only chunks (re-ingest never duplicates); embeds in batches."""
        collection = self.store._collection
        for call_id in chunks_by_call:
            collection.delete(where={"call_id": call_id})
            if self._lexical is not None:
                self._lexical.remove(self._lexical.ids_where({"call_id": call_id}))
        chunks = [c for group in chunks_by_call.values() for c in group]
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            ids = [c.chunk_id for c in batch]
            texts = [c.text for c in batch]
            metadatas = [{**c.metadata, **self._carried_labels.pop(c.chunk_id, {})} for c in batch]
            self.store.add_texts(texts=texts, metadatas=metadatas, ids=ids)
            if self._lexical is not None:
                self._lexical.add(ids, texts, metadatas)
        self._lexical_count = self.count()
        return len(chunks)

    # --- the lexical side ------------------------------------------------------------

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 side, rebuilt from Chroma's documents when first used or when another
        process changed the collection (seen as a different chunk count).

        NOTE: a replacement by another process that keeps the count equal goes unseen
        until restart; a change counter in the collection metadata would close that.
        """
        count = self.count()
        if self._lexical is None or count != self._lexical_count:
            self._lexical = self._load_lexical()
            self._lexical_count = count
        return self._lexical

    def _load_lexical(self) -> LexicalIndex:
        started = time.perf_counter()
        lexical = LexicalIndex()
        collection = self.store._collection
        total = collection.count()
        for offset in range(0, total, READ_BATCH):
            page = collection.get(
                include=["documents", "metadatas"], limit=READ_BATCH, offset=offset
            )
            lexical.add(page["ids"], [d or "" for d in page["documents"]], list(page["metadatas"]))
        logger.info(
            "built the BM25 index of %d chunks from Chroma in %.2f s",
            len(lexical),
            time.perf_counter() - started,
        )
        return lexical

    def lexical_search(self, query: str, k: int, where: dict | None = None) -> list[IndexHit]:
        """The ``k`` best BM25 matches that pass ``where`` (the same clause Chroma takes)."""
        lexical = self.lexical
        return [
            IndexHit(h.chunk_id, lexical.metadata(h.chunk_id), lexical.text(h.chunk_id), h.score)
            for h in lexical.search(query, k, where)
        ]

    def vector_search(self, query: str, k: int, where: dict | None = None) -> list[IndexHit]:
        """The ``k`` nearest chunks by cosine similarity that pass ``where``."""
        if self.count() == 0:
            return []
        hits = self.store.similarity_search_with_score(query, k=k, filter=where or None)
        # cosine space: distance = 1 - similarity
        return [
            IndexHit(doc.id or "", doc.metadata, doc.page_content, 1.0 - float(distance))
            for doc, distance in hits
        ]

    def label_objections(self, labels: dict[str, list[str]]) -> None:
        """Mark chunks (by id) with the objection types mined in them, as ``obj_<type>`` flags."""
        if not labels:
            return
        ids = list(labels)
        found = self.store._collection.get(ids=ids, include=["metadatas"])
        metadatas = []
        for cid, meta in zip(found["ids"], found["metadatas"], strict=True):
            meta = {k: v for k, v in (meta or {}).items() if not _is_label(k)}
            types = list(dict.fromkeys(labels[cid]))
            meta.update({f"obj_{t}": True for t in types})
            if types:
                meta["objections"] = types  # a list: {"objections": {"$contains": "price"}}
            metadatas.append(meta)
        if found["ids"]:
            self.store._collection.update(ids=found["ids"], metadatas=metadatas)
            if self._lexical is not None:
                for cid, meta in zip(found["ids"], metadatas, strict=True):
                    self._lexical.update_metadata(cid, meta)

    def search(
        self, query: str, k: int, where: dict | None = None
    ) -> list[tuple[dict, str, float]]:
        """(metadata, text, similarity) for the ``k`` nearest chunks: the vector side alone.

        Hybrid retrieval lives in ``rag.retrieve``; this stays for callers that want
        cosine similarities.
        """
        return [(h.metadata, h.text, h.score) for h in self.vector_search(query, k, where)]


def _is_label(key: str) -> bool:
    return key.startswith("obj_") or key == "objections"
