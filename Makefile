# Two commands matter: `make run` (the service on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra

.PHONY: run test lint format bench drills infra-tools clean

$(VENV)/.installed: requirements/base.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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

run: $(VENV)/.installed
	DEBUG=true $(PY) manage.py run_local

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

# Fault drills (not part of `make test`): one JSON line per drill (docs/operations.md).
drills: $(VENV)/.installed
	$(PY) bench/drills.py $(DRILLS_ARGS)

clean:
	rm -rf $(VENV) $(INFRA_VENV) var .pytest_cache .ruff_cache
