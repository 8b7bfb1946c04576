"""spark-submit entry point: what each segment is (sizes, defining answers and attributes) -> segment_profiles.

    .venv/bin/spark-submit jobs/profiles.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg profiles` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["profiles", *sys.argv[1:]]))
