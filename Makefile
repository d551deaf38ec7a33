# seekless: `make dev` runs the stack locally, `make test` runs every check. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST := $(BIN)/pytest

.DEFAULT_GOAL := help
.PHONY: help venv dev test check lint typecheck format unit integration contract e2e faults fuzz template browser browser-deps bench load clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "seekless needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install seekless with its dev tools

dev: $(STAMP) ## run the local stack: REST on :3000, moto, Redis, the DeepSeek emulator
	$(BIN)/seekless dev

test: $(STAMP) lint typecheck ## lint, type-check and run every test tier
	$(PYTEST) -q

check: lint typecheck ## static checks only

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy, strict on the runtime package
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(STAMP) ## pure logic, network sockets disabled
	$(PYTEST) -q tests/unit

integration: $(STAMP) ## moto, a real Redis on a free port, the emulator over a real socket
	$(PYTEST) -q tests/integration

contract: $(STAMP) ## the openai SDK against the running local stack
	$(PYTEST) -q tests/contract

e2e: $(STAMP) ## the whole local stack (worker, event sources) through the CLI, S3 and SQS
	$(PYTEST) -q tests/e2e

faults: $(STAMP) ## the fault suite against the local stack; prints the fault table (also .seekless/faults.md)
	$(PYTEST) -q tests/faults

template: $(STAMP) ## cfn-lint and the SAM translator on template.yaml
	$(PYTEST) -q tests/template

browser: $(STAMP) ## the reference chat page in headless Chromium against the local stack
	$(PYTEST) -q tests/browser

fuzz: $(STAMP) ## schemathesis on the REST OpenAPI and a WebSocket frame fuzzer, 100 examples each (make test: 25)
	SEEKLESS_FUZZ_EXAMPLES=$${SEEKLESS_FUZZ_EXAMPLES:-100} $(PYTEST) -q tests/fuzz

browser-deps: ## install Debian's chromium for the browser tests (needs root and apt)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

bench: $(STAMP) ## run the benchmarks and rewrite BENCHMARKS.md
	$(BIN)/python -m bench

load: $(STAMP) ## open-loop load on the local stack: a ramp to the rate this machine sustains (~3 min)
	$(BIN)/python -m bench.load

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
