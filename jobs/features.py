"""spark-submit entry point: users + events -> the features table (and its fitted feature pipeline).

    .venv/bin/spark-submit jobs/features.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg features` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["features", *sys.argv[1:]]))
