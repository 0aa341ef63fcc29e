"""The adapter registry: one folder per adapter under ``Settings.adapters_dir``.

An adapter folder counts once it holds ``copilot_adapter.json`` (written last by
the trainer, so a run still in progress or one that crashed is not listed).
Which adapter serves by default is a small pointer file, ``promoted.json``,
replaced atomically, so promoting or rolling back needs no server restart.

Resolution order for a request: the name asked for, else the promoted adapter,
else the newest, else ``None`` (the base model).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from copilot.errors import InputError, NotFoundError

logger = logging.getLogger(__name__)

METADATA_FILE = "copilot_adapter.json"
POINTER_FILE = "promoted.json"
# Letters, digits, '-' and '_': safe as a folder name and as a peft adapter name
# (peft keys module dicts by it, where '.' would break attribute paths).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")


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


class AdapterRegistry:
    def __init__(self, adapters_dir: Path):
        self.adapters_dir = Path(adapters_dir)

    @property
    def pointer_path(self) -> Path:
        return self.adapters_dir / POINTER_FILE

    def path_for(self, name: str) -> Path:
        return self.adapters_dir / validate_adapter_name(name)

    def list(self) -> list[AdapterInfo]:
        """Every complete adapter, oldest first."""
        if not self.adapters_dir.is_dir():
            return []
        promoted = self._promoted_name()
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
            self._read(folder, self._promoted_name())
            if (folder / METADATA_FILE).is_file()
            else None
        )
        if info is None:
            known = ", ".join(a.name for a in self.list()) or "none yet"
            raise NotFoundError(
                f"no adapter named '{name}' (known: {known}); "
                "`copilot status` lists them; `copilot train` makes a new one"
            )
        return info

    def newest(self) -> AdapterInfo | None:
        adapters = self.list()
        return adapters[-1] if adapters else None

    def promoted(self) -> AdapterInfo | None:
        name = self._promoted_name()
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

    def promote(self, name: str) -> AdapterInfo:
        """Make ``name`` the default adapter; promoting an older one is the rollback."""
        info = self.get(name)
        write_json_atomic(
            self.pointer_path, {"name": info.name, "promoted_at": datetime.now(UTC).isoformat()}
        )
        logger.info("promoted adapter %s", info.name)
        return replace(info, promoted=True)

    def unpromote(self) -> None:
        """Serve the newest adapter (or the base model) by default again."""
        self.pointer_path.unlink(missing_ok=True)

    def resolve(self, name: str | None) -> AdapterInfo | None:
        """The adapter to serve: ``name``, else the promoted one, else the newest, else None."""
        if name:
            return self.get(name)
        return self.promoted() or self.newest()

    def _promoted_name(self) -> str | None:
        try:
            pointer = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable promotion pointer %s: %s", self.pointer_path, exc)
            return None
        name = pointer.get("name") if isinstance(pointer, dict) else None
        return name if isinstance(name, str) else None

    def _read(self, folder: Path, promoted: str | None) -> AdapterInfo | None:
        try:
            meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
            return AdapterInfo(
                name=folder.name,
                path=folder,
                created_at=str(meta["created_at"]),
                base_model=str(meta["base_model"]),
                metrics=dict(meta.get("metrics") or {}),
                promoted=folder.name == promoted,
                author=meta.get("author"),
                data_hash=meta.get("data_hash"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "skipping adapter folder %s: unreadable %s (%s)", folder, METADATA_FILE, exc
            )
            return None
