# `make demo` sets everything up and runs the main job on the embedded default (local Spark + Delta);
# `make test` runs the test suite (what CI runs). Both install on first use only.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup demo test bench-accuracy bench-tsvm clean

$(VENV)/.installed: pyproject.toml scripts/install_jars.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) scripts/install_jars.py
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/deepseg demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench-accuracy: setup
	$(PY) -m benchmarks.accuracy

bench-tsvm: setup
	$(PY) -m benchmarks.tsvm_scaling

clean:
	rm -rf $(VENV) .jars deepseg-data
