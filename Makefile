# One-command set-up for a fresh machine: each target creates the virtual environment if needed, installs
# torch's CPU wheel first (pinned, so pip never resolves a multi-GB CUDA build), then the project.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.cwm-rl-installed

.PHONY: demo test bench lint format install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cwm-rl demo --out runs/demo

test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the test suite is missing or mis-configured" >&2; fi; \
	exit $$rc

bench: $(STAMP)
	$(BIN)/cwm-rl bench --out-dir docs
	$(BIN)/cwm-rl bench end_to_end --out-dir docs
	$(BIN)/python benchmarks/make_results.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache build *.egg-info
