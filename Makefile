# Two commands matter: `make run` (the service on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra
# `make run PORT=8100` when 8000 is taken (run_local stops at once if it is).
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format bench drills lock infra-tools clean

# `make run` installs only what local mode needs: the runtime (base.txt) and
# the embedded AWS emulator (local.txt). The test tools (dev.txt: playwright,
# pytest, ruff ...) and the infra linters (.venv-infra) come with `make test`.
# (The venv's own pip is recent enough for these wheels; `make test` upgrades it.)
$(VENV)/.runtime: requirements/base.txt requirements/local.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/local.txt
	touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements/dev.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	touch $@

# cfn-lint, checkov and hadolint live in their own virtualenv: checkov pins
# versions that would otherwise fight the service's own dependencies.
$(INFRA_VENV)/.installed: requirements/infra.txt
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r requirements/infra.txt
	touch $@

infra-tools: $(INFRA_VENV)/.installed

run: $(VENV)/.runtime
	DEBUG=true $(PY) manage.py run_local --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(VENV)/.installed infra-tools lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/fanout.py
	$(PY) bench/persistence.py
	$(PY) bench/content.py

# Fault drills (not part of `make test`): one JSON line per drill (docs/operations.md).
drills: $(VENV)/.installed
	$(PY) bench/drills.py $(DRILLS_ARGS)

# requirements/base.lock: base.txt resolved, every package pinned with hashes
# (the Dockerfile installs it with --require-hashes). Run after editing base.txt.
lock: $(VENV)/.installed
	$(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements/base.lock requirements/base.txt

clean:
	rm -rf $(VENV) $(INFRA_VENV) var .pytest_cache .ruff_cache
