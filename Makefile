# medrepro: the two commands of the README.
#   make train   install into .venv (first time) and run `python train.py` (ARGS="..." adds overrides)
#   make test    install with test dependencies (first time) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# free disk the first installation needs (PyTorch with its CUDA libraries: about 7 GB)
NEED_KB ?= 7000000

.PHONY: train test install install-dev clean-outputs

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(ARGS)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || { free=$$(df -Pk $(VENV) 2>/dev/null | awk 'NR==2 {print $$4}'); \
	  case "$$free" in ''|*[!0-9]*) ;; *) [ "$$free" -ge $(NEED_KB) ] || { \
	  echo "Installing needs about $$(( $(NEED_KB) / 1000000 )) GB of free disk where $(VENV) is (PyTorch and its CUDA libraries) and $$(( free / 1000000 )) GB are free: free some space, or set VENV to a folder on another disk, and run make again." >&2; exit 1; } ;; esac; }
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

clean-outputs:
	rm -rf outputs/*/ data/demo
