# Everything runs from .venv, created from pinned requirements on first use.
PYTHON ?= $(shell PYENV_VERSION=3.12.1 pyenv which python 2>/dev/null || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
# sam build (BuildMethod: python3.12) needs python3.12 on PATH; telemetry stays off.
SAM := PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam

.PHONY: install test lint validate bench scaling demo distill clean catalog openapi

install: $(BIN)/distiller

$(BIN)/distiller: requirements-dev.txt layers/distiller/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

test: install
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory validate
	$(BIN)/python -m pytest -q

$(SAM_VENV)/bin/sam: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	@touch $@

# The stack: cfn-lint clean and buildable (arm64 layer with pinned dependencies).
validate: $(SAM_VENV)/bin/sam
	$(SAM) validate --lint
	$(SAM) build --build-dir .aws-sam/build

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Each bench prints its report and writes its figures to .bench/<name>.json; `make scaling`
# turns those figures into docs/scaling.md.
bench: install
	@mkdir -p .bench
	$(BIN)/python -m bench.distill_bench --json .bench/distill.json
	$(BIN)/python -m bench.dispatch_bench --json .bench/dispatch.json
	$(BIN)/python -m bench.run_bench --json .bench/run.json

scaling: install
	$(BIN)/python -m bench.scaling .bench > docs/scaling.md

# The main job: a partner receiver, every sample flow of events/ through the local pipeline, then one
# POST /sell and one lead through `distiller api --deliver`.
demo: install
	$(BIN)/python scripts/demo.py

# The dry run of every sample flow: partner deliveries as JSON Lines, nothing sent.
distill: install
	$(BIN)/distiller distill --partners events/partners.json --world events/world.json events/flows/*.jsonl

catalog: install
	$(BIN)/python -m distiller_tools.catalog > docs/event-catalog.md

clean:
	rm -rf $(VENV) $(SAM_VENV) .pytest_cache .ruff_cache .hypothesis .aws-sam .demo-attempts.jsonl .bench

openapi: install
	$(BIN)/python -m distiller_tools.openapi > docs/openapi.json
