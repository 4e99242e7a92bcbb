# whisperq developer tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help setup system-deps demo test lint format wheel bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# constraints.txt: the exact versions CI tests and the worker image installs (docs/development.md,
# "Pinned versions"); editing it reinstalls.
$(BIN)/whisperq: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/whisperq  ## Virtualenv in .venv with whisperq, the worker, the local stack and dev tools

system-deps:  ## Debian/Ubuntu packages the tests use (espeak-ng, sox, packer, shellcheck, systemd, chromium)
	scripts/system-deps.sh

demo: setup  ## Start the local stack, transcribe examples/calls, write transcripts/ and their review site
	scripts/demo.sh

test: setup system-deps  ## Run the test suite (unit, integration against moto, end to end)
	$(BIN)/python -m pytest

.PHONY: test-stress
test-stress: setup system-deps  ## The reliability tests 3 times in a row under 2 busy CPU loops
	PYTHON=$(BIN)/python scripts/stress-test.sh 3 2

.PHONY: rehearse
rehearse: setup system-deps  ## Deploy rehearsal: the stack's IAM policies enforced on moto, user data size, argument names
	$(BIN)/python -m pytest tests/infra/test_rehearsal.py

lint: setup  ## ruff check, format check and mypy (types)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup system-deps  ## Speed and accuracy: synthetic calls end to end, real speech per condition, packing's privacy (quick) (BENCHMARKS.md)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/real_speech.py
	$(BIN)/python benchmarks/privacy.py --quick

wheel: setup  ## Build dist/whisperq-*.whl (what the worker image installs)
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .

# `make deploy STACK=prod`: the wheel a stock image installs, then `pulumi up` (docs/deploy.md,
# "Deploy to AWS"; the stack must exist: `pulumi stack init`).
STACK ?= dev
.PHONY: deploy
deploy: wheel  ## pulumi up for STACK (default dev) in infra_pulumi/, with a fresh wheel
	cd infra_pulumi && pulumi up --stack $(STACK)

clean:  ## Remove the virtualenv and caches (stop the local stack first)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info dist build
