"""spark-submit entry point: features + survey_segments -> a new model version under <root>/models/.

    .venv/bin/spark-submit jobs/train.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg train` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["train", *sys.argv[1:]]))
