"""Named system prompts with immutable versions, written in the UI's prompt workshop.

A version is a system prompt plus knowledge notes (playbooks, price notes) the
copilot may cite. Saving never edits a version: it adds ``name@N+1``, so an
experiment variant that names ``sales@3`` always means the same words. One
version at most is *active*: chat uses it by default; with none active, chat
uses the built-in ``copilot.prompts.SYSTEM_PROMPT``.

    library = PromptLibrary(settings.db_path)
    v = library.save("sales", "You are ...", [{"title": "Price", "text": "..."}], "dana")
    library.activate(v.ref)                     # chat now uses sales@1
    library.get("sales@1").knowledge            # ["Price: ...", ...] for the prompt
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint, create_engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from copilot.errors import InputError, NotFoundError

logger = logging.getLogger(__name__)

# Letters of any script, digits, '.', '_' and '-': a name must survive inside "name@N".
_NAME = re.compile(r"^\w[\w.-]{0,63}$")
_REF = re.compile(r"^(?P<name>.+)@(?P<version>\d+)$")
# The prompt shares the model's context window with the call excerpts, the
# objection and the reply; past these sizes the oldest text would be cut.
MAX_SYSTEM_CHARS = 4000
MAX_NOTES = 20
MAX_TITLE_CHARS = 120
MAX_NOTE_CHARS = 2000
MAX_KNOWLEDGE_CHARS = 8000
_ACTIVE_SLOT = "chat"


class _Base(DeclarativeBase):
    pass


class PromptRow(_Base):
    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    system_prompt: Mapped[str] = mapped_column(Text)
    notes: Mapped[list] = mapped_column(JSON, default=list)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40))


class ActivePromptRow(_Base):
    """Which version chat uses; one row per slot (only ``chat`` today)."""

    __tablename__ = "prompt_active"

    slot: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    activated_by: Mapped[str] = mapped_column(String(200))
    activated_at: Mapped[str] = mapped_column(String(40))


@dataclass(frozen=True)
class KnowledgeNote:
    title: str
    text: str


@dataclass(frozen=True)
class PromptVersion:
    name: str
    version: int
    system_prompt: str
    notes: tuple[KnowledgeNote, ...]
    author: str
    created_at: str

    @property
    def ref(self) -> str:
        """``name@N``: how experiments, chat and the CLI name this version."""
        return f"{self.name}@{self.version}"

    @property
    def knowledge(self) -> list[str]:
        """The notes as the prompt quotes them: ``title: text`` (or the text alone)."""
        return [f"{n.title}: {n.text}" if n.title else n.text for n in self.notes]


def parse_ref(ref: str) -> tuple[str, int]:
    """``("sales", 3)`` from ``"sales@3"``; an InputError that shows the form otherwise."""
    match = _REF.match((ref or "").strip())
    if not match or int(match["version"]) < 1:
        raise InputError(
            f"prompt version '{ref}' is not of the form name@N; e.g. 'sales@2' "
            "(the workshop's version list shows them)"
        )
    return match["name"], int(match["version"])


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise InputError(
            f"prompt name '{name}' is not usable; use 1-64 letters, digits, '.', '_' or '-' "
            "(no spaces or '@'), e.g. 'renewals' or '续约话术'"
        )
    return name


def check_system_prompt(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError(
            "the system prompt is empty; write the instructions the copilot should follow, "
            "e.g. start from the built-in prompt"
        )
    if len(text) > MAX_SYSTEM_CHARS:
        raise InputError(
            f"the system prompt has {len(text)} characters, over the {MAX_SYSTEM_CHARS} limit; "
            "shorten it, or move reference material into knowledge notes"
        )
    return text


def check_notes(
    knowledge: Sequence[KnowledgeNote | Mapping[str, Any]],
) -> tuple[KnowledgeNote, ...]:
    """Notes from ``{"title", "text"}`` mappings (or KnowledgeNotes); blank rows are dropped."""
    notes: list[KnowledgeNote] = []
    for i, item in enumerate(knowledge or (), start=1):
        if isinstance(item, KnowledgeNote):
            title, text = item.title, item.text
        elif isinstance(item, Mapping):
            unknown = set(item) - {"title", "text"}
            if unknown:
                raise InputError(
                    f"knowledge note {i} has unknown fields {sorted(unknown)}; "
                    "a note has only 'title' and 'text'"
                )
            title, text = item.get("title"), item.get("text")
        else:
            raise InputError(
                f"knowledge note {i} must be {{'title': ..., 'text': ...}}; got {item!r}"
            )
        title, text = str(title or "").strip(), str(text or "").strip()
        if not title and not text:
            continue
        if not text:
            raise InputError(
                f"knowledge note {i} ('{title}') has no text; write it or delete the row"
            )
        if len(title) > MAX_TITLE_CHARS:
            raise InputError(
                f"the title of knowledge note {i} has {len(title)} characters, over the "
                f"{MAX_TITLE_CHARS} limit; shorten it"
            )
        if len(text) > MAX_NOTE_CHARS:
            raise InputError(
                f"knowledge note {i} ('{title or text[:20]}') has {len(text)} characters, over the "
                f"{MAX_NOTE_CHARS} limit; shorten it or split it into several notes"
            )
        notes.append(KnowledgeNote(title, text))
    if len(notes) > MAX_NOTES:
        raise InputError(
            f"{len(notes)} knowledge notes, over the {MAX_NOTES} limit; merge or drop some"
        )
    total = sum(len(n.title) + len(n.text) for n in notes)
    if total > MAX_KNOWLEDGE_CHARS:
        raise InputError(
            f"the knowledge notes have {total} characters together, over the "
            f"{MAX_KNOWLEDGE_CHARS} limit; shorten or drop some, the model reads them on every reply"
        )
    return tuple(notes)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version(row: PromptRow) -> PromptVersion:
    notes = tuple(KnowledgeNote(n.get("title", ""), n.get("text", "")) for n in row.notes or [])
    return PromptVersion(
        row.name, row.version, row.system_prompt, notes, row.author, row.created_at
    )


class PromptLibrary:
    """The ``prompt_versions`` and ``prompt_active`` tables in the copilot's SQLite file."""

    def __init__(self, db_path: Path | str):
        url = db_path if isinstance(db_path, str) and "://" in db_path else None
        if url is None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{db_path}"
        self.engine = create_engine(url)
        _Base.metadata.create_all(self.engine)

    def save(
        self,
        name: str,
        system_prompt: str,
        knowledge: Sequence[KnowledgeNote | Mapping[str, Any]] = (),
        author: str = "unknown",
    ) -> PromptVersion:
        """Store a new version of ``name`` (the next integer; the first is 1)."""
        name = check_name(name)
        system_prompt = check_system_prompt(system_prompt)
        notes = check_notes(knowledge)
        author = (author or "").strip() or "unknown"

        # Two managers saving at once may pick the same number; the unique
        # constraint refuses the second, which then takes the next one.
        for _ in range(5):
            try:
                with Session(self.engine) as session, session.begin():
                    latest = session.scalar(
                        select(func.max(PromptRow.version)).where(PromptRow.name == name)
                    )
                    row = PromptRow(
                        name=name,
                        version=(latest or 0) + 1,
                        system_prompt=system_prompt,
                        notes=[{"title": n.title, "text": n.text} for n in notes],
                        author=author,
                        created_at=_now(),
                    )
                    session.add(row)
                    session.flush()
                    saved = _version(row)
            except IntegrityError:
                continue
            logger.info("saved prompt %s by %s (%d notes)", saved.ref, author, len(notes))
            return saved
        raise InputError(f"could not number a new version of '{name}'; save it again")

    def get(self, ref: str) -> PromptVersion:
        name, version = parse_ref(ref)
        with Session(self.engine) as session:
            row = session.scalars(
                select(PromptRow).where(PromptRow.name == name, PromptRow.version == version)
            ).one_or_none()
            if row is None:
                raise NotFoundError(
                    f"no prompt version '{name}@{version}'; the workshop's version list "
                    "shows the saved ones"
                )
            return _version(row)

    def versions(self, name: str | None = None) -> list[PromptVersion]:
        """The versions of ``name``, oldest first; every name's versions when None."""
        query = select(PromptRow).order_by(PromptRow.name, PromptRow.version)
        if name is not None:
            query = query.where(PromptRow.name == name.strip())
        with Session(self.engine) as session:
            return [_version(row) for row in session.scalars(query)]

    def names(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(PromptRow.name).distinct().order_by(PromptRow.name)))

    def active(self) -> PromptVersion | None:
        """The version chat uses by default; None means the built-in SYSTEM_PROMPT."""
        with Session(self.engine) as session:
            pointer = session.get(ActivePromptRow, _ACTIVE_SLOT)
            if pointer is None:
                return None
            ref = f"{pointer.name}@{pointer.version}"
        return self.get(ref)

    def activate(self, ref: str, by: str = "unknown") -> PromptVersion:
        """Make ``ref`` the version chat uses by default, from the next request on."""
        version = self.get(ref)
        with Session(self.engine) as session, session.begin():
            pointer = session.get(ActivePromptRow, _ACTIVE_SLOT)
            if pointer is None:
                pointer = ActivePromptRow(slot=_ACTIVE_SLOT)
                session.add(pointer)
            pointer.name, pointer.version = version.name, version.version
            pointer.activated_by, pointer.activated_at = (by or "unknown"), _now()
        logger.info("chat now uses prompt %s (set by %s)", version.ref, by)
        return version

    def deactivate(self) -> None:
        """Chat goes back to the built-in SYSTEM_PROMPT."""
        with Session(self.engine) as session, session.begin():
            pointer = session.get(ActivePromptRow, _ACTIVE_SLOT)
            if pointer is not None:
                session.delete(pointer)
        logger.info("chat now uses the built-in prompt")
