# Two entry points on a fresh machine: `make demo` and `make test`.
# Each builds its own virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test data lint gradcheck bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[fast]'
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The main job: train the `small` preset (charlstm/presets/small.toml, the recipe found
# for 5 minutes) on DATA for DEMO_MINUTES on this machine's CPU, then print its
# validation loss and a sample. DATA is a text file or a corpus name (default
# tinyshakespeare: from $CHARLSTM_DATA_DIR, else the user cache, else downloaded and
# checksummed). THREADS sets the worker threads (default: every core this process may
# use). Re-running replaces runs/demo. Example: make demo DATA=my.txt THREADS=2
DEMO_MINUTES ?= 5
DEMO_RUN ?= runs/demo
DATA ?= tinyshakespeare
THREADS ?=
THREADS_FLAG = $(if $(THREADS),--threads $(THREADS))
# One BLAS thread unless told otherwise: our matrices are small (B = 32 rows per step),
# and on a 2-core machine with anything else running, OpenBLAS's second thread made
# training 5-10x slower (spinning threads fighting for the cores), never faster.
OPENBLAS_NUM_THREADS ?= 1
demo: export OPENBLAS_NUM_THREADS := $(OPENBLAS_NUM_THREADS)

demo: $(VENV)/.base
	$(VENV)/bin/charlstm train --preset small --data "$(DATA)" --time-budget $(DEMO_MINUTES) \
	  --out $(DEMO_RUN) --force $(THREADS_FLAG)
	@echo; echo "--- validation loss (charlstm eval $(DEMO_RUN): its best checkpoint) ---"
	@$(VENV)/bin/charlstm eval $(DEMO_RUN) $(THREADS_FLAG)
	@echo; echo "--- a sample (charlstm sample $(DEMO_RUN) --prime ROMEO: --temperature 0.8) ---"
	@$(VENV)/bin/charlstm sample $(DEMO_RUN) --prime "ROMEO:" --length 600 --temperature 0.8 \
	  --seed 1 --unknown skip $(THREADS_FLAG)
	@echo

# Tiny Shakespeare into the user cache (downloaded once, SHA-256 checked), where
# `--data tinyshakespeare` and the tests that need the real corpus find it offline.
data: $(VENV)/.base
	$(VENV)/bin/charlstm fetch tinyshakespeare

gradcheck: $(VENV)/.base
	$(VENV)/bin/charlstm gradcheck

test: $(VENV)/.test
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
