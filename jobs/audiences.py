"""spark-submit entry point: user_segments -> audiences table + CSV export.

    .venv/bin/spark-submit jobs/audiences.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg audiences` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["audiences", *sys.argv[1:]]))
