# Signoff: `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Tests start a private redis-server on a free port when REDIS_URL is unset (each of
# pytest-xdist's workers its own); scripts/system-packages installs it (and Chromium for
# the browser test) when missing. The suite mostly waits on Redis, RQ and HTTP, so four
# workers on two cores finish it in about half the time of one.
PYTEST_WORKERS ?= 4
test: $(STAMP)
	scripts/system-packages
	$(BIN)/ruff check engine bot signoff slack_emulator elastic_emulator openai_emulator tests benchmarks demo
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check engine bot signoff slack_emulator elastic_emulator openai_emulator tests benchmarks demo
	$(BIN)/mypy

demo: $(STAMP)
	scripts/system-packages redis
	$(BIN)/python -m demo

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
