# Every command the README tells you to run. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Offline machines: use the shared tiktoken cache when it sits beside the checkout.
SHARED_TIKTOKEN := $(abspath ../shared/tiktoken-cache)
ifeq ($(origin TIKTOKEN_CACHE_DIR), undefined)
  ifneq ($(wildcard $(SHARED_TIKTOKEN)),)
    export TIKTOKEN_CACHE_DIR := $(SHARED_TIKTOKEN)
  endif
endif

# uv: `make UV=/path/to/uv`, else the uv on PATH, else ~/.local/bin/uv, else a pinned uv that
# scripts/bootstrap_uv.py downloads from PyPI into .tools/bin with python3 alone (Debian's
# python3 refuses `pip install --user`, PEP 668, and may have no venv module).
UV_VERSION := 0.13.9
LOCAL_UV := $(CURDIR)/.tools/bin/uv
ifeq ($(origin UV), undefined)
  UV := $(or $(shell command -v uv 2>/dev/null),$(wildcard $(HOME)/.local/bin/uv),$(LOCAL_UV))
endif
# uv makes .venv from a Python already on the machine (Debian 12's python3 is 3.11) rather
# than downloading one (where its download host is unreachable that would only fail late),
# and trusts the system's CA certificates (/etc/ssl/certs) as pip and python3 do (needed
# behind a TLS-inspecting proxy). Override either on the command line or in the env.
export UV_PYTHON_DOWNLOADS ?= never
export UV_SYSTEM_CERTS ?= 1

.PHONY: help uv install demo test test-fast lint format type notebooks docs bench eval redis postgres chromium

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

uv: ## Install uv (pinned, into .tools/bin) if there is none
	@if [ "$(UV)" = "$(LOCAL_UV)" ]; then python3 scripts/bootstrap_uv.py "$(dir $(LOCAL_UV))" $(UV_VERSION); \
	elif [ ! -x "$(UV)" ]; then echo "error: UV=$(UV) is not an executable" >&2; exit 1; fi

install: uv ## Create .venv with the package, extras and dev tools (from uv.lock)
	@$(UV) sync --locked --all-extras --quiet

demo: install ## Run the demo on the in-memory store (no API key needed)
	@$(UV) run --locked ctx-memory demo

redis: ## Make sure redis-server is installed (Debian package)
	@scripts/ensure-redis.sh

chromium: ## Make sure Chromium is installed (Debian package; the inspector's browser tests)
	@scripts/ensure-chromium.sh

postgres: ## Make sure PostgreSQL's initdb/pg_ctl are installed (Debian package)
	@scripts/ensure-postgres.sh

test: install redis postgres chromium ## Run the whole test suite (starts its own Redis and PostgreSQL servers)
	$(UV) run --locked --all-extras --group bench pytest

test-fast: install ## Unit tests only (no Redis)
	$(UV) run --locked pytest tests/unit

lint: install ## ruff check and format check
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

format: install ## ruff format and autofix
	$(UV) run --locked ruff format .
	$(UV) run --locked ruff check --fix .

type: install ## mypy --strict
	$(UV) run --locked mypy

notebooks: install redis ## Execute every notebook
	$(UV) run --locked pytest tests -m notebook

# --strict: a warning (broken link, cross-reference without a target) fails the build.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor; nothing else.
docs: install ## Build the docs site into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(UV) run --locked mkdocs build --strict

bench: install redis postgres ## Run the benchmarks (ratios against the baselines)
	$(UV) sync --locked --all-extras --group bench --quiet
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_redis.py
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_assembly.py
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_recall.py
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_manager.py
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_postgres.py
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_server.py
	$(UV) run --locked --all-extras --group bench python benchmarks/bench_analytics.py

eval: uv ## Measure recall, cache stability, latency, integrity (LoCoMo + agent traces) into eval-report/
	$(UV) run --locked --group bench ctx-memory eval
