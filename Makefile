# The same targets for people and CI. Each creates .venv and installs into it when needed.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
P2P     := $(VENV)/bin/proto2prod
# torch: users on GPUs bring their own CUDA build; this is the CPU build (on disk here).
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

demo: $(STAMP)
	$(P2P) demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(P2P) bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pip-audit --skip-editable --progress-spinner off

clean:
	rm -rf $(VENV) .proto2prod .pytest_cache .ruff_cache
