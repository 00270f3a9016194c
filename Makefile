# `make demo` runs the main job; `make test` runs the whole test suite.
# Both create .venv and install requirements.txt into it when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Nothing ever waits on a network: models come from the local cache or are built offline.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: demo test install clean-runs

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nbtools.demo

test: $(STAMP)
	bash scripts/install_browser.sh
	$(PY) -m pytest

clean-runs:
	rm -rf runs/
