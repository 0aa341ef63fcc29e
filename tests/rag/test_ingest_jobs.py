"""Ingest as a batch of jobs: bad inputs skipped and named, odd metadata stored, a killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copilot.schemas import Chunk
from copilot.settings import load_settings
from copilot.store import Store
from rag.ingest import Ingestor, chroma_safe
from rag.transcribe import WhisperTranscriber
from tests.conftest import SLICE_PREFIXES, require_shared_data, write_call_slice

TRANSCRIPT = """\
Rep: Hi, this is Dana from Northwind. Thanks for taking my call about {topic}.
Customer: Sure, but honestly the {topic} price is more than we pay today.
Rep: I hear you. The plan covers support as well, so the total cost is lower.
Customer: We would need to check with our finance team first.
Rep: Of course. Shall I send a summary you can forward to them?
"""

ODD_JSON = {
    "call_id": "odd-1",
    "outcome": None,
    "account_id": ["acme", "acme-eu"],
    "attendees": ["Dana Reyes", None],
    "tags": [],
    "duration_s": "n/a",
    "extra": ["not", "a", "mapping"],
    "turns": [
        {"speaker": "rep", "text": "Thanks for joining, everyone."},
        {"speaker": "customer", "text": "We only have ten minutes and no budget this year."},
        {"speaker": "rep", "text": "Understood, let me show the one thing that saves money."},
    ],
}


class RecordingIndex:
    """Stands in for the Chroma index: keeps each call's chunks, as replace_calls promises."""

    def __init__(self, fail_after_write: int | None = None):
        self.chunks: dict[str, list[Chunk]] = {}
        self.writes = 0
        self.fail_after_write = fail_after_write

    def replace_calls(self, chunks_by_call: dict[str, list[Chunk]]) -> int:
        self.chunks.update(chunks_by_call)
        self.writes += 1
        if self.writes == self.fail_after_write:
            # A BaseException, like the process dying: the batch loop must not swallow it.
            raise KeyboardInterrupt("killed between the index write and the store commit")
        return sum(len(c) for c in chunks_by_call.values())


def _ingestor(tmp_path: Path, index: RecordingIndex) -> tuple[Ingestor, Store]:
    settings = load_settings(data_dir=tmp_path / "data")
    store = Store(settings.db_path)
    # The real transcriber: bad audio is refused from its header, before any model loads.
    return Ingestor(settings, store, index, lambda: WhisperTranscriber(settings)), store


def _write_transcripts(folder: Path, topics: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, topic in enumerate(topics):
        path = folder / f"{chr(ord('a') + i)}-{topic}.txt"
        path.write_text(TRANSCRIPT.format(topic=topic), encoding="utf-8")
        paths.append(path)
    return paths


def test_bad_inputs_are_named_and_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (good,) = _write_transcripts(inputs, ["renewal"])
    (inputs / "notes.wav").write_text("meeting notes, not audio", encoding="utf-8")
    (inputs / "zero.flac").write_bytes(b"")
    (inputs / "empty.txt").write_text("", encoding="utf-8")
    (inputs / "broken.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    (inputs / "export").mkdir()
    (inputs / "export" / "messages.csv").write_text("conversation_id,text\nc1,hello\n")
    ingestor, store = _ingestor(tmp_path, RecordingIndex())

    report = ingestor.run([inputs])

    assert report.stored == ["a-renewal"]
    failed = dict(report.failed)
    assert set(failed) == {
        str(inputs / name) for name in ("notes.wav", "zero.flac", "empty.txt", "broken.flac")
    } | {str(inputs / "export")}
    assert "notes.wav is not a readable audio file" in failed[str(inputs / "notes.wav")]
    assert "broken.flac is not a readable audio file" in failed[str(inputs / "broken.flac")]
    assert "zero.flac is empty" in failed[str(inputs / "zero.flac")]
    assert "empty.txt is empty" in failed[str(inputs / "empty.txt")]
    assert (
        "needs the columns ['author', 'conversation_id', 'message']"
        in failed[str(inputs / "export")]
        and "it has ['conversation_id', 'text']" in failed[str(inputs / "export")]
    )
    assert (report.files_done, report.files_unchanged, report.files_failed) == (1, 0, 5)

    jobs = {Path(j.path).name: j for j in store.jobs(report.batch_id)}
    assert jobs[good.name].status == "done" and jobs[good.name].call_ids == ["a-renewal"]
    assert {n: j.status for n, j in jobs.items() if n != good.name} == dict.fromkeys(
        ["broken.flac", "empty.txt", "export", "notes.wav", "zero.flac"], "failed"
    )
    assert jobs["broken.flac"].error == failed[str(inputs / "broken.flac")]
    assert report.summary().endswith(
        f"1 files done, 0 unchanged, 5 failed; 1 calls stored; 0.0 min of audio; 5 errors; "
        f"{report.wall_s:.1f} s"
    )


def test_odd_metadata_is_stored_and_chunks_never_carry_none(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(ODD_JSON), encoding="utf-8")
    index = RecordingIndex()
    ingestor, store = _ingestor(tmp_path, index)

    report = ingestor.run([path])

    assert report.stored == ["odd-1"] and not report.failed
    call = store.get_call("odd-1")
    assert call.outcome is None and call.account_id == "acme,acme-eu"
    assert call.extra == {
        "extra": ["not", "a", "mapping"],
        "attendees": ["Dana Reyes", None],
        "tags": [],
    }
    assert call.duration_s == call.turns[-1].end  # "n/a" replaced by the turns' span
    (chunk,) = index.chunks["odd-1"]
    assert chunk.metadata["outcome"] == "" and chunk.metadata["account_id"] == "acme,acme-eu"
    for value in chunk.metadata.values():
        assert value is not None and value != []
        items = value if isinstance(value, list) else [value]
        assert all(isinstance(v, str | int | float | bool) for v in items), value


def test_chroma_safe_drops_none_and_keeps_filterable_lists() -> None:
    meta = {
        "outcome": None,
        "tags": ["vip", None, "eu"],
        "mixed": ["a", 2],
        "empty": [],
        "score": float("nan"),
        "m": {"x": 1},
        "n": 2,
    }
    (safe,) = chroma_safe([Chunk("c#1", "c", "Customer: hi", 0.0, 1.0, meta)])
    assert safe.metadata == {"tags": ["vip", "eu"], "mixed": ["a", "2"], "m": '{"x": 1}', "n": 2}
    clean = Chunk("c#2", "c", "Customer: hi", 0.0, 1.0, {"outcome": "won", "tags": ["vip"]})
    assert chroma_safe([clean]) == [clean]


def test_rerun_skips_stored_inputs_by_content_hash(tmp_path: Path) -> None:
    _write_transcripts(tmp_path / "in", ["renewal", "upgrade"])
    index = RecordingIndex()
    ingestor, store = _ingestor(tmp_path, index)
    first = ingestor.run([tmp_path / "in"])

    second = ingestor.run([tmp_path / "in"])

    assert first.stored == ["a-renewal", "b-upgrade"] and first.files_done == 2
    assert second.stored == [] and second.unchanged == ["a-renewal", "b-upgrade"]
    assert (second.files_done, second.files_unchanged) == (0, 2)
    assert second.batch_id != first.batch_id and not second.resumed
    assert [(j.status, j.unchanged) for j in store.jobs(second.batch_id)] == [("done", True)] * 2
    assert index.writes == 2  # the second run wrote nothing to the index


def test_a_run_dying_between_index_write_and_commit_is_resumed(tmp_path: Path) -> None:
    _write_transcripts(tmp_path / "in", ["renewal", "upgrade", "expansion"])
    dying = RecordingIndex(fail_after_write=2)
    ingestor, store = _ingestor(tmp_path, dying)
    with pytest.raises(KeyboardInterrupt):
        ingestor.run([tmp_path / "in"])
    (batch_id,) = {j.batch_id for j in store.jobs()}
    assert [j.status for j in store.jobs()] == ["done", "running", "queued"]
    assert store.existing_call_ids(["a-renewal", "b-upgrade"]) == {"a-renewal"}
    with sqlite3.connect(store.engine.url.database) as conn:  # its process is gone
        conn.execute("UPDATE ingest_batches SET pid = ?", (_dead_pid(),))

    ingestor.index = RecordingIndex()
    report = ingestor.run([tmp_path / "in"])

    assert report.resumed and report.batch_id == batch_id
    assert report.stored == ["b-upgrade", "c-expansion"] and report.unchanged == ["a-renewal"]
    assert [j.status for j in store.jobs()] == ["done"] * 3
    assert store.counts()["calls"] == 3


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- the real thing: the CLI in a subprocess, killed with SIGKILL -------------------

COPILOT = [sys.executable, "-m", "serve.cli"]


def _cli(data_dir: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    return subprocess.Popen(
        [*COPILOT, "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def _done_jobs(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return conn.execute("SELECT count(*) FROM ingest_jobs WHERE status='done'").fetchone()[
                0
            ]
    except sqlite3.Error:  # not created yet, or locked by the writer for a moment
        return 0


def _state(data_dir: Path) -> dict[str, object]:
    """What the data dir holds: counts, and every call id and chunk id with their repeats."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    with sqlite3.connect(data_dir / "copilot.sqlite3") as conn:
        call_ids = [r[0] for r in conn.execute("SELECT call_id FROM calls")]
        turns = conn.execute("SELECT count(*) FROM turns").fetchone()[0]
        turn_repeats = conn.execute(
            "SELECT count(*) FROM (SELECT call_id, idx FROM turns GROUP BY call_id, idx "
            "HAVING count(*) > 1)"
        ).fetchone()[0]
    client = chromadb.PersistentClient(
        path=str(data_dir / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    got = client.get_collection("call_chunks").get(include=["documents"])
    return {
        "calls": len(call_ids),
        "call_ids": sorted(call_ids),
        "turns": turns,
        "turn_repeats": turn_repeats,
        "chunks": len(got["ids"]),
        "chunk_ids": sorted(got["ids"]),
        "chunk_texts": sorted(got["documents"]),
    }


@pytest.mark.slow
@pytest.mark.real_data
def test_killed_ingest_resumes_to_the_same_state_as_one_clean_run(tmp_path: Path) -> None:
    require_shared_data()
    inputs = tmp_path / "in"
    _write_transcripts(inputs, ["renewal", "upgrade", "expansion", "pilot", "support", "audit"])
    # Sorts second: the slow input (hundreds of chunks) is where the kill lands.
    write_call_slice(inputs / "b-slice", SLICE_PREFIXES[:3])
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    # Kill -9 as soon as the first input is done.
    proc = _cli(killed, "ingest", str(inputs), "--json")
    deadline = time.monotonic() + 240
    while _done_jobs(killed / "copilot.sqlite3") < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no input was done within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = _done_jobs(killed / "copilot.sqlite3")
    assert 1 <= done_at_kill < 7, "the run finished before the kill; the test proves nothing"

    # The same command again continues the batch.
    out, err = _cli(killed, "ingest", str(inputs), "--json").communicate(timeout=300)
    resumed = json.loads(out)
    assert resumed["resumed"] and not resumed["failed"], err
    assert resumed["files_unchanged"] == done_at_kill
    assert resumed["files_done"] == 7 - done_at_kill

    out, err = _cli(clean, "ingest", str(inputs), "--json").communicate(timeout=300)
    assert json.loads(out)["files_done"] == 7, err

    after_kill, reference = _state(killed), _state(clean)
    assert after_kill["turn_repeats"] == 0
    assert after_kill["chunks"] == len(set(after_kill["chunk_ids"]))  # no chunk id twice
    assert (after_kill["calls"], after_kill["turns"], after_kill["chunks"]) == (
        reference["calls"],
        reference["turns"],
        reference["chunks"],
    )
    assert after_kill["calls"] == 9 and after_kill["chunks"] > 50
    assert after_kill["call_ids"] == reference["call_ids"]
    assert after_kill["chunk_ids"] == reference["chunk_ids"]
    assert after_kill["chunk_texts"] == reference["chunk_texts"]


@pytest.mark.slow
def test_cli_names_each_failed_input_on_stderr_and_exits_1(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _write_transcripts(inputs, ["renewal"])
    (inputs / "notes.wav").write_text("meeting notes, not audio", encoding="utf-8")
    (inputs / "broken.flac").write_bytes(b"fLaC" + b"\x00garbage" * 64)

    proc = _cli(tmp_path / "d", "ingest", str(inputs), "--json")
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 1
    report = json.loads(out)
    assert report["stored"] == ["a-renewal"] and report["batch_id"]
    assert (report["files_done"], report["files_failed"]) == (1, 2)
    assert [e["path"] for e in report["errors"]] == [
        str(inputs / "broken.flac"),
        str(inputs / "notes.wav"),
    ]
    for name in ("broken.flac", "notes.wav"):
        assert f"failed: {inputs / name}: {inputs / name} is not a readable audio file" in err

    proc = _cli(tmp_path / "d", "ingest", str(inputs / "a-renewal.txt"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "0 files done, 1 unchanged, 0 failed; 0 calls stored" in out
