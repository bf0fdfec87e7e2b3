# The two commands (README): `make run` serves the chat page; `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck unit jstest bench clean

run:
	@scripts/setup.sh run
	$(VENV)/bin/ssegate serve --host $(HOST) --port $(PORT)

test:
	@scripts/setup.sh test
	$(MAKE) --no-print-directory lint typecheck jstest unit

lint:
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck:
	$(VENV)/bin/mypy

jstest:
	node --test tests/js/

unit:
	$(PY) -m pytest -n 2 -p no:cacheprovider $(PYTEST_ARGS)

bench:
	@scripts/setup.sh test
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
