# recflow — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
AIRFLOW_PORT ?= 8793
SERVE_PORT ?= 8000
WORKERS ?=

.PHONY: install demo test lint unit integration airflow serve clean help redis

help:
	@echo "make demo   — install, run the whole pipeline (dvc repro), print a summary"
	@echo "make test   — lint + the whole test suite"
	@echo "make airflow / make serve — the two long-running front doors"

install:
	@$(UV) --version >/dev/null 2>&1 || { echo "uv not found; installing it with pip…"; python3 -m pip install --quiet uv; }
	@$(UV) sync --frozen --quiet --compile-bytecode
	@test -d .dvc || { echo "missing .dvc/: this is not a recflow checkout"; exit 2; }

demo: install
	@$(BIN)/dvc repro
	@$(BIN)/recflow summary

lint: install
	$(BIN)/ruff check pipeline dags tests benchmarks feature_repo
	$(BIN)/lint-imports --no-cache

test: lint redis
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q -m "not integration"

integration: install redis
	$(BIN)/pytest -q -m integration

serve: install
	@test -f models/registry/champion.json || { echo "no champion yet: run 'make demo' (or dvc repro) first"; exit 2; }
	@echo "recflow API on http://127.0.0.1:$(SERVE_PORT)  (docs: /docs, metrics: /metrics) — Ctrl-C stops it"
	@$(BIN)/python -m pipeline.serving.run --port $(SERVE_PORT) $(if $(WORKERS),--workers $(WORKERS))

# Real Redis for the online-store tests (Debian package); installed only when missing.
redis:
	@command -v redis-server >/dev/null 2>&1 || { echo "installing redis-server (apt)…"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

clean:
	rm -rf data models reports metrics plots logs feature_repo/data dvc.lock

airflow: install
	@$(BIN)/python -m pipeline.orchestration.airflow_local --port $(AIRFLOW_PORT)
