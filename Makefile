# Entry points for people and CI. Tools always run from .venv, never from whatever is on PATH.
#   make demo   set everything up and run the main job
#   make test   set everything up and run lint, type checks and the tests (against a real broker)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: help setup setup-train k8s-tools prometheus-tools browser kafka kafka-down kafka-status lint typecheck test demo models models-v1 models-eval \
	bench bench-engine bench-gpu bench-gpu-dry gpu-carry gpu-model faults soak loadtest k8s clean

help: ## Show the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes (or the stamp is missing).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

setup: $(STAMP) ## Create .venv if missing and install the project with its dev extras.

setup-train: setup ## Also install the train extra (torch: several GB; only to rebuild the models).
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,train]'

kafka: setup ## Start (or reuse) the local Kafka broker; prints its bootstrap address.
	$(BIN)/moderation kafka up

kafka-down: ## Stop the local Kafka broker (no-op when it is not running).
	@if [ -x $(BIN)/moderation ]; then $(BIN)/moderation kafka down; else echo "no $(BIN)/moderation: nothing to stop"; fi

kafka-status: ## Say whether the local broker runs, and where.
	$(BIN)/moderation kafka status

lint: setup ## ruff.
	$(BIN)/ruff check .

typecheck: setup ## mypy on the package.
	$(BIN)/mypy moderation

# The Kafka tests start (or reuse) the broker themselves and fail, never skip, when it cannot run.
k8s-tools: ## Install the pinned kustomize (Go proxy) and Strimzi validators (npm) the k8s tests use; instant when present.
	bash deploy/tools/install-k8s-tools.sh

# promtool and a Prometheus server for the alert rules' tests (Debian's prometheus package, apt-get once).
prometheus-tools: ## Install promtool + prometheus (Debian package) for the alert tests; instant when present.
	bash deploy/tools/install-prometheus.sh

# Debian's chromium + chromium-driver for the reviewer console's browser test (apt-get once, root or sudo).
browser: ## Install chromium + chromedriver for the console's browser test; instant when present.
	bash deploy/tools/install-browser.sh

test: setup k8s-tools prometheus-tools browser lint typecheck ## Lint, type-check and run every test, integration tests included.
	$(BIN)/pytest -ra

demo: setup ## Set up, start the broker and a worker, stream the sample posts, show decisions live, stop.
	$(BIN)/moderation demo

DATA ?= ../shared/data
V1_COMMIT = 0756d9d
V1_DIR = build/models/moderation-minilm-v1
ACCURATE_DIR = build/models/moderation-e5-accurate
models: setup-train ## Rebuild v2 from $(DATA): e5 teacher -> distilled MiniLM, leave-one-source-out runs, review bands, eval, drift reference (~90 min on 2 CPU cores).
	$(BIN)/moderation models build --data-dir $(DATA) --accurate-out $(ACCURATE_DIR)
	$(BIN)/moderation models loso --data-dir $(DATA)
	$(BIN)/moderation models bands --data-dir $(DATA)
	$(BIN)/moderation models bands --data-dir $(DATA) --out $(ACCURATE_DIR)
	$(MAKE) models-eval
	$(BIN)/moderation models reference

gpu-model: setup ## Derive the CUDA fp16 variant (and fp32) from the committed int8 file, checked against the manifest's sha256 (no torch).
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,fp16]'
	$(BIN)/moderation models derive --variants fp16

models-v1: ## moderation-minilm 1.0.0 from git history into $(V1_DIR) (the card compares with it).
	mkdir -p $(V1_DIR)
	for f in manifest.json model.int8.onnx tokenizer.json; do \
	  git show $(V1_COMMIT):moderation/models/artifacts/moderation-minilm/$$f > $(V1_DIR)/$$f; done

models-eval: setup models-v1 ## Evaluate the shipped models on the held-out test splits (v1.0.0 and the accurate variant alongside); rewrites MODEL_CARD.md.
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,eval]'
	$(BIN)/moderation models eval --data-dir $(DATA) --compare v1.0.0=$(V1_DIR) \
	  $(if $(wildcard $(ACCURATE_DIR)/manifest.json),--compare accurate=$(ACCURATE_DIR))

bench: setup ## End-to-end benchmark through the real broker: shipped worker vs naive; writes BENCHMARKS.md.
	$(BIN)/moderation bench pipeline --out BENCHMARKS.md

bench-engine: setup ## The inference engine alone on CPU (int8 vs fp32, by batch size).
	$(BIN)/moderation bench engine --out bench-results/engine.json

# The GPU machine may have no registry and no venv: the script brings the carried wheelhouse (gpu-carry).
GPU_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
bench-gpu: ## On an NVIDIA GPU: probe, bring what is missing, fp16 engine sweep, workers end to end (1, 2 processes) -> JSON.
	PYTHON=$(GPU_PYTHON) bash deploy/tools/gpu-bench.sh bench-results

bench-gpu-dry: setup ## The same script on the CPU (int8, small sizes): proves it runs before GPU minutes are spent.
	PYTHON=$(BIN)/python bash deploy/tools/gpu-bench.sh --dry-run bench-results

gpu-carry: setup ## Pack the wheelhouse a registry-less GPU machine needs (Python 3.12, onnxruntime-gpu) as .gpu-carry/part-*.
	PYTHON=$(BIN)/python bash deploy/tools/gpu-carry.sh

faults: setup ## Fault suite on a private broker: kill -9 x5 + broker restart in 30k posts, poison corpus, 4 codecs -> RELIABILITY.md.
	$(BIN)/moderation bench faults --out bench-results/faults.json --report RELIABILITY.md

SOAK_SECONDS ?= 4800
SOAK_RATE ?= 28
soak: setup ## One worker, 28 posts/s (SOAK_RATE) of mostly distinct texts for 80 min (SOAK_SECONDS), private broker: RSS slope, log lines/h -> RELIABILITY.md.
	$(BIN)/moderation bench soak --seconds $(SOAK_SECONDS) --rate $(SOAK_RATE) --out bench-results/soak.json --report RELIABILITY.md

LOAD_RATE ?= 14
LOAD_DURATION ?= 60s
loadtest: setup ## Locust, headless, against the local broker + a worker at 50k posts/hour; HTML + CSV report.
	$(BIN)/python -m moderation.devtools.loadtest --rate $(LOAD_RATE) --duration $(LOAD_DURATION) --out loadtest/report

# kustomize (pinned, built from the Go module proxy) and the Strimzi schemas (npm) go to
# $MODERATION_TOOLS_DIR (default ~/.cache/moderation/tools); tests/deploy uses the same place.
k8s: setup k8s-tools ## Render every kustomize overlay to k8s/rendered/ and validate them (tests/deploy).
	@tools="$${MODERATION_TOOLS_DIR:-$$HOME/.cache/moderation/tools}"; mkdir -p k8s/rendered; \
	for dir in k8s/overlays/*/ k8s/review/ k8s/api/; do name=$$(basename "$$dir"); \
		"$$tools/bin/kustomize" build "$$dir" > "k8s/rendered/$$name.yaml" || exit 1; echo "k8s/rendered/$$name.yaml"; \
	done
	$(BIN)/pytest -q -p no:cacheprovider tests/deploy

clean: ## Remove caches and build output (keeps .venv and the Kafka jar cache).
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
