"""spark-submit entry point: features + survey_segments -> a new model version under <root>/models/.

    spark-submit --jars "$(ls .jars/*.jar | paste -sd,)" jobs/train.py --conf conf/local.yaml

(On Databricks, a Python-script task with parameters ["--conf", "conf/databricks.yaml"]; the
runtime provides Delta, so no --jars.)
"""

import argparse
import logging

from deepseg.config import load_config
from deepseg.pipeline import train_job
from deepseg.spark.session import get_spark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", required=True, help="conf/<env>.yaml (merged onto conf/base.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(args.conf)
    spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
    trained = train_job(spark, cfg)
    print(trained.version, trained.path)


if __name__ == "__main__":
    main()
