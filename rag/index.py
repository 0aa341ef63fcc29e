"""The Chroma index of call chunks, through langchain's Chroma vector store.

Chroma's own default embedding function downloads a model, so the store is
always given ours; telemetry is off. The collection records which embedder
built it: opening it with another embedder re-indexes instead of failing queries.
"""

from __future__ import annotations

import logging

import chromadb
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma

from copilot.schemas import Chunk
from copilot.settings import Settings
from rag.embed import SentenceEmbedder

logger = logging.getLogger(__name__)

ADD_BATCH = 1000  # well under Chroma's maximum batch size


class ChunkIndex:
    def __init__(self, settings: Settings, embedder: SentenceEmbedder | None = None):
        self.settings = settings
        self.embedder = embedder or SentenceEmbedder(settings)
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        self.client = chromadb.PersistentClient(
            path=str(settings.chroma_dir), settings=ChromaSettings(anonymized_telemetry=False)
        )
        self.name = settings.index.collection
        self.stale = self._check_embedder()
        self.store = self._open()

    def _open(self) -> Chroma:
        return Chroma(
            collection_name=self.name,
            embedding_function=self.embedder,
            client=self.client,
            collection_metadata={"hnsw:space": "cosine", "embedder": self.embedder.model_id},
        )

    def _check_embedder(self) -> bool:
        """Drop a collection built by another embedder; the caller re-indexes from the store."""
        try:
            existing = self.client.get_collection(self.name)
        except Exception:  # chromadb raises its own NotFound types, which moved between versions
            return False
        built_with = (existing.metadata or {}).get("embedder")
        if built_with == self.embedder.model_id:
            return False
        logger.warning(
            "index %s was built with embedder %s, now %s: it will be rebuilt",
            self.name,
            built_with,
            self.embedder.model_id,
        )
        self.client.delete_collection(self.name)
        return True

    def count(self) -> int:
        return self.store._collection.count()

    def replace_calls(self, chunks_by_call: dict[str, list[Chunk]]) -> int:
        """Index each call's chunks as its only chunks (re-ingest never duplicates); embeds in batches."""
        for call_id in chunks_by_call:
            self.store._collection.delete(where={"call_id": call_id})
        chunks = [c for group in chunks_by_call.values() for c in group]
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            self.store.add_texts(
                texts=[c.text for c in batch],
                metadatas=[c.metadata for c in batch],
                ids=[c.chunk_id for c in batch],
            )
        return len(chunks)

    def label_objections(self, labels: dict[str, list[str]]) -> None:
        """Mark chunks (by id) with the objection types mined in them, as ``obj_<type>`` flags."""
        if not labels:
            return
        ids = list(labels)
        found = self.store._collection.get(ids=ids, include=["metadatas"])
        metadatas = []
        for cid, meta in zip(found["ids"], found["metadatas"], strict=True):
            meta = {k: v for k, v in (meta or {}).items() if not k.startswith("obj_")}
            meta.update({f"obj_{t}": True for t in labels[cid]})
            meta["objections"] = ",".join(labels[cid])
            metadatas.append(meta)
        if found["ids"]:
            self.store._collection.update(ids=found["ids"], metadatas=metadatas)

    def search(
        self, query: str, k: int, where: dict | None = None
    ) -> list[tuple[dict, str, float]]:
        """(metadata, text, similarity) for the ``k`` nearest chunks, optionally filtered."""
        if self.count() == 0:
            return []
        hits = self.store.similarity_search_with_score(query, k=k, filter=where or None)
        # cosine space: distance = 1 - similarity
        return [(doc.metadata, doc.page_content, 1.0 - float(distance)) for doc, distance in hits]
