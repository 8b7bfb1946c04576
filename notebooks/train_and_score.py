# Databricks notebook source
# MAGIC %md
# MAGIC # deepseg: train and score
# MAGIC On existing `users`, `events` and `survey_responses` tables: features -> survey segments ->
# MAGIC train a new model version -> score users (MERGE into `user_segments`) -> audiences.
# MAGIC Set `stages` to run a subset, e.g. `score,audiences` to score with the latest model.
# MAGIC
# MAGIC Locally: `python notebooks/train_and_score.py [--conf conf/local.yaml] [--stages ...]`
# MAGIC (or `DEEPSEG_CONF`, `DEEPSEG_STAGES`).

# COMMAND ----------

import argparse
import logging
import os
import sys
from pathlib import Path


def repo_root() -> Path:
    """The checkout holding conf/base.yaml (notebooks run with their own folder as cwd)."""
    here = Path.cwd()
    return next((p for p in (here, *here.parents) if (p / "conf" / "base.yaml").is_file()), here)


sys.path.insert(0, str(repo_root()))  # Databricks Repos: import deepseg from the checkout

_local = argparse.ArgumentParser()
for _name in ("conf", "stages", "root"):
    _local.add_argument(f"--{_name}")
_local_args = vars(_local.parse_known_args()[0])


def param(name: str, default: str) -> str:
    """A Databricks widget when dbutils exists, else --name, else $DEEPSEG_<NAME>, else default."""
    try:
        dbutils.widgets.text(name, default)  # noqa: F821 - provided by Databricks
        return dbutils.widgets.get(name)  # noqa: F821
    except NameError:
        return _local_args.get(name) or os.environ.get(f"DEEPSEG_{name.upper()}", default)


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
logging.getLogger("py4j").setLevel(logging.WARNING)

# COMMAND ----------

from deepseg import pipeline  # noqa: E402
from deepseg.config import load_config  # noqa: E402
from deepseg.spark.session import get_spark  # noqa: E402

STAGES = ("features", "survey", "train", "score", "audiences")
default_conf = "conf/databricks.yaml" if "DATABRICKS_RUNTIME_VERSION" in os.environ else "conf/local.yaml"
cfg = load_config(repo_root() / param("conf", default_conf),
                  {"data": {"root": param("root", "")}} if param("root", "") else None)
stages = [s.strip() for s in param("stages", ",".join(STAGES)).split(",") if s.strip()]
unknown = sorted(set(stages) - set(STAGES))
if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; choose from {STAGES}")
spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))

# COMMAND ----------

results = {}
for stage in STAGES:
    if stage in stages:
        with pipeline.timed(stage):
            results[stage] = getattr(pipeline, f"{stage}_job")(spark, cfg)

# COMMAND ----------

trained = results.get("train")
if trained is not None:
    print(f"model {trained.version} -> {trained.path}")
    for row in trained.model.history:
        print({k: row[k] for k in ("iteration", "agreement", "tsvm_objective", "class_shares")})
for stage in ("score", "audiences"):
    if stage in results:
        print(stage, results[stage])
