# CardBus task runner: the README and CI call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup system venv jars test demo up lint mutation clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

setup: system venv jars  ## install everything: apt packages, the venv, the Kafka and jPOS jars

system:  ## install missing Debian packages (Java, Maven, pcscd, vpcd, pcsc-tools, swig, kcat)
	@deploy/install-system.sh

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[test,bench,lint]'
	@touch $(STAMP)

jars: venv  ## fetch Apache Kafka and jPOS (the ISO 8583 bank host) from Maven Central
	@$(BIN)/cardbus broker fetch
	@$(BIN)/cardbus iso-host fetch

test: setup  ## run the test suite (starts a real Kafka broker and pcscd for the session)
	@scripts/test.sh

demo: setup  ## run the main job end to end against a real broker, then stop everything
	@$(BIN)/cardbus demo

PACKAGES := schemas cardbus streams agents reader_agent cards audit bench console

lint: venv  ## the layer contracts (import-linter), ruff, and mypy --strict on the packages
	@$(BIN)/lint-imports --no-cache
	@$(BIN)/python -m ruff check .
	@$(BIN)/python -m mypy $(PACKAGES)

mutation: venv  ## mutation testing (mutmut) of the crypto core, decisions and codec; not in CI
	@$(BIN)/python -m pip install -q -e '.[mutation]'
	@rm -rf mutants
	@$(BIN)/mutmut run --max-children 2 > .cardbus/mutmut.log 2>&1 || (tail -40 .cardbus/mutmut.log; exit 1)
	@$(BIN)/python scripts/mutation_score.py

clean:  ## remove the venv and local state (broker data, cards, keys)
	-@$(BIN)/cardbus broker stop 2>/dev/null
	-@$(BIN)/cardbus iso-host stop 2>/dev/null
	rm -rf $(VENV) .cardbus
