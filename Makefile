# The project's commands. `make test` is what CI runs (.ci/run).
.PHONY: setup test unit lint format bench demo clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest -m unit

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The whole pipeline on the embedded stack; DEMO_SECONDS=N bounds it, DEMO_ARGS=--retrain retrains.
demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

bench: setup
	$(PY) bench/bench_detector.py

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis
