# Two commands do all the set-up on a fresh clone:
#   make run    build the environment, then run the main job (snakemake --cores 8)
#   make test   build the environment, then run lint checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8
# On a machine without an NVIDIA GPU, pin torch to the small CPU wheel.
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)

.PHONY: venv run test lint format clean-venv

$(BIN)/activate: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(CONSTRAINTS) -e ".[dev,slurm]"
	touch $(BIN)/activate

venv: $(BIN)/activate

# A run killed hard (SIGKILL, power loss) leaves Snakemake's lock behind; it is
# cleared only when no Snakemake runs here, then the run resumes (rerun-incomplete).
run: venv
	$(BIN)/python -m irm_bench.locks
	$(BIN)/snakemake --cores $(CORES)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

test: lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow/rules

clean-venv:
	rm -rf $(VENV)
