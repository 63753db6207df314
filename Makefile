# The README's two commands: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
# `make run`'s status page and /metrics: loopback, a free port (its URL is logged at start)
HTTP   ?= 127.0.0.1:0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STATE  ?= .state

.PHONY: run test test-slurm-noacct lint typecheck schema bench clean venv sysdeps

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "orchestrator needs Python 3.11 or newer"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,photometry]'  # the demo and tests use both
	touch $(STAMP)

# The daemon in the foreground on the bundled jobs.d/, with its state inside the repository.
# The venv's bin/ goes first on PATH so that jobs can call `orchestrator` (the photometry demo).
# Manifests run commands, so the daemon refuses a jobs directory others can write: a checkout
# made under a umask of 002 gets its group write bit removed here. The state directory holds
# every run's output and history: the user's alone (0700), whatever the umask.
run: $(STAMP)
	chmod go-w jobs.d jobs.d/*.yaml
	mkdir -p -m 700 $(STATE) && chmod 700 $(STATE)
	@echo "make run: in another terminal here, .venv/bin/orchestrator status (orchestrator.toml names jobs.d and $(STATE)); the status page and /metrics: the 'http_listening url=' line below"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/orchestrator run --jobs-dir jobs.d --state-dir $(STATE) --http-address $(HTTP)

sysdeps:
	bash scripts/system-deps.sh
	bash scripts/slurm-deps.sh --accounting --best-effort
	bash scripts/sshd-deps.sh

# --durations: the slowest tests are named at the end of every run (the suite must stay under
# 20 minutes on a 2-core CI machine)
test: $(STAMP) sysdeps
	chmod go-w jobs.d jobs.d/*.yaml
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# The Slurm tests again on a cluster without accounting (no slurmdbd: no sacct), the other
# real deployment; `make test` runs them with accounting.
test-slurm-noacct: $(STAMP) sysdeps
	ORCH_SLURM_ACCOUNTING=0 $(BIN)/python -m pytest -q --durations=10 tests/slurm $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

schema: $(STAMP)
	$(BIN)/orchestrator schema

bench: $(STAMP)
	$(BIN)/python benchmarks/daemon_scale.py

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache
