"""③–⑥ The train job: ``features`` labelled by ``survey_segments`` -> a new model version.

Training itself runs on Spark (:func:`deepseg.spark.backend.train_on_spark`); this module checks
its inputs, profiles the training population for drift (:mod:`deepseg.pipeline.drift`), saves
the version (:mod:`deepseg.pipeline.model_store`), profiles its segments
(:mod:`deepseg.pipeline.profiles`), writes its report (:mod:`deepseg.pipeline.report`) and logs
it to MLflow when mlflow is installed and has a destination (:mod:`deepseg.pipeline.tracking`).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import numpy as np

import deepseg.storage as storage
from deepseg.locations import join
from deepseg.pipeline import drift
from deepseg.pipeline.model_store import TrainedModel, save_trained
from deepseg.pipeline.profiles import write_profiles
from deepseg.pipeline.report import write_model_report
from deepseg.pipeline.runs import new_run_id, utcnow
from deepseg.pipeline.tables import last_commit, read_table
from deepseg.pipeline.tracking import configured_mlflow
from deepseg.pipeline.validate import InputError, check_features_table, check_labels, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from deepseg.config import Config

__all__ = ["train_job"]

log = logging.getLogger("deepseg")


def train_job(spark: "SparkSession", cfg: "Config", resume: bool = False) -> TrainedModel:
    """Train on ``features`` labelled by ``survey_segments``; save ``models/<version>/``, its
    segments' profiles (``segment_profiles``) and its report (``models/<version>/report.html``).

    The training state is checkpointed under ``models/_train_checkpoint/`` after every
    iteration; `resume` continues a killed run from there (same result as an uninterrupted run).
    """
    from pyspark.sql import functions as F

    from deepseg.core.checkpoint import Checkpoint
    from deepseg.spark.backend import train_on_spark
    from deepseg.spark.scoring import score_dataframe

    run_id, trained_at = new_run_id(), utcnow()
    version = f"{trained_at:%Y%m%dT%H%M%S}-{run_id[:6]}"
    features = read_table(spark, cfg, "features")
    names = last_commit(spark, cfg.data.table("features")).get("feature_names")
    if not names:
        raise InputError(f"{describe(cfg, 'features')}: its last commit records no "
                         f"feature_names (not written by the features job); rerun it")
    check_features_table(features, cfg, len(names))
    features = features.select("user_id", "features")
    labels = read_table(spark, cfg, "survey_segments")
    survey = last_commit(spark, cfg.data.table("survey_segments")).get("survey", {})
    n_classes, _ = check_labels(features, labels, cfg, survey.get("n_segments"))
    segment_names = cfg.segments.names
    if segment_names is not None and sorted(segment_names) != list(range(n_classes)):
        raise InputError(f"segments.names names segments {sorted(segment_names)} but the survey has "
                         f"{n_classes} segments (0..{n_classes - 1}): name each of them, or none")
    data = features.join(labels.select("user_id", F.col("segment").alias("label")), "user_id", "left")
    config = cfg.training.deepseg_config
    checkpoint = Checkpoint(join(cfg.data.models_path, "_train_checkpoint"), resume=resume)
    result = train_on_spark(data, features_col="features", label_col="label", n_classes=n_classes,
                            config=config, seed=cfg.training.seed,
                            tsvm_sample_size=cfg.training.tsvm_sample_size, checkpoint=checkpoint)

    bins = cfg.refresh.bins
    scored = score_dataframe(features, result, features_col="features", keep_columns=["user_id"]).persist()
    try:
        profile = {
            "features": drift.profile(features, "features", drift.quantile_edges(features, "features", bins)),
            "propensities": drift.profile(scored, "propensities", drift.uniform_edges(n_classes, bins)),
        }
        metadata = {
            "model_version": version, "run_id": run_id, "trained_at": trained_at.isoformat(),
            "n_classes": n_classes, "n_features": len(names), "feature_names": names,
            "survey": survey, "training": cfg.as_dict()["training"],
        }
        trained = save_trained(cfg, version, result, metadata, profile, config)
        write_profiles(spark, cfg, version, scored)
    finally:
        scored.unpersist()
    _log_to_mlflow(version, metadata, result.history, trained.path)
    write_model_report(spark, cfg, trained)  # into the version folder, and that MLflow run
    checkpoint.clear()  # the model is saved: nothing left to resume
    log.info("train: model %s (%d classes, %d features, %d iterations) -> %s",
             version, n_classes, len(names), len(result.history), trained.path)
    return trained


def _log_to_mlflow(version: str, metadata: dict, history: list[dict], model_dir: str) -> str | None:
    """Log parameters, per-iteration metrics and the model folder to MLflow, if it is installed and
    configured (:mod:`deepseg.pipeline.tracking`).

    The run goes wherever MLflow is configured (``MLFLOW_TRACKING_URI``, the Databricks
    workspace, ...); inside an active run it is a nested run. The model is already saved, so a
    tracking failure (no server; a store this mlflow cannot open: mlflow-skinny has no SQLite
    store, mlflow 3 refuses ``file:`` stores unless ``MLFLOW_ALLOW_FILE_STORE=true``) is a
    warning, not a failed job. Returns the MLflow run id, or None when nothing was logged.
    """
    mlflow = configured_mlflow("train")
    if mlflow is None:
        return None

    from deepseg.spark.persistence import MODEL_FILE

    def flat(prefix: str, value) -> dict:
        if isinstance(value, dict):
            return {k: v for key, sub in value.items() for k, v in flat(f"{prefix}.{key}", sub).items()}
        return {prefix: value}

    scalar = (int, float, np.integer, np.floating)
    try:
        # as configured (training.*) and as resolved for the fit (deepseg.*, every DeepSegConfig field)
        saved = json.loads(storage.read_text(join(model_dir, "model", MODEL_FILE))).get("config") or {}
        params = {**flat("training", metadata["training"]), **flat("deepseg", saved),
                  "n_classes": metadata["n_classes"], "n_features": metadata["n_features"]}
        with mlflow.start_run(run_name=version, nested=mlflow.active_run() is not None) as run:
            mlflow.set_tags({"model_version": version, "run_id": metadata["run_id"]})
            mlflow.log_params(params)
            for row in history:  # lists (class_shares, tsvm_cccp_rounds) stay in metrics.json
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "iteration"
                                    and isinstance(v, scalar) and not isinstance(v, bool)},
                                   step=int(row["iteration"]))
            with storage.local_copy(model_dir) as folder:
                mlflow.log_artifacts(str(folder), artifact_path="model")
    except Exception as e:  # noqa: BLE001 - any tracking failure; the model itself is saved
        log.warning("train: MLflow logging failed for model %s (%s: %.300s); the model is saved in %s",
                    version, type(e).__name__, e, model_dir)
        return None
    log.info("train: MLflow run %s (tracking %s)", run.info.run_id, mlflow.get_tracking_uri())
    return run.info.run_id
