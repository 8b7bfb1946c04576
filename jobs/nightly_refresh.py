"""spark-submit entry point: score new/changed users; retrain on drift or schedule; audiences.

    .venv/bin/spark-submit jobs/nightly_refresh.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg refresh` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["refresh", *sys.argv[1:]]))
