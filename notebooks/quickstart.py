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

import os
import sys

sys.path.append(os.path.dirname(os.getcwd()))  # the checkout, for Databricks Repos before DBR 11

from deepseg.demo import demo_settings_path, evaluate, generate_tables, load_demo_settings  # noqa: E402
from deepseg.notebook import notebook_params, notebook_session, repo_root  # noqa: E402
from deepseg.pipeline import audiences_job, features_job, score_job, survey_job, train_job  # noqa: E402

params = notebook_params({"users": "20000"}, dbutils=globals().get("dbutils"))
cfg, spark = notebook_session(params)
users = int(params["users"])
settings = load_demo_settings(demo_settings_path(repo_root() / params["conf"]))
print(f"{users} synthetic users under {cfg.data.root} ({', '.join(cfg.sources)})")

# COMMAND ----------

# MAGIC %md ## 1. Synthetic inputs: users, events, survey_responses (+ segments_truth)

# COMMAND ----------

tables = generate_tables(spark, cfg, settings, users)
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

metrics = evaluate(spark, cfg, trained, settings)
for key in ("survey_accuracy", "deepseg_accuracy", "supervised_accuracy"):
    print(f"{key:<22} {metrics[key]:.3f}")
