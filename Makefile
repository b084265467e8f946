# Two commands do everything on a fresh machine: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/mnist
WORKERS ?= 2
PORT ?= 8000
export WORKERS PORT
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up install test test-fast lint format audit train eval-canvas bench soak clean

$(VENV)/.installed: requirements/*.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

## Serve the app: private Redis (or $$REDIS_URL), $$WORKERS workers, gunicorn on $$PORT.
up: install
	$(PY) -m digits.stack

## The whole suite: unit, integration (real Redis, workers, gunicorn), browser, compose.
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not browser and not slow"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

audit: install
	$(PY) -m pip_audit --progress-spinner off -r requirements/api.txt -r requirements/worker.txt -r requirements/trainer.txt

## Full training run into $$MODEL_DIR (default var/models); workers hot-reload it.
train: install
	$(PY) -m trainer train --data $(DATA)

## Accuracy on canvas-style drawings, through a running stack's /predict.
eval-canvas: install
	$(PY) -m tools.eval_canvas --data $(DATA)

## wrk (the load generator) comes from Debian; installed here if missing.
bench: install
	@command -v wrk >/dev/null || { $(SUDO) apt-get install -y -q wrk || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wrk; }; }
	$(PY) -m tools.bench --data $(DATA)

soak: install
	$(PY) -m tools.soak --data $(DATA)

clean:
	rm -rf var artifacts .pytest_cache .ruff_cache
