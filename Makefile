# stackhop: the two commands are `make demo` and `make test`; see README.md.
PY := .venv/bin/python
TESTBED := $(PY) -m testbed
export PYTHONWARNINGS := ignore

.PHONY: setup demo test test-long chaos unit functional lint bench testbed-up testbed-down testbed-status testbed-seed

setup:
	@bash scripts/setup.sh

testbed-up: setup
	$(TESTBED) up

testbed-down: setup
	$(TESTBED) down

testbed-status: setup
	$(TESTBED) status

testbed-seed: testbed-up
	$(TESTBED) seed

demo: testbed-seed
	@bash scripts/demo.sh

# Every test's time goes to build/test-report.xml; `$(PY) scripts/test_times.py` sums them
# by file (what to move to `make test-long` when `make test` nears 45 minutes).
test: testbed-seed
	$(PY) -m pytest -ra --durations=25 --junitxml=build/test-report.xml tests

# Long trials (marked `long`): their short forms are in `make test`.
test-long: testbed-seed
	$(PY) -m pytest -ra -m long tests

chaos: testbed-seed
	$(PY) bench/chaos.py --rates 0,0.05,0.1,0.2,0.3 --groups 40 --kills 40
	$(PY) bench/chaos_volumes.py --kills 40
	$(PY) bench/chaos_kills.py --kills 40
	$(PY) bench/chaos_project.py
	$(PY) bench/chaos_api.py
	$(PY) bench/chaos_api.py --lost-posts --images 30 --image-mib 1 --volumes 6 --label lost-posts
	$(PY) bench/chaos_infra.py

unit: setup
	$(PY) -m pytest -ra tests/unit

functional: testbed-seed
	$(PY) -m pytest -ra tests/functional

lint: setup
	.venv/bin/ruff check src testbed tests bench
	.venv/bin/mypy

bench: setup
	$(PY) bench/archive.py
