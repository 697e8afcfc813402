# The same targets for people and CI. Each creates .venv and installs into it what it needs.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
P2P     := $(VENV)/bin/proto2prod
# torch: users on GPUs bring their own CUDA build; this is the CPU build (on disk here).
TORCH   ?= torch==2.13.0

.PHONY: demo test lint typecheck audit bench gpu-card clean

# The venv with torch in it, installed first so that no extra pulls in another build.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	touch $@

# The demo needs the UI and the service only.
$(VENV)/.demo: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e '.[ui,serve]'
	touch $@

# Tests, lint and the benchmark need everything.
$(VENV)/.all: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(P2P) demo $(DEMO_ARGS)

test: $(VENV)/.all
	$(PY) -m pytest

bench: $(VENV)/.all
	$(P2P) bench $(BENCH_ARGS)

# The GPU run card, on a machine with an NVIDIA GPU (PyPI's Linux torch wheels carry CUDA):
# heavy at batch 1 vs batched, the service vs the limit, float32 vs float16, textgen streams -> docs/benchmarks/gpu.md
gpu-card: $(VENV)/.all
	$(P2P) bench --device cuda --models heavy,textgen --out docs/benchmarks

lint: $(VENV)/.all
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	$(MAKE) --no-print-directory typecheck

# mypy once more, on the package as it is installed (proto2prod.registry is registry/, ...),
# through a tree of links: the editable install's import hook is invisible to mypy, which
# would otherwise see every cross-part import as a missing module (Any).
typecheck: $(VENV)/.all
	rm -rf .typecheck && mkdir -p .typecheck/proto2prod
	for f in proto2prod/*; do ln -s "$(CURDIR)/$$f" .typecheck/proto2prod/; done
	for d in registry service prototype benchmarks examples; do \
		ln -s "$(CURDIR)/$$d" .typecheck/proto2prod/$$d; done
	cd .typecheck && $(CURDIR)/$(PY) -m mypy --config-file $(CURDIR)/pyproject.toml -p proto2prod

# Known vulnerabilities in the installed dependencies (asks pypi.org; --strict: a package it
# cannot look up fails the audit instead of passing unaudited).
audit: $(VENV)/.all
	$(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off

clean:
	rm -rf $(VENV) .proto2prod .pytest_cache .ruff_cache
