# tsunagu — `make help` lists the targets. Needs only Python >= 3.11 and make: the first target
# that needs the virtualenv creates .venv and installs the locked dependencies (uv.lock) into it.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
SYNCED := $(VENV)/.synced
PYTEST_ARGS ?=
SERVICE ?=
LOGS_ARGS ?=
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo connectors-demo test test-unit lint check schemas asyncapi bench up down status logs contract-deps

help: ## List the targets
	@echo "usage: make TARGET"
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

# Re-synced whenever pyproject.toml or uv.lock change. The groups: dev (tests, ruff) and local (the embedded
# broker and PostgreSQL of `tsunagu up` and the tests; the production image leaves both out).
$(SYNCED): pyproject.toml uv.lock
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "tsunagu needs Python >= 3.11: run with PY=/path/to/python3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/uv --version 2>/dev/null | grep -qx 'uv $(UV_VERSION)[^ ]*.*' \
		|| $(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --inexact --group dev --group local
	@touch $@

# The contract check's Node packages (ajv in strict mode, tests/contract), from their lock file: Node 20+ and npm.
CONTRACT_DEPS := tests/contract/node_modules/.installed
$(CONTRACT_DEPS): tests/contract/package.json tests/contract/package-lock.json
	@command -v npm >/dev/null || { echo "the contract check needs Node.js 20+ and npm (e.g. apt-get install nodejs npm)" >&2; exit 1; }
	cd tests/contract && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

contract-deps: $(CONTRACT_DEPS) ## Install the contract check's Node packages (ajv; tests/contract, npm ci)

install: $(SYNCED) ## Create .venv and install the locked dependencies (dev tools and the local stack's embedded broker and PostgreSQL included)

demo: $(SYNCED) ## The main job: replay the #9999 trial's first week three ways, then a LINE window beside a phone line, through the local stack (DEMO_ARGS=--stop / --days 1 / --fresh)
	$(BIN)/tsunagu demo $(DEMO_ARGS)

connectors-demo: $(SYNCED) ## Each connector's documented sample through the local stack to figures, beside the platform's own count (DEMO_ARGS=--stop)
	$(BIN)/tsunagu connectors-demo $(DEMO_ARGS)

.PHONY: calibrate
calibrate: $(SYNCED) ## Replay scenarios/trial1.yaml through the stack (tsunagu up --replay) and check it against the published figures
	$(BIN)/tsunagu up --replay
	$(BIN)/python -m tsunagu_tools.simulate.calibrate check scenarios/trial1.yaml

test: $(SYNCED) $(CONTRACT_DEPS) ## Run the tests; they start their own broker and PostgreSQL (PYTEST_ARGS=... to add)
	$(BIN)/pytest tests -q -rs $(PYTEST_ARGS)

.PHONY: verify-security
verify-security: $(SYNCED) ## Abuse and bad input: OpenAPI fuzzing, event fuzzing, authorisation matrix, limits, secrets (VERIFY_SIZE=full for full size)
	TSUNAGU_VERIFY_SIZE=$(or $(VERIFY_SIZE),ci) $(BIN)/pytest tests/security -q -rs $(PYTEST_ARGS)

.PHONY: verify-faults
verify-faults: $(SYNCED) ## Faults: services killed, PostgreSQL and the broker restarted, a consumer paused, during a replay (VERIFY_SIZE=full for full size)
	TSUNAGU_VERIFY_SIZE=$(or $(VERIFY_SIZE),ci) $(BIN)/pytest tests/faults -q -rs $(PYTEST_ARGS)

test-unit: $(SYNCED) $(CONTRACT_DEPS) ## The fast tests: pure rules and subscribers on FastStream's in-memory broker; no servers started
	$(BIN)/pytest tests/unit -q -rs $(PYTEST_ARGS)

lint: $(SYNCED) ## Check the code with ruff
	$(BIN)/ruff check .

check: $(SYNCED) lint ## ruff, then mypy in strict mode on schemas/, tsunagu/, tsunagu_connectors/ and every service's domain ([tool.mypy] in pyproject.toml)
	$(BIN)/mypy

.PHONY: k8s-validate
k8s-validate: $(SYNCED) ## Render deploy/k8s's overlays with kustomize; check them against the operators' CRDs and the services' specs
	$(BIN)/python deploy/validate.py

schemas: $(SYNCED) ## Regenerate the JSON Schema and AsyncAPI documents from schemas/
	$(BIN)/python -m schemas.generate

asyncapi: schemas ## Same as schemas

bench: $(SYNCED) ## Measure every service beside same-run baselines (record results in bench/RESULTS.md)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/fairness.py
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/routing.py --rates 500 --chat-share 0.5
	$(BIN)/python bench/referral.py
	$(BIN)/python bench/metrics.py

up: $(SYNCED) ## Start the local stack: broker, PostgreSQL, every service
	$(BIN)/tsunagu up

down: $(SYNCED) ## Stop the local stack (PostgreSQL's data stays in .tsunagu/pgdata)
	$(BIN)/tsunagu down

status: $(SYNCED) ## Show the local stack's parts and their health
	$(BIN)/tsunagu status

logs: $(SYNCED) ## Show the local stack's logs (SERVICE=intake, LOGS_ARGS="-f -n 100")
	$(BIN)/tsunagu logs $(SERVICE) $(LOGS_ARGS)
