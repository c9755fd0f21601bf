# movierec: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
MOVIEREC := $(BIN)/movierec

demo: setup ## The main job: the whole system end to end on the local stack, then a report (leaves it running)
	@$(MOVIEREC) demo up

demo-down: ## Stop everything `make demo` started
	@if [ -x $(MOVIEREC) ]; then $(MOVIEREC) demo down; fi

.PHONY: demo demo-down help setup system venv kafka-jars up down status serve loadtest lint test test-unit test-integration test-e2e test-container image compose-up compose-down bench clean

# extra pytest arguments, e.g. PYTEST_ARGS=--junitxml=var/junit/unit.xml (the Jenkinsfile's)
PYTEST_ARGS ?=

help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: system venv kafka-jars ## Install everything: apt packages, virtualenv, Python deps, Kafka jars

system: ## Install Java, Maven, redis-server, prometheus, alertmanager and wrk with apt-get when missing
	@bash ops/setup-system.sh

venv: $(VENV)/.installed ## Create .venv and install the project with its dev dependencies

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

kafka-jars: venv ## Fetch the Kafka broker's jars from Maven Central (once)
	@$(MOVIEREC) infra fetch

up: setup ## Start the local stack (Kafka, Redis, Prometheus) and wait until it answers
	@$(MOVIEREC) infra up

down: ## Stop the parts of the local stack that movierec started
	@test -x $(MOVIEREC) && $(MOVIEREC) infra down || true

status: venv ## Show the state of each part of the local stack
	@$(MOVIEREC) infra status

serve: setup ## Run the recommendation API on :8082 (foreground; needs `make up` and a trained model)
	@$(MOVIEREC) serve

loadtest: up ## Stage a world, start the service on :18082, run locust, print the SLO report
	@$(MOVIEREC) loadtest

lint: venv ## Check the code: ruff over the repository, mypy over the packages, hadolint over the Dockerfiles
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@$(BIN)/hadolint Dockerfile ops/container/infra.Dockerfile

test: setup ## Run unit, integration, end-to-end and container tests with coverage; they run their own stack
	@$(BIN)/python -m pytest tests/unit tests/integration tests/e2e tests/container \
		--cov --cov-report=term --cov-report=xml:var/coverage.xml $(PYTEST_ARGS)

test-unit: venv ## Run the fast unit tests only (no services)
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup ## Run the integration tests against a real Kafka, Redis and Prometheus
	@$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: setup ## Run the end-to-end test: a small `movierec demo up` on free ports
	@$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

test-container: setup ## Build the images, run the compose stack, check it from the host, tear it down (root)
	@$(BIN)/python -m pytest tests/container $(PYTEST_ARGS)

image: kafka-jars ## Build every image of the compose stack with podman (root; the Debian base when missing)
	@ops/container/build-images.sh

compose-up: image ## Run the whole system in containers (docker-compose.yml via podman); the API on :8082
	@ops/container/compose.sh up

compose-down: ## Stop the compose stack and remove its containers (its volumes are kept)
	@ops/container/compose.sh down

# Benchmarks that need no services, at sizes that take a few minutes in all; the full-scale
# commands and the figures they gave are in docs/benchmarks.md.
BENCH_ALONE := wire_parse record_decode consumer_stages event_store
BENCH_STACK := consumer freshness serve sim_backfill

bench: venv ## Run the benchmarks that need no services (JSON in var/bench/); name those that need `make up`
	@mkdir -p var/bench
	@set -e; for b in $(BENCH_ALONE); do \
		echo "== benchmarks/$$b.py"; $(BIN)/python benchmarks/$$b.py --out var/bench/$$b.json; done
	@echo "== benchmarks/sim_live.py (50 and 200 requests/s, one repeat)"
	@$(BIN)/python benchmarks/sim_live.py --rates 50,200 --duration 3 --repeats 1 --out var/bench/sim_live.json
	@echo "== benchmarks/train.py (a small world; the full scale is 1M x 27K, see docs/benchmarks.md)"
	@$(BIN)/python benchmarks/train.py --users 50000 --movies 5000 --interactions 1000000 --runs 1 \
		--batch-users 20000 --factors 32 --out var/bench/train_small.json
	@echo; echo "Figures: var/bench/*.json. These need the local stack (make up first):"
	@for b in $(BENCH_STACK); do echo "  $(BIN)/python benchmarks/$$b.py --out var/bench/$$b.json"; done

clean: down ## Stop the stack and delete var/ (data, logs, jars) and .venv
	rm -rf var $(VENV) .pytest_cache .coverage
