"""The pipeline's jobs: read Delta tables, call the stage functions, write one table each.

Every entry point -- ``deepseg <stage>``, ``jobs/<stage>.py`` under spark-submit, the
notebooks -- is one call of a function here, taking a SparkSession and a :class:`Config`:

==================  ==========================================  ===============================
job                 reads                                       writes
==================  ==========================================  ===============================
features_job        users, events                               features (+ its fitted pipeline)
survey_job          users, survey_responses                     survey_invitations, survey_segments
train_job           features, survey_segments                   models/<version>/
score_job           users, events, model                        user_segments (MERGE)
audiences_job       user_segments                               audiences (+ CSV export)
refresh_job         users, events, user_segments, model         user_segments, audiences (+ retrain)
==================  ==========================================  ===============================

A model version directory holds ``model/`` (:mod:`deepseg.spark.persistence`),
``feature_pipeline/`` (the Spark ML pipeline that made its training features, reapplied at
scoring), ``config.yaml`` (the resolved configuration), ``profile.json`` (reference
distributions for drift) and ``metrics.json`` (written last: a version without it is
incomplete and ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import logging
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from deepseg import refresh, validate
from deepseg.audiences import build_audiences, export_csv, export_stamp
from deepseg.config import Config, config_to_dict
from deepseg.features import (
    aggregate_users,
    feature_names,
    fit_feature_pipeline,
    transform_features,
    with_feature_hash,
)
from deepseg.scoring import rows_to_score, score_users, stale_users
from deepseg.survey import SurveySegmentation, segment_answers, select_invitations
from deepseg.tables import (
    last_commit,
    merge_segments,
    read_table,
    retry_on_conflict,
    same_rows,
    table_exists,
    write_table,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "TrainedModel",
    "audiences_job",
    "current_features",
    "features_job",
    "load_trained",
    "model_versions",
    "new_run_id",
    "refresh_job",
    "score_job",
    "survey_job",
    "timed",
    "train_job",
]

log = logging.getLogger("deepseg")


# ------------------------------------------------------------------ helpers
def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def utcnow() -> datetime:
    """Naive UTC now (Spark timestamps are stored as UTC instants)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@contextlib.contextmanager
def timed(stage: str, seconds: dict | None = None):
    """Log one line per stage with its wall-clock seconds (also stored in `seconds[stage]`)."""
    start = time.perf_counter()
    log.info("%s ...", stage)
    yield
    elapsed = time.perf_counter() - start
    if seconds is not None:
        seconds[stage] = elapsed
    log.info("%s: %.1fs", stage, elapsed)


def _meta(job: str, run_id: str, **extra) -> dict:
    return {"job": job, "run_id": run_id, **extra}


def feature_pipeline_path(cfg: Config) -> str:
    """Where the features job leaves the pipeline that made the ``features`` table."""
    return cfg.data.table_path("features") + "_pipeline"


def current_features(spark: "SparkSession", cfg: Config, pipeline: "PipelineModel") -> "DataFrame":
    """``user_id, features, feature_hash`` of today's users and events through `pipeline`."""
    users, events = read_table(spark, cfg, "users"), read_table(spark, cfg, "events")
    return with_feature_hash(transform_features(pipeline, aggregate_users(users, events, cfg.features)))


# ------------------------------------------------------------------ features
def features_job(spark: "SparkSession", cfg: Config) -> dict:
    """Fit the feature pipeline on today's users and write the ``features`` table with it."""
    run_id = new_run_id()
    users, events = read_table(spark, cfg, "users"), read_table(spark, cfg, "events")
    imputed = validate.check_feature_inputs(users, events, cfg)  # before anything is written
    rows = aggregate_users(users, events, cfg.features).persist()
    try:
        pipeline = fit_feature_pipeline(rows, cfg.features)
        pipeline.write().overwrite().save(feature_pipeline_path(cfg))
        names = feature_names(pipeline)
        path = cfg.data.table_path("features")
        write_table(with_feature_hash(transform_features(pipeline, rows)), path,
                    _meta("features", run_id, feature_names=names))
    finally:
        rows.unpersist()
    log.info("features: %d per user -> %s", len(names), path)
    return {"run_id": run_id, "table": path, "n_features": len(names), "pipeline": feature_pipeline_path(cfg),
            "imputed": imputed}


# ------------------------------------------------------------------ survey
def survey_job(spark: "SparkSession", cfg: Config) -> SurveySegmentation:
    """Invite the next survey wave and segment the answers received."""
    from pyspark.sql import functions as F

    run_id, s = new_run_id(), cfg.survey
    users, responses = read_table(spark, cfg, "users"), read_table(spark, cfg, "survey_responses")
    validate.check_survey_inputs(users, responses, cfg)
    # Segment first: a survey that cannot be segmented leaves both output tables unchanged.
    segments, info = segment_answers(responses, s.method, s.n_segments, s.k_range, s.seed, s.max_iter,
                                     s.questions, s.n_init)
    if info.n_segments < 2:
        raise validate.InputError(f"{validate.describe(cfg, 'survey_responses')}: the answers form "
                                  f"{info.n_segments} segment(s), sizes {info.sizes}; need at least 2")
    invitations = select_invitations(users, s.invitations, s.sampling, s.strata, s.seed, exclude=responses)
    write_table(invitations.withColumns({"invited_at": F.current_timestamp(), "run_id": F.lit(run_id)}),
                cfg.data.table_path("survey_invitations"), _meta("survey", run_id))
    write_table(segments.withColumn("run_id", F.lit(run_id)), cfg.data.table_path("survey_segments"),
                _meta("survey", run_id, survey=dataclasses.asdict(info)))
    log.info("survey: %s chose %d segments (%s %s), sizes %s", info.method, info.n_segments,
             info.criterion, {k: round(v, 4) for k, v in info.scores.items()}, info.sizes)
    return info


# ------------------------------------------------------------------ train
@dataclasses.dataclass
class TrainedModel:
    """One model version: the fitted model, its metadata and drift profile, its feature pipeline."""

    version: str
    path: str
    model: Any  # deepseg.core.loop.DeepSegResult
    metadata: dict
    profile: dict

    @functools.cached_property
    def pipeline(self) -> "PipelineModel":
        """The feature pipeline the model was trained behind (loaded on first use)."""
        from pyspark.ml import PipelineModel

        return PipelineModel.load(str(Path(self.path) / "feature_pipeline"))

    @property
    def trained_at(self) -> datetime:
        return datetime.fromisoformat(self.metadata["trained_at"])


def train_job(spark: "SparkSession", cfg: Config, resume: bool = False) -> TrainedModel:
    """Train on ``features`` labelled by ``survey_segments``; save ``models/<version>/``.

    The training state is checkpointed under ``models/_train_checkpoint/`` after every
    iteration; `resume` continues a killed run from there (same result as an uninterrupted run).
    """
    from pyspark.sql import functions as F

    from deepseg.spark.backend import score_dataframe, train_on_spark
    from deepseg.core.checkpoint import Checkpoint
    from deepseg.spark.persistence import save_model

    run_id, trained_at = new_run_id(), utcnow()
    version = f"{trained_at:%Y%m%dT%H%M%S}-{run_id[:6]}"
    features = read_table(spark, cfg, "features")
    names = last_commit(spark, cfg.data.table_path("features")).get("feature_names")
    if not names:
        raise validate.InputError(f"{validate.describe(cfg, 'features')}: its last commit records no "
                                  f"feature_names (not written by the features job); rerun it")
    validate.check_features_table(features, cfg, len(names))
    features = features.select("user_id", "features")
    labels = read_table(spark, cfg, "survey_segments")
    survey = last_commit(spark, cfg.data.table_path("survey_segments")).get("survey", {})
    n_classes, _ = validate.check_labels(features, labels, cfg, survey.get("n_segments"))
    data = features.join(labels.select("user_id", F.col("segment").alias("label")), "user_id", "left")
    config = cfg.training.deepseg_config
    checkpoint = Checkpoint(Path(cfg.data.models_path) / "_train_checkpoint", resume=resume)
    result = train_on_spark(data, features_col="features", label_col="label", n_classes=n_classes,
                            config=config, seed=cfg.training.seed,
                            tsvm_sample_size=cfg.training.tsvm_sample_size, checkpoint=checkpoint)

    bins = cfg.refresh.bins
    scored = score_dataframe(features, result, features_col="features")
    profile = {
        "features": refresh.profile(features, "features", refresh.quantile_edges(features, "features", bins)),
        "propensities": refresh.profile(scored, "propensities", refresh.uniform_edges(n_classes, bins)),
    }
    metadata = {
        "model_version": version, "run_id": run_id, "trained_at": trained_at.isoformat(),
        "n_classes": n_classes, "n_features": len(names), "feature_names": names,
        "survey": survey, "training": config_to_dict(cfg)["training"],
    }
    model_dir = Path(cfg.data.models_path) / version
    model_dir.mkdir(parents=True, exist_ok=False)
    save_model(result, str(model_dir / "model"), metadata, config=config)
    shutil.copytree(feature_pipeline_path(cfg), model_dir / "feature_pipeline")
    (model_dir / "config.yaml").write_text(yaml.safe_dump(redacted(config_to_dict(cfg)), sort_keys=False))
    (model_dir / "profile.json").write_text(json.dumps(profile))
    metrics = {**metadata, "history": result.history}
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json_default))
    _log_to_mlflow(version, metadata, result.history, model_dir)
    checkpoint.clear()  # the model is saved: nothing left to resume
    log.info("train: model %s (%d classes, %d features, %d iterations) -> %s",
             version, n_classes, len(names), len(result.history), model_dir)
    return TrainedModel(version, str(model_dir), result, metadata, profile)


_SECRET = re.compile(r"secret|password|passwd|token|credential|key", re.IGNORECASE)


def redacted(config: dict) -> dict:
    """`config` with the values of secret-looking Spark settings (account keys, tokens) masked:
    the model directory and MLflow keep the configuration, never credentials."""
    spark = dict(config.get("spark") or {})
    spark["conf"] = {k: "<redacted>" if _SECRET.search(k) else v for k, v in (spark.get("conf") or {}).items()}
    return {**config, "spark": spark}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _log_to_mlflow(version: str, metadata: dict, history: list[dict], model_dir: Path) -> str | None:
    """Log parameters, per-iteration metrics and the model folder to MLflow, if it is installed.

    The run goes wherever MLflow is configured (``MLFLOW_TRACKING_URI``, the Databricks
    workspace, ...); inside an active run it is a nested run. The model is already saved, so a
    tracking failure (no server; a store this mlflow cannot open: mlflow-skinny has no SQLite
    store, mlflow 3 refuses ``file:`` stores unless ``MLFLOW_ALLOW_FILE_STORE=true``) is a
    warning, not a failed job. Returns the MLflow run id, or None when nothing was logged.
    """
    if importlib.util.find_spec("mlflow") is None:
        return None
    import mlflow

    from deepseg.spark.persistence import MODEL_FILE

    def flat(prefix: str, value) -> dict:
        if isinstance(value, dict):
            return {k: v for key, sub in value.items() for k, v in flat(f"{prefix}.{key}", sub).items()}
        return {prefix: value}

    scalar = (int, float, np.integer, np.floating)
    try:
        # as configured (training.*) and as resolved for the fit (deepseg.*, every DeepSegConfig field)
        saved = json.loads((model_dir / "model" / MODEL_FILE).read_text()).get("config") or {}
        params = {**flat("training", metadata["training"]), **flat("deepseg", saved),
                  "n_classes": metadata["n_classes"], "n_features": metadata["n_features"]}
        with mlflow.start_run(run_name=version, nested=mlflow.active_run() is not None) as run:
            mlflow.set_tags({"model_version": version, "run_id": metadata["run_id"]})
            mlflow.log_params(params)
            for row in history:  # lists (class_shares, tsvm_cccp_rounds) stay in metrics.json
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "iteration"
                                    and isinstance(v, scalar) and not isinstance(v, bool)},
                                   step=int(row["iteration"]))
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
    except Exception as e:  # noqa: BLE001 - any tracking failure; the model itself is saved
        log.warning("train: MLflow logging failed for model %s (%s: %.300s); the model is saved in %s",
                    version, type(e).__name__, e, model_dir)
        return None
    log.info("train: MLflow run %s (tracking %s)", run.info.run_id, mlflow.get_tracking_uri())
    return run.info.run_id


def model_versions(cfg: Config) -> list[str]:
    """Complete model versions under ``data.models``, oldest first."""
    root = Path(cfg.data.models_path)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "metrics.json").is_file())


def load_trained(cfg: Config, version: str | None = None) -> TrainedModel:
    """Model `version` (default: the latest) with its pipeline, metadata and drift profile."""
    from deepseg.spark.persistence import load_model

    versions = model_versions(cfg)
    if not versions:
        raise FileNotFoundError(f"no trained model under {cfg.data.models_path}: run the train job first")
    version = version or versions[-1]
    if version not in versions:
        raise FileNotFoundError(f"model version {version!r} not under {cfg.data.models_path}; "
                                f"versions: {versions}")
    model_dir = Path(cfg.data.models_path) / version
    where = f"model {version!r} ({model_dir})"
    missing = [p for p in ("model", "feature_pipeline", "profile.json") if not (model_dir / p).exists()]
    if missing:
        raise validate.InputError(f"{where} is incomplete: {missing} missing; retrain")
    try:  # another format version, a foreign or tampered file (never unpickled)
        model, metadata = load_model(str(model_dir / "model"))
    except (ValueError, KeyError) as e:
        raise validate.InputError(f"{where} cannot be loaded: {e}") from None
    validate.check_model_features(metadata, cfg.features, model.n_features, where)
    profile = json.loads((model_dir / "profile.json").read_text())
    return TrainedModel(version, str(model_dir), model, metadata, profile)


# ------------------------------------------------------------------ score
def score_job(spark: "SparkSession", cfg: Config, only_changed: bool | None = None,
              trained: TrainedModel | None = None) -> dict:
    """Score users with the configured model into ``user_segments`` (one MERGE on user_id).

    `only_changed` (default ``scoring.only_changed``) scores only users that are new, whose
    features changed, or that another model version scored; False rescores everyone.
    """
    trained = trained or load_trained(cfg, cfg.scoring.model_version)
    validate.check_feature_inputs(read_table(spark, cfg, "users"), read_table(spark, cfg, "events"), cfg)
    return _score(spark, cfg, trained, current_features(spark, cfg, trained.pipeline), only_changed)


def _score(spark, cfg: Config, trained: TrainedModel, features: "DataFrame", only_changed: bool | None) -> dict:
    """Score `features` (today's users) into ``user_segments`` in one MERGE commit that also
    deletes the rows of users no longer in ``users``; nothing is committed when nothing changed.
    A commit that loses to a concurrent run is redone on the winner's version."""
    run_id = new_run_id()
    path = cfg.data.table_path("user_segments")
    only_changed = cfg.scoring.only_changed if only_changed is None else only_changed
    meta = _meta("score", run_id, model_version=trained.version)

    def attempt(i: int) -> tuple[int, int, int]:
        todo, stale = features, None
        if table_exists(spark, path):  # read afresh on every attempt: a retry sees the winner's rows
            current = read_table(spark, cfg, "user_segments")
            if only_changed:
                todo = rows_to_score(features, current, trained.version)
            stale = stale_users(current, read_table(spark, cfg, "users")).persist()
        todo = todo.persist()
        try:
            n, n_stale = todo.count(), 0 if stale is None else stale.count()
            if n or n_stale:
                log.info("score: merging %d scored users, deleting %d rows of deleted users -> %s",
                         n, n_stale, path)
                rows = score_users(todo, trained.model, model_version=trained.version, run_id=run_id)
                merge_segments(spark, rows, path, keys=("user_id",), metadata=meta,
                               delete=stale if n_stale else None)
        finally:
            todo.unpersist()
            if stale is not None:
                stale.unpersist()
        return n, n_stale, i

    n, n_stale, retries = retry_on_conflict(attempt, f"score into {path}")
    log.info("score: %d users scored by model %s, %d rows of deleted users removed -> %s",
             n, trained.version, n_stale, path)
    return {"run_id": run_id, "model_version": trained.version, "scored": n, "deleted": n_stale,
            "retries": retries, "table": path}


# ------------------------------------------------------------------ audiences
def audiences_job(spark: "SparkSession", cfg: Config) -> dict:
    """Write the ``audiences`` table from ``user_segments`` and export it as CSV.

    Audiences equal to the table's (``run_id`` and ``created_at`` aside) are not rewritten: a
    rerun commits nothing. The CSV export is redone whenever it is not of the table's latest
    version (its ``_deepseg_export.json`` says which).
    """
    run_id, a = new_run_id(), cfg.audiences
    path = cfg.data.table_path("audiences")
    export_dir = str(Path(cfg.data.root) / a.export_dir)

    def attempt(i: int) -> bool:
        audiences = build_audiences(read_table(spark, cfg, "user_segments"), top_k=a.top_k,
                                    threshold=a.threshold, content=a.content,
                                    default_content=a.default_content, run_id=run_id).persist()
        try:
            if table_exists(spark, path) and same_rows(audiences, read_table(spark, cfg, "audiences"),
                                                       ignore=("run_id", "created_at")):
                return False
            write_table(audiences, path, _meta("audiences", run_id))
            return True
        finally:
            audiences.unpersist()

    changed = retry_on_conflict(attempt, f"audiences into {path}")
    commit = last_commit(spark, path)
    version = commit["version"]
    written = spark.read.format("delta").option("versionAsOf", version).load(path)
    stamp = {"table": path, "version": version, "committed_at": str(commit["timestamp"])}
    if export_stamp(export_dir) != stamp:
        export_csv(written, export_dir, stamp=stamp)
    sizes = {r.segment: r["count"] for r in written.groupBy("segment").count().collect()}
    log.info("audiences: %s users per segment -> %s (%s), %s", dict(sorted(sizes.items())), path,
             f"version {version}" if changed else f"unchanged at version {version}", export_dir)
    return {"run_id": run_id, "table": path, "version": version, "changed": changed,
            "export_dir": export_dir, "sizes": dict(sorted(sizes.items()))}


# ------------------------------------------------------------------ refresh
def refresh_job(spark: "SparkSession", cfg: Config, now: datetime | None = None) -> dict:
    """Nightly: score new and changed users; retrain (features -> train -> score all) when the
    features or the propensities drifted past ``refresh.drift_threshold`` (population stability
    index against the model's training population) or the model is due; then audiences.

    Rows of users deleted from ``users`` leave ``user_segments`` in the scoring commit. A rerun
    for the same day commits nothing (nothing new to score, audiences unchanged); a run that
    loses a commit to a concurrent one redoes it on the winner's version (see ``_score``).
    """
    now, r = now or utcnow(), cfg.refresh
    validate.check_feature_inputs(read_table(spark, cfg, "users"), read_table(spark, cfg, "events"), cfg)
    trained = load_trained(cfg, cfg.scoring.model_version)
    ref = trained.profile
    features = current_features(spark, cfg, trained.pipeline).persist()
    try:
        feature_psi = refresh.population_stability_index(
            ref["features"]["shares"], refresh.binned_shares(features, "features", ref["features"]["edges"]))
        reasons = [refresh.drift_reason("feature", feature_psi, r.drift_threshold,
                                        trained.metadata.get("feature_names")),
                   refresh.schedule_reason(trained.trained_at, now, r.retrain_every_days)]
        propensity_psi = None
        if not any(reasons):
            scored = _score(spark, cfg, trained, features, only_changed=True)
            segments = read_table(spark, cfg, "user_segments")
            propensity_psi = refresh.population_stability_index(
                ref["propensities"]["shares"],
                refresh.binned_shares(segments.filter(segments.model_version == trained.version),
                                      "propensities", ref["propensities"]["edges"]))
            reasons.append(refresh.drift_reason("propensity", propensity_psi, r.drift_threshold,
                                                [f"segment {i}" for i in range(len(propensity_psi))]))
    finally:
        features.unpersist()
    reasons = [reason for reason in reasons if reason]
    out = {"model_version": trained.version, "max_feature_psi": float(feature_psi.max()),
           "max_propensity_psi": None if propensity_psi is None else float(propensity_psi.max()),
           "retrain_reasons": reasons}
    if reasons:
        log.info("refresh: retraining (%s)", "; ".join(reasons))
        features_job(spark, cfg)
        new_model = train_job(spark, cfg)
        scored = score_job(spark, cfg, only_changed=False, trained=new_model)
        out["model_version"] = new_model.version
    out.update(scored=scored["scored"], deleted=scored["deleted"], retries=scored["retries"])
    out["audiences"] = audiences_job(spark, cfg)["sizes"]
    log.info("refresh: %s", out)
    return out
