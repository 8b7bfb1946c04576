"""spark-submit entry point: survey invitations; survey answers -> survey_segments.

    .venv/bin/spark-submit jobs/survey.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import sys

from deepseg.cli import main

if __name__ == "__main__":
    # the `deepseg survey` command: --conf, Spark session, one pipeline call, JSON result
    sys.exit(main(["survey", *sys.argv[1:]]))
