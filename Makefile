# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/digits_demo

.PHONY: install demo test test-all test-slow lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install --quiet -e ".[cpu,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --workdir $(RUN_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check msdnet_tf gradcam_tf scripts configs tests benchmarks setup.py
	$(VENV)/bin/ruff format --check msdnet_tf gradcam_tf scripts configs tests benchmarks setup.py

format: $(STAMP)
	$(VENV)/bin/ruff format msdnet_tf gradcam_tf scripts configs tests benchmarks
	$(VENV)/bin/ruff check --fix msdnet_tf gradcam_tf scripts configs tests benchmarks

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "slow or not slow" tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
