# Two commands do all the set-up on a fresh machine:
#   make demo   install, then recommend for real Amazon Beauty users on the offline local model
#   make test   install, then lint, type-check and run every test (CI runs this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test unit lint bench clean

$(BIN)/m3rec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,test,eval]'
	$(BIN)/m3rec fetch-model
	touch $(BIN)/m3rec

install: $(BIN)/m3rec

demo: install
	$(BIN)/m3rec demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m "not integration"

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
