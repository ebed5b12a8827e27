# Two entry points for a newcomer: `make demo` (the main job on the embedded genome) and
# `make test`. Both create .venv and install requirements.txt plus this package first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: venv demo test test-fast lint bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	PY=$(abspath $(PY)) bash scripts/demo.sh

test: venv
	$(PY) -m pytest -q tests

test-fast: venv  # the quick part, about a minute: no test marked slow
	$(PY) -m pytest -q -m "not slow" tests

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) bench/bench_data_gen.py

clean:
	rm -rf $(VENV) $(DEMO)
