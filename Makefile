# The two commands a newcomer needs: `make run` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint audit clean bench bench-quick overload dashboard

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml setup.py monitoring/_binning.c | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py monitoring/_binning.c | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $@ $(VENV)/.installed

## Serve the demo models on 127.0.0.1:8000 (embedded SQLite registry and artifacts under ./.gateway/)
run: $(VENV)/.installed
	$(BIN)/gateway serve --demo

## Lint, type-check, audit the dependencies and run the whole test suite
test: $(VENV)/.installed-test lint audit
	$(BIN)/pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

## pip-audit over the installed dependencies (<= 5 min): fails on a known vulnerability; dependencies it
## could not check (vulnerability service unreachable) are listed as NOT AUDITED without failing
audit: $(VENV)/.installed-test
	$(BIN)/python .ci/audit.py --timeout 300

## Benchmark the gateway against an empty Starlette endpoint and a textbook FastAPI server (needs wrk; < 10 min)
bench: $(VENV)/.installed
	$(BIN)/python -m loadtests.bench

## Smoke run of the benchmark (< 60 s); writes loadtests/results/bench-quick.md
bench-quick: $(VENV)/.installed
	$(BIN)/python -m loadtests.bench --quick

## Render the Grafana dashboard from a real gateway's /metrics to docs/dashboard.png (matplotlib; ~2 min)
dashboard: $(VENV)/.installed
	$(PIP) install -e '.[docs]'
	$(BIN)/python -m deploy.grafana.render --outage-postgres postgresql://postgres@127.0.0.1:5432/postgres

## Overload at 0.8x and 2x the sustainable rate (~2 min); writes loadtests/results/overload.md
overload: $(VENV)/.installed
	$(BIN)/python -m loadtests.overload

clean:
	rm -rf $(VENV) .gateway .pytest_cache .mypy_cache .ruff_cache loadtests/bench/.venv
