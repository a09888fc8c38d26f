# Two commands do all the set-up on a fresh machine:
#   make demo   install, then recommend for real Amazon Beauty users on the offline local model
#   make test   install, then lint, type-check and run every test (CI runs this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install postgres demo test unit lint bench clean

$(BIN)/m3rec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,test,eval,scale]'
	$(BIN)/m3rec fetch-model
	touch $(BIN)/m3rec

install: $(BIN)/m3rec

# The store tests (tests/postgres_server.py) start their own throwaway PostgreSQL server
# from Debian's binaries, which live in /usr/lib/postgresql/NN/bin, off PATH. Installs the
# `postgresql` package when they are missing (as root, as CI runs); a no-op once installed.
# The package's own cluster (port 5432) is never used. M3REC_PG_BIN=<dir> points elsewhere.
postgres:
	@if [ -n "$$M3REC_PG_BIN" ] || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; \
	else \
		echo "make postgres: PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/pg_ctl)." >&2; \
		echo "  Install Debian's package as root: apt-get install --no-install-recommends postgresql" >&2; \
		echo "  (or set M3REC_PG_BIN=<dir with initdb and postgres>, or M3REC_SKIP_POSTGRES=1 to skip those tests)." >&2; \
	fi

demo: install
	$(BIN)/m3rec demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint postgres
	$(BIN)/pytest

unit: install postgres
	$(BIN)/pytest -m "not integration"

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
