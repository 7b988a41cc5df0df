# The two commands a new user needs: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
BUF := node_modules/.bin/buf
export GRPC_VERBOSITY ?= ERROR

.PHONY: run run-postgres replay test rust-check soak lint check contracts baseline clean gateway-binary

# lienthong-gateway, which `lienthong serve gateway` runs, built as it is deployed; cargo
# rebuilds only what changed.
gateway-binary:
	cargo build --release --locked --quiet --bin lienthong-gateway

run: $(PY_STAMP) gateway-binary
	$(BIN)/lienthong run --config config/dev.toml

# The same stack with PostgreSQL for all three databases (created if missing), as in
# production: the server at $(POSTGRES), overridable.
POSTGRES ?= postgresql+psycopg://postgres@127.0.0.1:5432
run-postgres: $(PY_STAMP) gateway-binary
	LIENTHONG__JUSTICE__DATABASE_URL=$(POSTGRES)/lienthong_justice \
	LIENTHONG__POLICE__DATABASE_URL=$(POSTGRES)/lienthong_police \
	LIENTHONG__GATEWAY__AUDIT__DATABASE_URL=$(POSTGRES)/lienthong_audit \
	$(BIN)/lienthong run --config config/dev.toml

# With `make run` (or run-postgres) going in another terminal: the 2016 pilot replayed.
replay: $(PY_STAMP)
	$(BIN)/lienthong replay --config config/dev.toml

# Test modules run in parallel, TEST_WORKERS at a time, each module whole in one worker and the
# longest first (tests/conftest.py); ports: tests/ports.py. The Rust checks run first: run
# beside the suite, their compiling slowed the crash soak more than it saved (593 s vs 560 s).
TEST_WORKERS ?= 3
test: $(PY_STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) rust-check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The gateway's data plane (gateway/dataplane): formatted, clippy-clean, its own tests.
rust-check:
	cargo fmt --all --check
	cargo clippy --all-targets --locked --quiet -- -D warnings
	cargo test --locked --quiet

# The long crash soak (issue 8, docs/reliability.md): the whole pilot replayed while the
# three services are killed with SIGKILL and restarted; `make test` runs a short one.
SOAK_ARGS ?= --registrations 88982 --kills 40 --gap 5 40
soak: $(PY_STAMP)
	$(BIN)/python tests/crash_soak.py $(SOAK_ARGS)

lint: $(PY_STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	cd protos && ../$(BUF) lint && ../$(BUF) format --diff --exit-code

# Regenerate the contracts' Python code (and .pyi stubs) after editing protos/.
contracts: $(PY_STAMP) $(NODE_STAMP)
	cd protos && ../$(BUF) format -w
	$(BIN)/python tools/generate_contracts.py

# Record the current contracts as the baseline `buf breaking` compares against (on release).
baseline: $(NODE_STAMP)
	cd protos && ../$(BUF) build -o baseline/lienthong.binpb

$(PY_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "lienthong needs Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules var target certs/dev .mypy_cache .ruff_cache .pytest_cache
