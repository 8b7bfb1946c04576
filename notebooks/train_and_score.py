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

import os
import sys

sys.path.append(os.path.dirname(os.getcwd()))  # the checkout, for Databricks Repos before DBR 11

from deepseg import pipeline  # noqa: E402
from deepseg.notebook import notebook_params, notebook_session  # noqa: E402

STAGES = ("features", "survey", "train", "score", "audiences")
params = notebook_params({"stages": ",".join(STAGES)}, dbutils=globals().get("dbutils"))
stages = [s.strip() for s in params["stages"].split(",") if s.strip()]
unknown = sorted(set(stages) - set(STAGES))
if unknown:
    raise ValueError(f"unknown stage(s) {unknown}; choose from {STAGES}")
cfg, spark = notebook_session(params)

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
