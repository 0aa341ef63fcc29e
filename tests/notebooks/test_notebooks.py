"""The notebooks in notebooks/ executed on a slice of the real calls, so they never rot.

Each notebook runs top to bottom in a fresh ipykernel started from this interpreter
(a kernelspec written to a temp dir, so no user kernelspec is involved), its
parameters set through environment variables, and the tests read the values it
printed back against the store it built.

Order matters and is explicit in the fixtures: the objection analysis ingests the
slice and mines it; a 15-step adapter is trained on what it stored; the model
report judges that adapter.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO, SLICE_PREFIXES, require_shared_data

NOTEBOOKS = REPO / "notebooks"
ANALYSIS = "objections-analysis.ipynb"
REPORT = "model-report.ipynb"
# Per cell, a guard against a hung kernel: the slowest cells (ingest + mining, the evaluation)
# take about a minute on 2 quiet cores and have taken ten on 2 cores shared by six jobs.
CELL_TIMEOUT_S = 1200
# A short run on short examples: on 2 busy cores one step of 4 x 128 tokens took 10-30 s.
TRAIN_STEPS = 8
TRAIN_OVERRIDES = {"max_length": 128, "batch_size": 2, "log_every": 2}
# Shorter generations for the report's ten replies (base and adapter for each objection).
REPORT_CONFIG = "models:\n  generator:\n    max_new_tokens: 32\n"
EVAL_OBJECTIONS = 5  # training.judge.MIN_OBJECTIONS, the fewest it will judge


# --- running a notebook -------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_home(tmp_path_factory) -> Path:
    """A kernelspec that runs this interpreter, and private IPython/runtime dirs."""
    home = tmp_path_factory.mktemp("kernel")
    spec = home / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "sales-copilot test kernel",
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    return home


def execute(name: str, kernel_home: Path, data_dir: Path, **params: str) -> nbformat.NotebookNode:
    """Run notebooks/``name`` with COPILOT_DATA_DIR=``data_dir`` and ``params`` in the kernel's
    environment; returns the executed notebook (the file on disk is left as it is)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {
        **os.environ,
        "COPILOT_DATA_DIR": str(data_dir),
        "IPYTHONDIR": str(kernel_home / "ipython"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "COPILOT_CONFIG": "",  # the bundled defaults, whatever the developer has set
        **params,
    }
    run_dir = kernel_home / "runtime"
    run_dir.mkdir(exist_ok=True)
    manager = KernelManager(
        kernel_name="python3",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_home / "kernels")]),
        # IPC sockets in a temp dir: no TCP port, nothing under the user's home.
        transport="ipc",
        connection_file=str(run_dir / f"{Path(name).stem}.json"),
    )
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    # cleanup_kc: shut the kernel down afterwards, though the client does not own the manager.
    client.execute(env=env, cleanup_kc=True)
    return notebook


def stdout(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "stream" and out.get("name") == "stdout"
    )


def displayed(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    return [
        out["data"][mime]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type in {"display_data", "execute_result"} and mime in out.get("data", {})
    ]


def table(text: str, title: str) -> dict[str, dict[str, str]]:
    """A plain-text table the notebook printed under a line starting with ``title``,
    keyed by its first column; the rule of dashes under the header gives the columns."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    spans = [m.span() for m in re.finditer(r"-+", lines[start + 2])]
    assert spans, f"no column rule under the header of {title!r}"

    def cells(line: str) -> list[str]:
        ends = [s for s, _ in spans[1:]] + [len(line)]
        return [line[s:e].strip() for (s, _), e in zip(spans, ends, strict=True)]

    header = cells(lines[start + 1])
    rows = {}
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        row = dict(zip(header, cells(line), strict=True))
        rows[row[header[0]]] = row
    return rows


# --- the objection analysis ---------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(kernel_home, tmp_path_factory):
    """The analysis notebook run on the six-call slice plus the B2B calls: (notebook, data dir)."""
    require_shared_data()
    data_dir = tmp_path_factory.mktemp("notebook-data") / "data"
    notebook = execute(
        ANALYSIS,
        kernel_home,
        data_dir,
        COPILOT_NOTEBOOK_CALLS=",".join(SLICE_PREFIXES),
        COPILOT_NOTEBOOK_B2B="1",
    )
    return notebook, data_dir


@pytest.mark.real_data
@pytest.mark.slow
def test_analysis_counts_match_the_store_it_built(analysed) -> None:
    from copilot.settings import load_settings
    from copilot.store import Store

    notebook, data_dir = analysed
    text = stdout(notebook)
    assert f"kernel python: {sys.executable}" in text

    store = Store(data_dir / "copilot.sqlite3")
    calls = {c.call_id: c for c in store.list_calls() if c.call_id.startswith(SLICE_PREFIXES)}
    assert len(calls) == len(SLICE_PREFIXES)
    assert re.search(rf"^insurance: {len(calls)} calls,", text, re.M), text[:2000]
    mined = [o for o in store.objections() if o.call_id in calls]
    assert mined, "the slice holds known objections; none were mined"

    by_type = table(text, "Objections by type")
    assert int(by_type["TOTAL"]["objections"]) == len(mined)
    assert {t: int(r["objections"]) for t, r in by_type.items() if t != "TOTAL"} == Counter(
        o.type for o in mined
    )
    assert {t: int(r["positive"]) for t, r in by_type.items() if t != "TOTAL"} == {
        t: sum(o.type == t and o.polarity == 1 for o in mined) for t in by_type if t != "TOTAL"
    }

    # Per call: the positive share of all decided calls is read from the outcomes stored.
    outcomes = load_settings(data_dir=data_dir).outcomes
    polarities = [outcomes.polarity(c.outcome) for c in calls.values()]
    per_call = table(text, "Calls that raised each type")
    assert int(per_call["ALL CALLS"]["decided_calls"]) == sum(p != 0 for p in polarities)
    assert int(per_call["ALL CALLS"]["positive_calls"]) == polarities.count(1)

    b2b = table(text, "Objections in the B2B calls")
    b2b_mined = Counter(o.call_id for o in store.objections() if o.call_id in b2b)
    assert {c: int(r["objections"]) for c, r in b2b.items()} == dict(b2b_mined)

    # Counts per type, positive share per call, outcome heatmap, reply lengths
    assert len(displayed(notebook, "image/png")) >= 4


# --- the model report ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(analysed):
    """A short adapter run on what the analysis notebook stored: (data dir, TrainingRun)."""
    from copilot.settings import load_settings
    from serve.service import CopilotService

    _, data_dir = analysed
    service = CopilotService(load_settings(data_dir=data_dir))
    return data_dir, service.train(TRAIN_OVERRIDES, max_steps=TRAIN_STEPS)


@pytest.mark.real_data
@pytest.mark.slow
def test_model_report_shows_the_adapter_beating_the_base_loss(
    trained, kernel_home, tmp_path
) -> None:
    from training.judge import load_evaluation
    from training.registry import AdapterRegistry

    data_dir, run = trained
    config = tmp_path / "report.yaml"
    config.write_text(REPORT_CONFIG, encoding="utf-8")
    notebook = execute(
        REPORT,
        kernel_home,
        data_dir,
        COPILOT_CONFIG=str(config),
        COPILOT_NOTEBOOK_LIMIT=str(EVAL_OBJECTIONS),
    )
    text = stdout(notebook)
    assert f"kernel python: {sys.executable}" in text
    assert f"adapter {run.name} (newest)" in text

    number = r"(-?\d+\.\d+)"
    base_loss = float(re.search(rf"^  base +{number}", text, re.M).group(1))
    adapter_loss = float(re.search(rf"^  adapter +{number}", text, re.M).group(1))
    assert 0 < adapter_loss < base_loss

    # What it printed is what it saved beside the adapter.
    saved = load_evaluation(AdapterRegistry(data_dir / "adapters").get(run.name))
    assert saved is not None
    assert base_loss == pytest.approx(saved["base"]["loss"], abs=1e-4)
    assert adapter_loss == pytest.approx(saved["adapter"]["loss"], abs=1e-4)

    gain = re.search(r"mean gain ([-+]\d+\.\d+)  \(95% CI ([-+]\d+\.\d+) to ([-+]\d+\.\d+)\)", text)
    assert gain, text
    mean, low, high = map(float, gain.groups())
    assert low <= mean <= high
    assert mean == pytest.approx(saved["win_likeness"]["mean_gain"], abs=1e-4)
    assert saved["win_likeness"]["n"] == len(saved["rows"]) == EVAL_OBJECTIONS

    # The training curve reads every step record of progress.jsonl.
    logged = [
        json.loads(line)
        for line in (run.path / "progress.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    steps = [r for r in logged if r.get("event", "step") == "step" and "loss" in r]
    assert f"{len(steps)} logged steps" in text
    assert steps[-1]["step"] == TRAIN_STEPS

    (side_by_side,) = displayed(notebook, "text/html")
    assert side_by_side.count("<tr>") == 1 + EVAL_OBJECTIONS
    assert all(row["call_id"][:28] in side_by_side for row in saved["rows"])
    assert len(displayed(notebook, "image/png")) == 2


def test_model_report_without_an_adapter_says_how_to_make_one(kernel_home, tmp_path) -> None:
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as failure:
        execute(REPORT, kernel_home, tmp_path / "empty-data")
    message = str(failure.value)
    assert "StateError" in message
    assert f"no adapter in {tmp_path / 'empty-data' / 'adapters'}" in message
    assert "copilot --data-dir" in message and " train`" in message


# --- the notebooks as committed -----------------------------------------------------


def test_notebooks_are_saved_without_outputs_and_take_parameters_first() -> None:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.name for p in paths} >= {ANALYSIS, REPORT}
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), path.name
        assert not any("execution" in c.metadata for c in code), path.name  # nbclient timings
        assert code[0].source.startswith("# Parameters"), path.name
        assert "os.environ" in code[0].source, path.name
        assert notebook.cells[0].cell_type == "markdown", path.name
