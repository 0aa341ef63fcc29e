"""The adapter registry: one folder per adapter under ``Settings.adapters_dir``.

An adapter folder counts once it holds ``copilot_adapter.json`` (written last by
the trainer, so a run still in progress or one that crashed is not listed).
Which adapter serves by default is a small pointer file, ``promoted.json``,
replaced atomically and re-read on every request, so promoting or rolling back
needs no server restart. The pointer keeps the promotion history (newest last)
that ``rollback`` walks back through::

    {"name": "b", "promoted_at": "...",
     "history": [{"name": "a", "promoted_at": "...", "via": "promote"},
                 {"name": "b", "promoted_at": "...", "via": "promote"}]}

Resolution order for a request: the name asked for, else the promoted adapter,
else the newest, else ``None`` (the base model). Callers that know which base
model they run pass ``expected_base`` (``training.model.base_model_id``), and an
adapter trained on another base is refused instead of being served; the registry
itself never loads a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from copilot.errors import InputError, NotFoundError, StateError

logger = logging.getLogger(__name__)

METADATA_FILE = "copilot_adapter.json"
POINTER_FILE = "promoted.json"
RUN_STATE_FILE = "run.json"  # training.runs.STATE_FILE; runs.py imports this module
TRASH_PREFIX = ".trash-"
# Enough to roll back through any realistic run of promotions; older entries drop off.
MAX_HISTORY = 100
# Letters, digits, '-' and '_': safe as a folder name and as a peft adapter name
# (peft keys module dicts by it, where '.' would break attribute paths).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_LOCK_FILE = ".promoted.lock"


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    created_at: str  # ISO 8601, UTC
    base_model: str
    metrics: dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    author: str | None = None
    data_hash: str | None = None
    method: str = "sft"  # "sft" or "dpo"
    lora_r: int | None = None


@dataclass(frozen=True)
class Promotion:
    """One entry of the pointer file's history."""

    name: str
    promoted_at: str
    via: str = "promote"  # "promote" or "rollback"


@dataclass(frozen=True)
class Rollback:
    """What ``rollback`` did: ``current`` serves now instead of ``rolled_back_from``."""

    current: AdapterInfo
    rolled_back_from: str
    skipped: list[str] = field(default_factory=list)  # earlier entries passed over, with why


@dataclass(frozen=True)
class Deletion:
    name: str
    kind: str  # "adapter" or "run" (an unfinished training run's folder)
    was_promoted: bool
    promoted: str | None  # the adapter promoted after the deletion, None if none is


def validate_adapter_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"adapter name {name!r} is not allowed: use 1-80 letters, digits, '-' or '_', "
            "starting with a letter or digit (no path separators or dots)"
        )
    return name


def default_adapter_name(data_hash: str, now: datetime | None = None) -> str:
    """``<yyyymmdd-hhmmss>-<first 8 hex of the data hash>``, in UTC."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{data_hash[:8]}"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temp file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, ensure_ascii=False, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def foreign_base_message(info: AdapterInfo, expected_base: str) -> str:
    """Why an adapter trained on another base model cannot serve here, and the fixes."""
    return (
        f"adapter '{info.name}' was trained on base model '{info.base_model}', but this "
        f"copilot runs base model '{expected_base}'; use an adapter trained on "
        f"'{expected_base}' (`copilot adapters list` marks them), train one with "
        "`copilot train`, or set models.generator.path / training.base_model back to "
        f"'{info.base_model}'"
    )


class AdapterRegistry:
    def __init__(self, adapters_dir: Path):
        self.adapters_dir = Path(adapters_dir)

    @property
    def pointer_path(self) -> Path:
        return self.adapters_dir / POINTER_FILE

    def path_for(self, name: str) -> Path:
        return self.adapters_dir / validate_adapter_name(name)

    # --- reading -----------------------------------------------------------------

    def list(self) -> list[AdapterInfo]:
        """Every complete adapter, oldest first."""
        if not self.adapters_dir.is_dir():
            return []
        promoted = self._read_pointer()[0]
        found = []
        for folder in sorted(self.adapters_dir.iterdir()):
            if folder.is_dir() and _NAME.match(folder.name) and (folder / METADATA_FILE).is_file():
                info = self._read(folder, promoted)
                if info is not None:
                    found.append(info)
        return sorted(found, key=lambda a: (a.created_at, a.name))

    def get(self, name: str) -> AdapterInfo:
        folder = self.path_for(name)
        info = (
            self._read(folder, self._read_pointer()[0])
            if (folder / METADATA_FILE).is_file()
            else None
        )
        if info is None:
            known = ", ".join(a.name for a in self.list()) or "none yet"
            raise NotFoundError(
                f"no adapter named '{name}' (known: {known}); "
                "`copilot adapters list` lists them; `copilot train` makes a new one"
            )
        return info

    def newest(self) -> AdapterInfo | None:
        adapters = self.list()
        return adapters[-1] if adapters else None

    def promoted(self) -> AdapterInfo | None:
        name = self._read_pointer()[0]
        if name is None:
            return None
        try:
            return self.get(name)
        except (NotFoundError, InputError):
            logger.warning(
                "promoted adapter '%s' (from %s) no longer exists; ignoring the pointer",
                name,
                self.pointer_path,
            )
            return None

    def history(self) -> list[Promotion]:
        """The promotions recorded in the pointer file, oldest first; the current one last."""
        return self._read_pointer()[1]

    def resolve(self, name: str | None, *, expected_base: str | None = None) -> AdapterInfo | None:
        """The adapter to serve: ``name``, else the promoted one, else the newest, else None.

        With ``expected_base``, an adapter asked for by name on another base is an
        InputError, a promoted one a StateError (the stored pointer is wrong, not the
        request); the newest-adapter fallback passes over adapters of other bases.
        """
        if name:
            info = self.get(name)
            if expected_base is not None and info.base_model != expected_base:
                raise InputError(foreign_base_message(info, expected_base))
            return info

        promoted = self.promoted()
        if promoted is not None:
            if expected_base is not None and promoted.base_model != expected_base:
                raise StateError(
                    f"the promoted {foreign_base_message(promoted, expected_base)}; "
                    "or `copilot adapters rollback` / `copilot adapters promote NAME`"
                )
            return promoted

        adapters = self.list()
        usable = [a for a in adapters if expected_base is None or a.base_model == expected_base]
        if len(usable) < len(adapters):
            logger.warning(
                "passing over %d adapter(s) trained on another base model than %s",
                len(adapters) - len(usable),
                expected_base,
            )
        return usable[-1] if usable else None

    # --- changing what serves ----------------------------------------------------------

    def promote(self, name: str, *, expected_base: str | None = None) -> AdapterInfo:
        """Make ``name`` the default adapter from the next request on; see ``rollback``."""
        info = self.get(name)
        if expected_base is not None and info.base_model != expected_base:
            raise InputError(f"cannot promote: {foreign_base_message(info, expected_base)}")
        with self._locked():
            current, history = self._read_pointer()
            if current != info.name:
                history.append(Promotion(info.name, _now()))
                self._write_pointer(history)
        logger.info("promoted adapter %s", info.name)
        return replace(info, promoted=True)

    def rollback(self, *, expected_base: str | None = None) -> Rollback:
        """Promote again the adapter promoted before the current one.

        Earlier entries whose adapter was deleted, or was trained on another base
        than ``expected_base``, are passed over (and dropped from the history).
        """
        with self._locked():
            current, history = self._read_pointer()
            if current is None:
                raise StateError(
                    "no adapter is promoted, so there is nothing to roll back; "
                    "`copilot adapters promote NAME` chooses one"
                )
            earlier, skipped = history[:-1], []
            while earlier:
                candidate = earlier.pop()
                if candidate.name == current:
                    continue
                try:
                    info = self.get(candidate.name)
                except (NotFoundError, InputError):
                    skipped.append(f"{candidate.name} (deleted)")
                    continue
                if expected_base is not None and info.base_model != expected_base:
                    skipped.append(f"{candidate.name} (trained on {info.base_model})")
                    continue
                self._write_pointer([*earlier, Promotion(info.name, _now(), via="rollback")])
                break
            else:
                passed = f"; passed over {', '.join(skipped)}" if skipped else ""
                raise StateError(
                    f"no earlier promotion to roll back to: '{current}' is the first adapter "
                    f"promoted here{passed}; promote another with `copilot adapters promote NAME`"
                )
        if skipped:
            logger.warning("rollback passed over %s", ", ".join(skipped))
        logger.info("rolled back from adapter %s to %s", current, info.name)
        return Rollback(replace(info, promoted=True), current, skipped)

    def unpromote(self) -> None:
        """Serve the newest adapter (or the base model) by default again; forgets the history."""
        with self._locked():
            self.pointer_path.unlink(missing_ok=True)

    def delete(
        self, name: str, *, force: bool = False, expected_base: str | None = None
    ) -> Deletion:
        """Remove an adapter (or a stopped or failed run's folder) from disk.

        The promoted adapter is refused unless ``force``, which first rolls back as
        ``rollback`` would (or, with no earlier promotion, leaves nothing promoted).
        A run still training is always refused. The folder is renamed to a hidden
        trash name first (atomic, so no reader ever sees half a folder), then removed.
        """
        folder = self.path_for(name)
        is_adapter = (folder / METADATA_FILE).is_file()
        if not folder.is_dir() or not (is_adapter or (folder / RUN_STATE_FILE).is_file()):
            known = ", ".join(a.name for a in self.list()) or "none yet"
            raise NotFoundError(
                f"no adapter or training run named '{name}' in {self.adapters_dir} "
                f"(adapters: {known}); `copilot adapters list` shows adapters and runs"
            )
        _refuse_running(folder)

        with self._locked():
            current, history = self._read_pointer()
            was_promoted = current == name
            if was_promoted and not force:
                raise StateError(
                    f"adapter '{name}' is promoted and serves every request that names no "
                    "adapter; `copilot adapters rollback` first, or pass --force to roll back "
                    "and delete it in one step"
                )
            if was_promoted:
                history = self._fallback_history(history, name, expected_base)
            history = [p for p in history if p.name != name]

            trash = self.adapters_dir / f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, trash)
            if history:
                self._write_pointer(history)
            else:
                self.pointer_path.unlink(missing_ok=True)
        _remove_trash(trash)

        now_promoted = history[-1].name if history else None
        logger.info(
            "deleted %s %s%s",
            "adapter" if is_adapter else "run folder",
            name,
            f"; promoted now: {now_promoted or 'none'}" if was_promoted else "",
        )
        return Deletion(name, "adapter" if is_adapter else "run", was_promoted, now_promoted)

    # --- internals -----------------------------------------------------------------

    def _fallback_history(
        self, history: list[Promotion], leaving: str, expected_base: str | None
    ) -> list[Promotion]:
        """The history once ``leaving`` (the current adapter) goes, as a rollback leaves it."""
        earlier = [p for p in history if p.name != leaving]
        while earlier:
            candidate = earlier[-1]
            try:
                info = self.get(candidate.name)
            except (NotFoundError, InputError):
                earlier.pop()
                continue
            if expected_base is not None and info.base_model != expected_base:
                earlier.pop()
                continue
            return [*earlier[:-1], Promotion(info.name, _now(), via="rollback")]
        logger.warning(
            "no earlier promotion to fall back to from '%s': none is promoted now", leaving
        )
        return []

    def _read_pointer(self) -> tuple[str | None, list[Promotion]]:
        """(current name, history oldest first); a hand-edited name is the current one."""
        try:
            pointer = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, []
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable promotion pointer %s: %s", self.pointer_path, exc)
            return None, []
        if not isinstance(pointer, dict) or not isinstance(pointer.get("name"), str):
            logger.warning("ignoring promotion pointer %s without a 'name'", self.pointer_path)
            return None, []
        name = pointer["name"]
        history = []
        for entry in pointer.get("history") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                history.append(
                    Promotion(
                        entry["name"],
                        str(entry.get("promoted_at") or ""),
                        str(entry.get("via") or "promote"),
                    )
                )
        if not history or history[-1].name != name:
            # A pointer from before the history was kept, or one edited by hand.
            history.append(Promotion(name, str(pointer.get("promoted_at") or "")))
        return name, history

    def _write_pointer(self, history: list[Promotion]) -> None:
        history = history[-MAX_HISTORY:]
        write_json_atomic(
            self.pointer_path,
            {
                "name": history[-1].name,
                "promoted_at": history[-1].promoted_at,
                "history": [
                    {"name": p.name, "promoted_at": p.promoted_at, "via": p.via} for p in history
                ],
            },
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the pointer across processes (CLI, UI, server)."""
        import fcntl

        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        with (self.adapters_dir / _LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, folder: Path, promoted: str | None) -> AdapterInfo | None:
        try:
            meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
            training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
            lora_r = training.get("lora_r")
            return AdapterInfo(
                name=folder.name,
                path=folder,
                created_at=str(meta["created_at"]),
                base_model=str(meta["base_model"]),
                metrics=dict(meta.get("metrics") or {}),
                promoted=folder.name == promoted,
                author=meta.get("author"),
                data_hash=meta.get("data_hash"),
                method=str(meta.get("method") or training.get("method") or "sft"),
                lora_r=int(lora_r) if lora_r is not None else None,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "skipping adapter folder %s: unreadable %s (%s)", folder, METADATA_FILE, exc
            )
            return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _refuse_running(folder: Path) -> None:
    from training.runs import RUNNING, RunFolder  # runs.py imports this module

    if not (folder / RUN_STATE_FILE).is_file():
        return
    status = RunFolder(folder).status()
    if status.state == RUNNING:
        raise StateError(
            f"training run '{folder.name}' is still running (pid {status.pid}, step "
            f"{status.step}/{status.max_steps}); stop it first (the UI's stop button, or "
            f"create {folder / 'STOP'}), then delete it once it has ended"
        )


def _remove_trash(trash: Path) -> None:
    try:
        shutil.rmtree(trash)
    except OSError as exc:
        # The folder is already out of every listing (hidden name); only disk space is left.
        logger.warning("could not remove %s (%s); delete it by hand", trash, exc)
