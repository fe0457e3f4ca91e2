# medrepro: the two commands of the README.
#   make train   install into .venv (first time) and run `python train.py` (ARGS="..." adds overrides)
#   make test    install with test dependencies (first time) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test install install-dev clean-outputs

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(ARGS)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

clean-outputs:
	rm -rf outputs/*/ data/demo
