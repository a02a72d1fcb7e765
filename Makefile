# Quickstart: `make demo` and `make test`. Each creates .venv and installs
# the project into it when missing (or when pyproject.toml changed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test mutate lint typecheck protos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "invisible needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/invisible demo

test: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Mutation testing of the security checks (mutmut; the modules and their tests are in
# pyproject.toml's [tool.mutmut]): prints every surviving mutant. Not part of `make test`.
mutate: $(STAMP)
	$(BIN)/python scripts/mutate.py

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py


clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
