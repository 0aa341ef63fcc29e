"""Benchmarks (`make bench`): each measures a figure against a baseline run in the same
process and records it with ``bench_report``; the table prints at the end and is
written to ``$BENCH_OUT`` (default ``bench-results.json`` in the working folder).

Files are named ``bench_*.py`` so that `make test` never collects them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_FIGURES: list[dict] = []


@pytest.fixture(scope="session")
def bench_report():
    """``bench_report(name, value, unit, baseline=None, note="")`` records one figure;
    with a baseline the ratio value/baseline is reported too."""

    def record(
        name: str, value: float, unit: str, baseline: float | None = None, note: str = ""
    ) -> None:
        row = {"name": name, "value": value, "unit": unit, "note": note}
        if baseline is not None:
            row["baseline"] = baseline
            row["ratio"] = value / baseline if baseline else None
        _FIGURES.append(row)

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("benchmark figures")
    for row in _FIGURES:
        ratio = (
            f"  ratio {row['ratio']:.3f} vs baseline {row['baseline']:.4g}"
            if row.get("ratio")
            else ""
        )
        terminalreporter.write_line(
            f"{row['name']}: {row['value']:.4g} {row['unit']}{ratio}  {row['note']}"
        )
    out = Path(os.environ.get("BENCH_OUT", "bench-results.json"))
    out.write_text(json.dumps(_FIGURES, indent=2), encoding="utf-8")
    terminalreporter.write_line(f"written to {out}")
