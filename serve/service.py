"""The one application facade that the CLI, the HTTP routes and the UI all call.

It owns the long-lived pieces (store, index, transcriber, generator) and loads
each model lazily, once per process, so `copilot status` never loads a model.
"""

from __future__ import annotations

import getpass
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copilot.errors import InputError, StateError
from copilot.objections import TYPES
from copilot.schemas import CallRecord, Objection
from copilot.settings import Settings, resolve_model_path
from copilot.store import Store
from rag.ingest import IngestReport
from serve.answer import Answer

if TYPE_CHECKING:  # rag.retrieve imports chromadb; the service loads it lazily
    from copilot.keys import Principal
    from rag.retrieve import SearchHit

logger = logging.getLogger(__name__)

__all__ = ["Answer", "CopilotService", "IngestReport"]


class CopilotService:
    def __init__(self, settings: Settings):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.db_path)
        self._lock = threading.Lock()
        self._index = None
        self._generator = None
        self._ingestor = None
        self._accounts = None
        self._events = None
        self._keys = None
        self._generation = None

    # --- lazily built pieces -----------------------------------------------

    @property
    def index(self):
        with self._lock:
            if self._index is None:
                from rag.index import ChunkIndex

                self._index = ChunkIndex(self.settings)
                if self._index.stale:
                    self._reindex()
        return self._index

    def _reindex(self) -> None:
        from rag.chunk import chunk_call

        calls = [self.store.get_call(c.call_id) for c in self.store.list_calls()]
        total = self._index.replace_calls(
            {c.call_id: chunk_call(c, self.settings.index, self.settings.outcomes) for c in calls}
        )
        logger.info("re-indexed %d calls into %d chunks", len(calls), total)

    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                from training.generate import ReplyGenerator

                self._generator = ReplyGenerator(self.settings)
        return self._generator

    @property
    def accounts(self):
        """The account side (serve/accounts.py): signals, win likelihood, rules, quotes."""
        with self._lock:
            if self._accounts is None:
                from serve.accounts import AccountsService
                from serve.talking_points import TalkingPointWriter

                self._accounts = AccountsService(
                    self.settings, self.store, talking_points=TalkingPointWriter(self)
                )
        return self._accounts

    @property
    def events(self):
        """The event pipeline (serve/events.py): events in, re-scored accounts, alerts out.

        Its worker runs only while the app's lifespan holds it (``copilot serve``)."""
        accounts = self.accounts  # taken first: the lock below is not re-entrant
        with self._lock:
            if self._events is None:
                from serve.events import EventPipeline

                self._events = EventPipeline(self.settings, accounts)
        return self._events

    @property
    def keys(self):
        """API keys and the roles and teams behind them (copilot/keys.py)."""
        with self._lock:
            if self._keys is None:
                from copilot.keys import KeyStore

                self._keys = KeyStore(self.settings.db_path)
        return self._keys

    @property
    def experiments(self):
        """A/B experiments and the reps' sticky variants (copilot/experiments.py)."""
        with self._lock:
            if getattr(self, "_experiments", None) is None:
                from copilot.experiments import ExperimentStore

                self._experiments = ExperimentStore(self.settings.db_path)
        return self._experiments

    @property
    def decisions(self):
        """The decision log: suggestions, the reps' feedback, deal results (copilot/decisions.py)."""
        with self._lock:
            if getattr(self, "_decisions", None) is None:
                from copilot.decisions import DecisionLog

                self._decisions = DecisionLog(self.settings.db_path)
        return self._decisions

    @property
    def prompts(self):
        """Versioned system prompts and knowledge notes (copilot/prompt_library.py)."""
        with self._lock:
            if getattr(self, "_prompts", None) is None:
                from copilot.prompt_library import PromptLibrary

                self._prompts = PromptLibrary(self.settings.db_path)
        return self._prompts

    @property
    def call_jobs(self):
        """Call uploads ingested in the background (serve/jobs.py); the app's lifespan starts
        its worker."""
        with self._lock:
            if getattr(self, "_call_jobs", None) is None:
                from serve.jobs import CallJobs

                self._call_jobs = CallJobs(self)
        return self._call_jobs

    @property
    def generation(self):
        """The queue that chat and objection answers wait in (serve/generation.py)."""
        with self._lock:
            if self._generation is None:
                from serve.generation import GenerationQueue

                serve = self.settings.serve
                self._generation = GenerationQueue(
                    workers=serve.generation_workers, max_waiting=serve.max_queued_generations
                )
        return self._generation

    @property
    def registry(self):
        from training.registry import AdapterRegistry

        return AdapterRegistry(self.settings.adapters_dir)

    @property
    def ingestor(self):
        if self._ingestor is None:
            from rag.ingest import Ingestor
            from rag.transcribe import WhisperTranscriber

            self._ingestor = Ingestor(
                self.settings, self.store, self.index, lambda: WhisperTranscriber(self.settings)
            )
        return self._ingestor

    # --- the main job ----------------------------------------------------------

    def ingest(
        self,
        paths: list[Path],
        outcome: str | None = None,
        account_id: str | None = None,
        show_progress: bool = False,
    ) -> IngestReport:
        """Ingest audio files, transcripts and call folders; bad inputs are reported, the rest stored."""
        overrides = {"outcome": outcome, "account_id": account_id}
        return self.ingestor.run([Path(p) for p in paths], overrides, show_progress=show_progress)

    def mine_objections(self) -> dict[str, int]:
        """Detect objections in every stored call, store them, return counts by type."""
        from rag.mine import mine_store

        if not self.store.counts()["calls"]:
            raise StateError("no calls are stored yet; run `copilot ingest PATH` first")
        objections, labels = mine_store(self.settings, self.store, self.index.embedder)
        self.store.replace_objections(objections)
        self.index.label_objections(labels)
        return dict(Counter(o.type for o in objections))

    def objections(self) -> list[Objection]:
        return self.store.objections()

    def train(
        self,
        overrides: dict[str, Any] | None = None,
        max_steps: int | None = None,
        progress=None,
        *,
        name: str | None = None,
        resume: bool = False,
    ):
        """Fine-tune a LoRA adapter on the stored objections; returns a training.trainer.TrainingRun.

        ``resume=True`` continues run ``name`` (else the newest stopped or failed one)
        with the config it started with, so ``overrides`` must be empty then.
        """
        from training.trainer import train_adapter

        if resume and overrides:
            raise InputError(
                "a resumed run keeps the config it started with; drop the recipe and the "
                f"overrides ({', '.join(sorted(overrides))}) or start a new run without --resume"
            )
        settings = self.settings.with_training(overrides or {})
        # Preference pairs match a lost reply to the won one whose objection reads closest.
        embed = self.index.embedder.encode if settings.training.method == "dpo" else None
        return train_adapter(
            settings,
            self.store.objections(),
            max_steps=max_steps,
            name=name,
            author=_author(),
            resume=resume,
            progress=progress,
            embed=embed,
        )

    def search(
        self,
        query: str,
        k: int | None = None,
        outcome: str | None = None,
        objection: str | None = None,
        account_id: str | None = None,
        tags: tuple[str, ...] = (),
    ) -> list[SearchHit]:
        """Hybrid (BM25 + vector) search over the indexed chunks, with metadata filters."""
        from rag.retrieve import retrieve

        _require_text(query, "query")
        if objection is not None and objection not in TYPES:
            raise InputError(f"unknown objection type '{objection}'; use one of {', '.join(TYPES)}")
        return retrieve(
            self.index,
            query,
            k or self.settings.index.top_k,
            outcome=outcome,
            objection=objection,
            account_id=account_id,
            tags=tuple(tags),
        )

    def ask(
        self,
        text: str,
        account_id: str | None = None,
        adapter: str | None = None,
        *,
        principal: Principal | None = None,
    ) -> Answer:
        """A suggested reply to a customer objection, with the won-call excerpts it drew on.

        ``adapter`` is a model name (serve/variants.py): None = ``copilot``, the experiment
        variant or the promoted adapter, re-read on every request (no restart to promote)."""
        from serve.answer import generate_answer, prepare_objection
        from serve.variants import resolve_model

        choice = resolve_model(self, adapter, principal)
        return generate_answer(self, prepare_objection(self, text, account_id, choice, principal))

    def chat(
        self,
        messages: list[dict[str, str]],
        account_id: str | None = None,
        model: str | None = None,
        *,
        principal: Principal | None = None,
    ) -> Answer:
        """A chat answer grounded in the account's calls and signals; a client's system
        messages are not trusted (dropped and logged)."""
        from serve.answer import generate_answer, prepare_chat
        from serve.variants import resolve_model

        choice = resolve_model(self, model, principal)
        return generate_answer(self, prepare_chat(self, messages, account_id, choice, principal))

    # --- inspection --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """calls, turns, chunks (ints), objections (counts by type), adapters (names), models (role -> model)."""
        counts = self.store.counts()
        adapters = self.registry.list()
        promoted = next((a.name for a in adapters if a.promoted), None)
        return {
            "data_dir": str(self.settings.data_dir),
            "calls": counts["calls"],
            "turns": counts["turns"],
            "chunks": self._chunk_count(),
            "minutes": counts["minutes"],
            "objections": counts["objections"],
            "adapters": [a.name for a in adapters],
            "promoted_adapter": promoted,
            "models": self.models(),
        }

    def _chunk_count(self) -> int:
        if self._index is None and not self.settings.chroma_dir.exists():
            return 0
        return self.index.count()

    def models(self) -> dict[str, str]:
        models = {}
        for role in ("transcriber", "embedder", "generator"):
            try:
                models[role] = str(
                    resolve_model_path(role, getattr(self.settings.models, role).path)
                )
            except Exception as exc:  # status must report a missing model, not fail on it
                models[role] = f"missing: {exc}"
        return models

    def transcript(self, call_id: str) -> CallRecord:
        return self.store.get_call(call_id)

    def list_calls(self) -> list[CallRecord]:
        return self.store.list_calls()


def _require_text(value: str | None, name: str) -> None:
    if value is None or not str(value).strip():
        raise InputError(
            f"'{name}' is empty; pass the customer's words, e.g. \"it's too expensive\""
        )


def _author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
