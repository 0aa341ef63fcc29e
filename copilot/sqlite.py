"""An SQLAlchemy engine on the copilot's SQLite file, tuned as the other stores in it are.

WAL lets the API threads read while one of them writes; ``synchronous=NORMAL`` drops
the fsync per commit (about 15 ms on the 2-core machine's disk), so a suggestion is
logged in well under a millisecond. WAL keeps the file consistent after a crash at
any moment; a power cut can lose the last commits before the next checkpoint, as
for the event and account stores (copilot/event_store.py says when FULL is worth it).
``busy_timeout`` makes a writer wait for another one instead of failing at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

BUSY_TIMEOUT_MS = 10_000


def _tune(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def open_engine(db_path: Path | str) -> Engine:
    """An engine for ``db_path`` (a file, created with its folder) or any SQLAlchemy URL."""
    url = db_path if isinstance(db_path, str) and "://" in db_path else None
    if url is None:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{db_path}"
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _tune)
    return engine
