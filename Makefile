# The two set-up commands of the README: `make run` (the main job) and `make test` (all tests).
# Both start with `setup`, which installs what is missing (idempotent; apt needs root).
.PHONY: setup run test lint bench fuzz

setup:
	bash scripts/setup.sh

run: setup
	bash scripts/demo.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python bench/recorder_overhead.py
	.venv/bin/python bench/recorder_sustained.py
	.venv/bin/python bench/analyzer_throughput.py
	.venv/bin/python bench/live_latency.py

# The long fuzz campaign (figures in docs/performance.md); make test runs a bounded part of it.
fuzz: setup
	.venv/bin/python bench/fuzz_campaign.py
