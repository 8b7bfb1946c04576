# Databricks notebook source
# MAGIC %md
# MAGIC # deepseg quickstart
# MAGIC Synthetic users -> Delta tables -> features -> survey segments -> Deep Segmentation model ->
# MAGIC user segments -> audiences, then accuracy against the generator's ground truth.
# MAGIC
# MAGIC Parameters are widgets on Databricks; locally run
# MAGIC `python notebooks/quickstart.py [--users 20000] [--conf conf/local.yaml] [--root DIR]`
# MAGIC (or set `DEEPSEG_USERS`, `DEEPSEG_CONF`, `DEEPSEG_ROOT`).

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
for _name in ("users", "conf", "root"):
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

from deepseg.config import load_config  # noqa: E402
from deepseg.demo import evaluate, generate_tables  # noqa: E402
from deepseg.pipeline import audiences_job, features_job, score_job, survey_job, train_job  # noqa: E402
from deepseg.spark.session import get_spark  # noqa: E402

default_conf = "conf/databricks.yaml" if "DATABRICKS_RUNTIME_VERSION" in os.environ else "conf/local.yaml"
conf_path = repo_root() / param("conf", default_conf)
users = int(param("users", "20000"))
root = param("root", "")
cfg = load_config(conf_path, {"data": {"root": root}} if root else None)
spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
print(f"{users} synthetic users under {cfg.data.root} ({', '.join(cfg.sources)})")

# COMMAND ----------

# MAGIC %md ## 1. Synthetic inputs: users, events, survey_responses (+ segments_truth)

# COMMAND ----------

tables = generate_tables(spark, cfg, users)
tables

# COMMAND ----------

# MAGIC %md ## 2. Features, survey segments, model

# COMMAND ----------

features_job(spark, cfg)
survey = survey_job(spark, cfg)
print(f"survey: {survey.method} chose {survey.n_segments} segments by {survey.criterion}: {survey.scores}")
trained = train_job(spark, cfg)
for row in trained.model.history:
    print({k: row[k] for k in ("iteration", "agreement", "tsvm_objective", "class_shares")})

# COMMAND ----------

# MAGIC %md ## 3. Score every user, build audiences

# COMMAND ----------

print(score_job(spark, cfg, trained=trained))
print(audiences_job(spark, cfg))

# COMMAND ----------

# MAGIC %md ## 4. Accuracy against the ground truth (clusters matched by the Hungarian method)

# COMMAND ----------

metrics = evaluate(spark, cfg, trained)
for key in ("survey_accuracy", "deepseg_accuracy", "supervised_accuracy"):
    print(f"{key:<22} {metrics[key]:.3f}")
