"""The SQLite store: the ingest job table, atomic save-and-done, metadata round-trips."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from copilot.schemas import CallRecord, Turn
from copilot.store import Store


def _record(call_id: str, **extra_fields) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        turns=[Turn("rep", 0.0, 2.0, "Hello."), Turn("customer", 2.0, 4.5, "Too pricey.")],
        source=f"/calls/{call_id}.txt",
        source_kind="transcript",
        content_hash=f"hash-{call_id}",
        **extra_fields,
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_job_tables_are_added_to_a_database_made_before_them(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:  # a store from before the job table existed
        conn.execute("CREATE TABLE calls (call_id VARCHAR PRIMARY KEY, source TEXT)")
        conn.execute("INSERT INTO calls VALUES ('kept', '/x.txt')")

    Store(db)

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        kept = conn.execute("SELECT call_id FROM calls").fetchall()
    assert {"ingest_batches", "ingest_jobs", "calls", "turns", "inputs"} <= tables
    assert kept == [("kept",)]


def test_save_calls_marks_the_job_done_in_the_same_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    batch = store.open_batch("key-1", ["/calls/a.txt", "/calls/b.txt"])
    assert [j.status for j in batch.jobs] == ["queued", "queued"] and not batch.resumed
    first, second = batch.jobs

    store.start_job(first.job_id, "input-a")
    store.save_calls([_record("a")], "input-a", "/calls/a.txt", job_id=first.job_id, audio_s=4.5)

    # A turn without text fails at commit, after call "b" was written in the same
    # transaction: neither that call nor the done mark may remain.
    store.start_job(second.job_id, "input-b")
    broken = _record("c")
    broken.turns.append(Turn("rep", 5.0, 6.0, None))  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        store.save_calls([_record("b"), broken], "input-b", "/b.txt", job_id=second.job_id)

    jobs = store.jobs(batch.batch_id)
    assert (jobs[0].status, jobs[0].call_ids, jobs[0].audio_s) == ("done", ["a"], 4.5)
    assert jobs[0].content_hash == "input-a" and jobs[0].finished_at is not None
    assert (jobs[1].status, jobs[1].call_ids) == ("running", [])
    assert store.existing_call_ids(["a", "b", "c"]) == {"a"}
    assert store.input_call_ids("input-b") is None


def test_a_batch_of_a_dead_process_is_resumed_and_its_running_job_requeued(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite3")
    batch = store.open_batch("key-1", ["/a.txt", "/b.txt", "/c.txt"])
    a, b, _ = batch.jobs
    store.start_job(a.job_id, "ha")
    store.finish_job(a.job_id, ["a"], unchanged=False)
    store.start_job(b.job_id, "hb")
    with sqlite3.connect(tmp_path / "s.sqlite3") as conn:  # as if a killed process owned it
        conn.execute("UPDATE ingest_batches SET pid = ?", (_dead_pid(),))

    again = store.open_batch("key-1", ["/a.txt", "/b.txt", "/c.txt"])

    assert again.resumed and again.batch_id == batch.batch_id
    assert [j.status for j in again.jobs] == ["done", "queued", "queued"]
    assert len(store.jobs()) == 3  # nothing recorded twice


def test_a_batch_whose_process_still_runs_is_not_taken_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    first = store.open_batch("key-1", ["/a.txt"])  # owned by this (live) process
    second = store.open_batch("key-1", ["/a.txt"])
    assert not second.resumed and second.batch_id != first.batch_id

    store.finish_batch(second.batch_id)
    store.finish_batch(first.batch_id)
    third = store.open_batch("key-1", ["/a.txt"])
    assert not third.resumed and third.batch_id not in {first.batch_id, second.batch_id}


def test_missing_values_and_lists_in_metadata_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    extra = {
        "attendees": ["Dana Reyes", "Sam Ortiz"],
        "tags": [],
        "region": None,
        "scores": {"fit": 3, "notes": [None, "ok"]},
    }
    store.save_calls([_record("odd", outcome=None, extra=extra)], "input-odd", "/odd.json")

    back = store.get_call("odd")

    assert back.extra == extra
    assert back.outcome is None and back.account_id is None
    assert [t.text for t in back.turns] == ["Hello.", "Too pricey."]
