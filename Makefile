# The two commands: `make run` (the whole stack on the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench model-test migrate install postgres-binaries clean

run: $(STAMP)
	$(BIN)/smartplex-sync run

test: $(STAMP) postgres-binaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# The model-based test of the whole data path, long: 300 examples on SQLite and on PostgreSQL.
model-test: $(STAMP) postgres-binaries
	SMARTPLEX_MODEL_EXAMPLES=300 SMARTPLEX_MODEL_STEPS=30 $(BIN)/pytest tests/test_data_path_model.py -n 0 -s -p no:logging

migrate: $(STAMP)
	$(BIN)/smartplex-sync migrate

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

# The suite starts a throwaway PostgreSQL, and a PgBouncer in transaction mode in front of it (as Supabase's
# pooler on 6543), from the machine's own binaries; install them from Debian's packages if they are missing.
postgres-binaries:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
