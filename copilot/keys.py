"""API keys: who is calling, with which role, for which team.

A key is shown once, when it is created, and only its SHA-256 is stored. The
keys are 256 random bits, so a fast hash is enough: a slow password hash would
add no strength against guessing and would cost every request tens of
milliseconds. A stolen database therefore yields no usable key.

Roles, from least to most: ``rep`` (chat, suggestions, feedback, their own
team's accounts and calls), ``manager`` (also training, promotion, experiments,
the UI; a manager with a team sees only that team's accounts) and ``admin``
(everything, every team, and keys).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import String, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from copilot.errors import InputError, NotFoundError, StateError
from copilot.sqlite import open_engine

Role = Literal["rep", "manager", "admin"]
ROLES: tuple[Role, ...] = ("rep", "manager", "admin")
KEY_PREFIX = "cpk_"
KEY_ID_CHARS = 8  # of the random part, shown in listings and logs to name a key
MAX_KEY_CHARS = 200  # longer is not a key of ours; refused before hashing


class _Base(DeclarativeBase):
    pass


class KeyRow(_Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


@dataclass(frozen=True)
class Principal:
    """The caller behind a key. ``name`` is the rep id that experiments assign by."""

    key_id: str
    name: str
    role: Role
    team: str | None

    def at_least(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def all_teams(self) -> bool:
        """True when no team limits what this caller sees."""
        return self.role == "admin" or self.team is None

    def sees_team(self, team: str | None) -> bool:
        return self.all_teams or (team is not None and team == self.team)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    role: Role
    team: str | None
    created_at: str
    revoked_at: str | None


def _same_name(a: str, b: str) -> bool:
    def folded(text: str) -> str:
        return unicodedata.normalize("NFKC", text).casefold()

    return folded(a) == folded(b)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """The ``api_keys`` table in the copilot's SQLite file."""

    def __init__(self, db_path: Path | str):
        self.engine = open_engine(db_path)
        _Base.metadata.create_all(self.engine)

    def create(self, role: str, team: str | None = None, name: str | None = None) -> str:
        """A new key (the only time it exists in clear) for ``role`` and ``team``."""
        if role not in ROLES:
            raise InputError(f"unknown role '{role}'; use one of {', '.join(ROLES)}")
        team = (team or "").strip() or None
        if role == "rep" and team is None:
            raise InputError(
                "a rep key needs a team: reps see only their own team's accounts; "
                "pass --team, e.g. --team Central"
            )
        # Hex, so an id never starts with "-" and reads as an option on the command line.
        secret = secrets.token_hex(32)
        key = f"{KEY_PREFIX}{secret}"
        key_id = secret[:KEY_ID_CHARS]
        name = (name or "").strip() or key_id
        with Session(self.engine) as session, session.begin():
            # The name is who the key speaks for: feedback, A/B assignment and the decision
            # log go by it, so two live keys with one name would be one person to them.
            # Compared as people read them: "DANA", "ｄａｎａ" and "dana" are one name, and a
            # name may not be another key's id, which listings show beside the names.
            live = session.scalars(select(KeyRow).where(KeyRow.revoked_at.is_(None))).all()
            taken = next(
                (k for k in live if _same_name(k.name, name) or _same_name(k.key_id, name)),
                None,
            )
            if taken is not None:
                raise StateError(
                    f"an active key is already named '{taken.name}' (id {taken.key_id}, "
                    f"{taken.role}{', team ' + taken.team if taken.team else ''}); pick another "
                    f"--name, or revoke that key first: copilot keys revoke {taken.key_id}"
                )
            session.add(
                KeyRow(
                    key_id=key_id,
                    key_hash=_digest(key),
                    name=name,
                    role=role,
                    team=team,
                    created_at=_now(),
                )
            )
        return key

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for ``key``, or None for a missing, unknown or revoked key."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_CHARS:
            return None
        # Looked up on every request, not cached: a key revoked from the CLI, in another
        # process, stops working at once. The indexed lookup costs well under a millisecond.
        digest = _digest(key)
        with Session(self.engine) as session:
            row = session.scalars(select(KeyRow).where(KeyRow.key_hash == digest)).one_or_none()
        # The lookup is by hash; compare_digest keeps the final check constant-time.
        if (
            row is None
            or row.revoked_at is not None
            or not hmac.compare_digest(row.key_hash, digest)
        ):
            return None
        return Principal(row.key_id, row.name, row.role, row.team)  # type: ignore[arg-type]

    def active(self, name: str) -> Principal | None:
        """The live key named ``name`` (names are unique among live keys), or None."""
        with Session(self.engine) as session:
            row = session.scalars(
                select(KeyRow).where(KeyRow.name == name, KeyRow.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        return Principal(row.key_id, row.name, row.role, row.team)  # type: ignore[arg-type]

    def list(self) -> list[KeyInfo]:
        with Session(self.engine) as session:
            rows = session.scalars(select(KeyRow).order_by(KeyRow.created_at)).all()
            return [
                KeyInfo(r.key_id, r.name, r.role, r.team, r.created_at, r.revoked_at)  # type: ignore[arg-type]
                for r in rows
            ]

    def revoke(self, key_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            done = session.execute(
                update(KeyRow)
                .where(KeyRow.key_id == key_id, KeyRow.revoked_at.is_(None))
                .values(revoked_at=_now())
            ).rowcount
        if not done:
            raise NotFoundError(
                f"no active key with id '{key_id}'; `copilot keys list` shows the ids"
            )
