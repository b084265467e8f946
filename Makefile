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

.PHONY: up install test test-fast lint format audit fonts train eval-canvas wrk bench bench-batch \
  eval-numbers bench-numbers eval-cli soak feedback-load feedback-eval clean

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
## The Debian fonts the renderers draw with (requirements/debian-fonts.txt), if missing.
fonts:
	@missing=$$(for f in $$(grep -v '^#' requirements/debian-fonts.txt); do \
	  dpkg -s $$f >/dev/null 2>&1 || echo $$f; done); \
	[ -z "$$missing" ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }

train: install fonts
	$(PY) -m trainer train --data $(DATA)

## Accuracy on canvas-style drawings, through a running stack's /predict.
eval-canvas: install
	$(PY) -m tools.eval_canvas --data $(DATA)

## wrk (the load generator) comes from Debian; installed here if missing.
wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get install -y -q wrk || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wrk; }; }

## The whole benchmark, one system after another: /predict against the original design,
## the no-op Celery ceiling and our stack with the folder and the S3 store, then
## /predict/batch against /predict at c=8, then /predict/number at c=1 and c=32.
bench: install wrk
	$(PY) -m tools.bench --data $(DATA)
	$(PY) -m tools.bench_batch --data $(DATA)
	$(PY) -m tools.bench_numbers --data $(DATA)

## /predict/batch against /predict, images/s at c=8 with the same drawings (wrk, as bench).
bench-batch: install wrk
	$(PY) -m tools.bench_batch --data $(DATA)

## Whole numbers (tools/numbers_set.py): exact match by length and closeness
## (docs/numbers.md). In this process, or through POST /predict/number with URL=....
eval-numbers: install
	$(PY) -m tools.eval_numbers --data $(DATA) $(if $(URL),--url $(URL))

## POST /predict/number with 4-digit numbers: p50 at c=1, numbers/s at c=32 (wrk).
bench-numbers: install wrk
	$(PY) -m tools.bench_numbers --data $(DATA)

## `digits predict` on the 10,000 test digits drawn as canvas PNGs: time and accuracy.
## Against a running stack with URL=http://127.0.0.1:8000 (make up), else a private one.
eval-cli: install
	$(PY) -m tools.eval_cli --data $(DATA) $(if $(URL),--url $(URL))

soak: install
	$(PY) -m tools.soak --data $(DATA)

## 10,000 concurrent POST /feedback (8 clients) on SQLite and PostgreSQL, a gunicorn
## process killed mid-load, then an audit of every row (docs/feedback.md).
feedback-load: install
	$(PY) -m tools.feedback_load --db both --n 10000 --clients 8

## The learning loop's targets: 1,500 corrections through POST /feedback, one finetune,
## before/after error on new styles, MNIST, canvas set, hot reload (docs/feedback.md).
feedback-eval: install fonts
	$(PY) -m tools.feedback_eval --data $(DATA)

clean:
	rm -rf var artifacts .pytest_cache .ruff_cache
