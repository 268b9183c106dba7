# Two commands do all the set-up on a fresh clone: `make fit` and `make test`.
# Each creates .venv (if missing) and installs the package into it. On a CPU machine torch
# comes from the CPU wheel; with a GPU, install the CUDA build of torch into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CPU ?= torch==2.13.0

.PHONY: fit test test-slow lint bench-data compile-report gpu-carry gpu-report clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_CPU)"
	$(PY) -m pip install -e ".[test,show]"
	touch $(STAMP)

fit: $(STAMP)
	$(PY) -m lightning_alexnet fit --config tiny

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# ruff with the rules configured in pyproject.toml [tool.ruff]
lint: $(STAMP)
	$(PY) -m ruff check .

bench-data: $(STAMP)
	$(PY) bench/bench_data.py

compile-report: $(STAMP)
	$(PY) -m kernels.compile_report

# The Triton this project pins, packed for a GPU machine that has another and no network
# (bench/triton_carry.py): .gpu/triton-<version>-cp312-sm90.tar.xz, which gpu-report runs with
# there.
gpu-carry: $(STAMP)
	$(PY) bench/triton_carry.py pack $(ARGS)

# The GPU report (bench/gpu_report.py, < 8 min on one H100/H200). No install step: the checkout
# on PYTHONPATH, with .venv's python when there is one, else $(PYTHON) (a bare GPU machine's
# python3 with torch, triton, numpy and pytest). Options: make gpu-report ARGS="--stages parity"
GPU_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-report:
	PYTHONPATH=.$(if $(PYTHONPATH),:$(PYTHONPATH)) $(GPU_PY) bench/gpu_report.py $(ARGS)

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
