# respodiff: `make help` lists the targets. Every target sets up its own virtual environment first.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.respodiff-installed
# pytest options, e.g. make test PYTEST_ARGS="-k hook -x"
PYTEST_ARGS ?=
# Run folders, image stores and local reports; run.py reads the same variable (conf/paths/default.yaml).
OUTPUTS := $${RESPODIFF_OUTPUTS:-outputs}

.DEFAULT_GOAL := help
.PHONY: help venv demo report test test-long lint toy-model paper-tables results bench bench-gpu smoke-paper clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv and install respodiff with the pinned versions (idempotent)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

demo: venv ## The main job on the toy world: train, generate, evaluate, compare, report (CPU, ~7 minutes; writes only under outputs/)
	@start=$$(date +%s); \
	$(PY) run.py -m experiment=gender_toy method=none,respodiff,ram_only && \
	$(PY) -m respodiff.evaluation compare --base $(OUTPUTS)/gender_toy/method=none \
	  $(OUTPUTS)/gender_toy/method=respodiff $(OUTPUTS)/gender_toy/method=ram_only && \
	$(PY) -m respodiff.reporting demo --experiment gender_toy --outputs $(OUTPUTS) --started $$start

report: venv ## Static report site: results/site/ (committed results, images found under outputs/) and outputs/report/site/
	$(PY) -m respodiff.reporting site --results results/runs --outputs $(OUTPUTS) --out results/site
	@out=$(OUTPUTS); if [ -n "$$(find "$$out" -path '*/results/*.json' -print -quit 2>/dev/null)" ]; then \
	  $(PY) -m respodiff.reporting collect --outputs "$$out" --dest "$$out/report/runs" && \
	  $(PY) -m respodiff.reporting site --results "$$out/report/runs" --outputs "$$out" --out "$$out/report/site"; \
	else echo "no local results under $$out: no local report"; fi

test: venv ## Run the test suite (CPU, no network)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -m "not faults and not smoke" $(PYTEST_ARGS)

test-long: venv ## kill -9 fault injection and the SD v1.4-size smoke run (CPU, ~20-30 minutes; CI runs it)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q -m "faults or smoke" $(PYTEST_ARGS)

lint: venv ## Lint with ruff
	$(VENV)/bin/ruff check .

toy-model: venv ## Train the toy world's diffusion model from scratch into models/toy (CPU: under 2 h)
	$(PY) -m respodiff.toyworld.train_toy_model --out models/toy

results: venv ## Collect every run's results JSON from outputs/ into results/runs/
	$(PY) -m respodiff.reporting collect --outputs $(OUTPUTS) --dest results/runs

paper-tables: venv ## Render every reproduction spec to results/tables/*.md and *.tex (+ plots), then `make report`
	$(PY) -m respodiff.reporting tables --results results/runs --specs reproductions --out results/tables
	@$(MAKE) --no-print-directory report

bench: venv ## Speed benchmarks on the tiny model (CPU); results in results/speed/
	$(PY) -m benchmarks.speed --model tiny

bench-gpu: venv ## Speed benchmarks on SD v1.4's architecture (GPU, random weights, no download)
	$(PY) -m benchmarks.speed --model sd14_arch

smoke-paper: venv ## Every stage at SD v1.4's and SDXL's real sizes (CPU, random weights); results/smoke/*.json
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m benchmarks.smoke

clean: ## Remove outputs/ (run folders, images); keeps results/ and the environment
	rm -rf outputs multirun
