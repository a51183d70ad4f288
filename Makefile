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
# for 5 minutes) on Tiny Shakespeare for DEMO_MINUTES on this machine's CPU, then print
# its validation loss and a sample. The corpus comes from
# $CHARLSTM_DATA_DIR, else ../shared/data when it exists (our machines), else the
# user cache, else it is downloaded and checksummed. Re-running replaces runs/demo.
DEMO_MINUTES ?= 5
DEMO_RUN ?= runs/demo
# One BLAS thread unless told otherwise: our matrices are small (B = 32 rows per step),
# and on a 2-core machine with anything else running, OpenBLAS's second thread made
# training 5-10x slower (spinning threads fighting for the cores), never faster.
OPENBLAS_NUM_THREADS ?= 1
demo: export OPENBLAS_NUM_THREADS := $(OPENBLAS_NUM_THREADS)
# (The same corpus lookup serves `make test`: tests needing the real text skip, saying
# so, when it is in none of these places; `make data` puts it in the cache.)
ifeq ($(CHARLSTM_DATA_DIR),)
ifneq ($(wildcard ../shared/data/tinyshakespeare.txt),)
export CHARLSTM_DATA_DIR := $(abspath ../shared/data)
endif
endif

demo: $(VENV)/.base
	$(VENV)/bin/charlstm train --preset small --data tinyshakespeare --time-budget $(DEMO_MINUTES) \
	  --out $(DEMO_RUN) --force
	@echo; echo "--- validation loss (charlstm eval $(DEMO_RUN): its best checkpoint) ---"
	@$(VENV)/bin/charlstm eval $(DEMO_RUN)
	@echo; echo "--- a sample (charlstm sample $(DEMO_RUN) --prime ROMEO: --temperature 0.8) ---"
	@$(VENV)/bin/charlstm sample $(DEMO_RUN) --prime "ROMEO:" --length 600 --temperature 0.8 \
	  --seed 1
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
