"""Sentence embeddings with the configured sentence-transformers model (bundled MiniLM by default).

The class is also a langchain ``Embeddings``, so langchain's Chroma store can use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from copilot.settings import Settings, resolve_model_path

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _load(path: str):
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    model = SentenceTransformer(path, device="cpu")
    logger.info("loaded embedder %s in %.1f s", path, time.perf_counter() - started)
    return model


class SentenceEmbedder(Embeddings):
    def __init__(self, settings: Settings):
        self.path = resolve_model_path("embedder", settings.models.embedder.path)

    @property
    def model_id(self) -> str:
        """Names the model so an index built with another embedder is detected."""
        return (
            Path(self.path).parent.name if Path(self.path).name == "model" else Path(self.path).name
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return _load(str(self.path)).encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    # langchain's Embeddings interface
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()
