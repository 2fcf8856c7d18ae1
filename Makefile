# Beacon: `make run` starts the API, a worker and beat; `make test` runs the suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install run test lint bench bench-schedules bench-campaigns fuzz migrate token clean

$(BIN)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_default_templates

run: migrate
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	PORT=$(PORT) BIN=$(BIN) ./scripts/run.sh

# An API token for USER (created if new), in the database the service uses: run it with
# the same DATABASE_URL as `make run`, or the token lands in another database.
token: migrate
	$(BIN)/python manage.py issue_api_token "$(USER)" --create

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run

# The API against its OpenAPI schema with schemathesis, many examples per operation.
fuzz: install
	BEACON_FUZZ_EXAMPLES=$${BEACON_FUZZ_EXAMPLES:-200} $(BIN)/python -m pytest tests/contract $(PYTEST_ARGS)

bench: install
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_schedules.py
	$(BIN)/python scripts/bench_webhooks_inbox.py
	$(BIN)/python scripts/bench_pacing.py
	$(BIN)/python scripts/bench_campaigns.py

# Campaign fan-out of 1,000,000 and its delivery (BENCH_ARGS="--n 100000" for a quick one).
bench-campaigns: install
	$(BIN)/python scripts/bench_campaigns.py $(BENCH_ARGS)

# The due scan over 1,000,000 schedule rows and the decision's statement count alone.
bench-schedules: install
	$(BIN)/python scripts/bench_schedules.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
