"""Suite-wide fixtures: where the real data lives, and a service over a slice of the real calls."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
INSURANCE_CALLS = SHARED_DATA / "calls" / "insurance-sales"
SAMPLE = REPO / "data" / "sample"

# A slice of the real insurance calls that keeps the suite fast on 2 cores: one
# call per outcome label plus calls known to hold timing and price objections.
SLICE_PREFIXES = (
    "2020-10-01-19-56-16_f05cf021",  # buy; rendered as audio call05
    "2020-03-30-15-01-18_509143b2",  # "So I'd have to call you back."
    "2020-09-28-21-16-06_74b5e8db",  # "You can't even come close to what I pay."
    "2020-09-25-15-57-56_b2f0ff4b",  # "... because I can't afford it."
    "2020-09-23-20-48-04_09d32553",  # "not interested."
    "2020-09-30-20-05-41_2d330c4d",  # "call me back about [TIME]"
)


def require_shared_data() -> None:
    if not INSURANCE_CALLS.is_dir():
        pytest.skip(
            f"real data not found at {SHARED_DATA} (the ../shared checkout beside the repo)"
        )


def write_call_slice(folder: Path, prefixes: tuple[str, ...] = SLICE_PREFIXES) -> Path:
    """A CSV call folder holding only the calls whose ids start with ``prefixes`` (read from the real export)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("conversations.csv", "messages.csv"):
        with (INSURANCE_CALLS / name).open(newline="", encoding="utf-8") as src:
            reader = csv.DictReader(src)
            with (folder / name).open("w", newline="", encoding="utf-8") as dst:
                writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
                writer.writeheader()
                writer.writerows(r for r in reader if r["conversation_id"].startswith(prefixes))
    return folder


@pytest.fixture(scope="session")
def real_slice_service(tmp_path_factory):
    """A service with the slice of real calls ingested and objections mined (embedder loaded once)."""
    require_shared_data()
    from copilot.settings import load_settings
    from serve.service import CopilotService

    root = tmp_path_factory.mktemp("real-slice")
    service = CopilotService(load_settings(data_dir=root / "data"))
    report = service.ingest([write_call_slice(root / "calls")])
    assert not report.failed, report.failed
    service.mine_objections()
    return service
