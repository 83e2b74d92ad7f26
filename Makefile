# Flowsite: `make run` starts the product on embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: run test test-e2e install install-dev lint demo bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py flowsite_bootstrap
	$(PY) manage.py flowsite_run

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test-e2e: install-dev
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py flowsite_demo

# Flowsite on both backends against Metaflow; needs PostgreSQL, Redis and
# bench/.metaflow-venv (see docs/benchmarks.md).
bench: install-dev
	$(PY) bench/run_bench.py

clean:
	rm -rf var/broker var/work
