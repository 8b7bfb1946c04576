# `make demo` sets everything up and runs the main job on the embedded default (local Spark + Delta);
# `make test` runs the test suite (what CI runs). Both install on first use only.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup demo test bench-accuracy bench-tsvm bench-scale clean

# install_jars.py: Delta's jars into .jars/, and the venv's Spark conf (spark-defaults.conf,
# spark-env.sh) so that a bare `.venv/bin/spark-submit jobs/<stage>.py --conf conf/local.yaml` works.
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

# Scale benchmark (issues 3, 5): N users x 64 features in Delta, train (6 iterations) + score on
# Spark local[2], per-stage rows/s against floors measured in the same run. Data under /tmp/deepseg-scale.
# --epoch-rows 500000 = conf/cluster.yaml's training.unlabeled_rows_per_epoch. 1M and 10M (~40 min):
#   make bench-scale SCALE_ARGS="--users 1000000 10000000 --epoch-rows 500000 --survey-size 10000"
SCALE_ARGS ?= --users 100000 1000000 --epoch-rows 500000
bench-scale: setup
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.scale $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .jars deepseg-data
