# The two commands (README): `make run` serves the chat page; `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

# Branch coverage of every pytest run (docs/development.md#coverage); `make unit COV=` runs without it.
COV ?= --cov --cov-report= --cov-fail-under=0

.PHONY: run test test-latest test-floor lock lint typecheck unit unit-plain coverage jstest bench clean

run:
	@scripts/setup.sh run
	$(VENV)/bin/ssegate serve --host $(HOST) --port $(PORT)

test:
	@scripts/setup.sh test
	$(MAKE) --no-print-directory lint typecheck jstest unit unit-plain coverage

# The suite against the newest releases pyproject.toml allows, in .venv-latest (constraints.txt
# unused): does the next release break us? If green, `make lock` makes that set the tested one.
test-latest:
	@scripts/setup.sh latest
	SSEGATE_UNLOCKED=1 $(MAKE) --no-print-directory VENV=.venv-latest typecheck unit

# The floor set: every runtime dependency at its lower bound, in .venv-floor; runs the server, log,
# provider and gateway suites there (PYTEST_ARGS: others). docs/development.md#pinned-dependencies
test-floor:
	scripts/floor.sh $(PYTEST_ARGS)

lock:
	scripts/lock.sh .venv-latest

lint:
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck:
	$(VENV)/bin/mypy

jstest:
	node --test tests/js/

unit:
	rm -f .coverage-plain .coverage-plain.*  # unit-plain's data belongs to the run after this one
	$(PY) -m pytest -n 2 -p no:cacheprovider $(COV) $(PYTEST_ARGS)

# The server, provider, browser and gateway suites once more on public APIs only (docs/performance.md),
# so the plain path never rots.
unit-plain:
	SSEGATE_FAST_PATHS=0 COVERAGE_FILE=.coverage-plain $(PY) -m pytest -n 2 -p no:cacheprovider $(COV) tests/server tests/providers tests/browser tests/gateway $(PYTEST_ARGS)

# The report of the runs above, combined: fails under [tool.coverage.report] fail_under, and unless
# the codec (sans-IO, standard library only) is covered completely.
coverage:
	@if [ -f .coverage-plain ]; then $(PY) -m coverage combine --append --keep .coverage-plain; fi
	$(PY) -m coverage report
	$(PY) -m coverage report --include='src/ssegate/codec/*' --fail-under=100 >/dev/null \
		|| { $(PY) -m coverage report --include='src/ssegate/codec/*'; echo 'coverage: the codec must stay at 100 %'; exit 1; }

bench:
	@scripts/setup.sh test
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-latest .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* .coverage-plain .coverage-plain.*
