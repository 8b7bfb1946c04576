"""spark-submit entry point: score new/changed users with the latest model -> user_segments (MERGE).

    .venv/bin/spark-submit jobs/score.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg score` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["score", *sys.argv[1:]]))
