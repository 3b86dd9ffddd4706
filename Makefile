# The project's commands. `make test` is what CI runs (.ci/run).
.PHONY: setup test unit lint format bench demo reliability clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh

# The fault-injection suite (tests/reliability) runs with `make reliability`; it is not yet
# part of `make test` (see issue 6's note: not yet validated end to end in one CI-like run).
test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -m "not reliability"

reliability: setup
	$(PY) -m pytest -m reliability -s

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
