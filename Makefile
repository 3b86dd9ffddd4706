# The project's commands. `make test` is what CI runs (.ci/run).
.PHONY: setup test unit lint format bench demo reliability clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh

# Everything, including the fault-injection suite (tests/reliability); `make reliability`
# runs that suite alone and prints its figures.
test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest --durations=15

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

# The whole pipeline on the embedded stack; DEMO_SECONDS=N bounds it, DEMO_ARGS=--retrain
# retrains, DEMO_ARGS=--secure turns TLS and authentication on (docs/security.md).
demo: setup
	$(PY) scripts/demo.py $(DEMO_ARGS)

bench: setup
	$(PY) bench/bench_detector.py
	$(PY) bench/bench_state.py --series 10000 --readings 300

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis
