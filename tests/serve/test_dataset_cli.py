"""`copilot dataset preview` in real subprocesses, on a store holding the test objections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from copilot.schemas import CallRecord, Turn
from copilot.settings import load_settings
from copilot.store import Store
from tests.training.conftest import with_lost_calls

COPILOT = [sys.executable, "-m", "serve.cli"]


def run(data_dir: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COPILOT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [*COPILOT, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )


def store_objections(data_dir: Path) -> list:
    """The calls behind the test objections, then the objections, in a real store."""
    objections = with_lost_calls()
    turns: dict[str, list[Turn]] = defaultdict(list)
    outcomes = {}
    for o in objections:
        turns[o.call_id] += [
            Turn("customer", o.start, o.start + 4.0, o.customer_text),
            Turn("rep", o.start + 4.0, o.end, o.reply_text),
        ]
        outcomes[o.call_id] = o.outcome
    store = Store(load_settings(data_dir=data_dir).db_path)
    for call_id, call_turns in turns.items():
        record = CallRecord(
            call_id=call_id,
            turns=call_turns,
            source=f"/calls/{call_id}.txt",
            source_kind="transcript",
            content_hash=f"hash-{call_id}",
            outcome=outcomes[call_id],
            duration_s=call_turns[-1].end,
        )
        store.save_calls([record], input_hash=f"input-{call_id}", input_path=record.source)
    store.replace_objections(objections)
    return objections


def test_preview_json_is_one_document_with_the_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    objections = store_objections(data)

    result = run(data, "dataset", "preview", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["objections"] == len(objections) == 51
    assert doc["calls"] == 13
    assert doc["by_outcome"] == {"lost": 17, "open": 1, "won": 33}
    assert doc["calls_by_outcome"] == {"lost": 4, "open": 1, "won": 8}
    assert doc["by_type"]["price"] == {"positive": 7, "negative": 4, "unknown": 0}
    # The default config: eval_fraction 0.2 holds out round(8 * 0.2) = 2 won calls.
    assert (doc["sft"]["total"], doc["sft"]["eval_calls"]) == (33, 2)
    assert doc["dpo"]["total"] > 0 and doc["dpo"]["problems"] == []
    assert doc["method"] == "sft" and doc["problems"] == []
    assert len(doc["examples"]["positive"]) == 3 and len(doc["examples"]["negative"]) == 3


def test_readable_preview_shows_the_tables_and_splits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store_objections(data)

    result = run(data, "dataset", "preview")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("51 objections from 13 calls (training.method sft")
    assert any(line.split() == ["price", "7", "4", "0"] for line in lines)
    assert any(line.startswith("SFT: 33 examples") for line in lines)
    assert any(line.startswith("DPO: ") and "pairs" in line for line in lines)
    assert "examples from negative-outcome calls:" in lines


def test_empty_store_exits_1_with_the_fix(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "dataset", "preview", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no objections are stored" in result.stderr
    assert "`copilot objections`" in result.stderr
