"""② Users and their events -> ``user_id, features array<float>``, and the job writing ``features``.

Two steps, so that scoring reapplies exactly what training saw (both pure Spark, no table names):

* :func:`aggregate_users` -- one row per user: the profile columns plus event aggregates
  (counts per product and per action, mean log duration, recency, active span, account age).
  Deterministic, nothing fitted.
* :func:`fit_feature_pipeline` -- a Spark ML :class:`~pyspark.ml.PipelineModel` fitted on those
  rows: log transforms (SQL), mean imputation, categorical indexing / one-hot encoding,
  assembly and standardisation. It is saved with each model and reapplied by
  :func:`transform_features` at scoring, which yields the one array column ``features``.

:func:`features_job` reads ``users`` and ``events``, fits the pipeline, saves it beside the
table (:func:`feature_pipeline_path`) and writes ``features``; :func:`current_features` runs a
model's saved pipeline on today's tables for scoring and drift.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from deepseg.pipeline.runs import commit_metadata, new_run_id
from deepseg.pipeline.tables import read_table, write_table
from deepseg.pipeline.validate import check_feature_inputs

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config, FeatureSpec

__all__ = [
    "aggregate_users",
    "current_features",
    "feature_columns",
    "feature_names",
    "feature_pipeline_path",
    "features_job",
    "fit_feature_pipeline",
    "transform_features",
    "with_feature_hash",
]

log = logging.getLogger("deepseg")

_NUM, _CAT, _IDX, _VEC = "num__", "cat__", "idx__", "vec__"
_RAW, _SCALED = "_assembled", "_scaled"


def _slug(value: str) -> str:
    return re.sub(r"\W", "_", value)


def _event_columns(spec: "FeatureSpec") -> list[str]:
    ev = spec.events
    return (["n_events"] + [f"n_product_{_slug(p)}" for p in ev.products]
            + [f"n_action_{_slug(a)}" for a in ev.actions]
            + ["mean_log_duration", "recency_days", "active_span_days"])


def aggregate_users(users: "DataFrame", events: "DataFrame", spec: "FeatureSpec") -> "DataFrame":
    """One row per user of `users`: its `spec` columns and aggregates of its `events`.

    Users without events get zero counts, a null mean duration (imputed by the pipeline) and
    recency = active span = account age (or null without ``signup_date``). Recency is measured
    from ``spec.reference_date``, or from the latest event date in `events`.

    Non-finite inputs become missing values: ±inf in a numeric users column turns to null (the
    pipeline imputes nulls and NaNs with the mean), and an event whose duration is null, NaN or
    ±inf is left out of its user's mean duration. With ``spec.non_finite == "reject"`` the jobs
    refuse such inputs before calling this (:func:`deepseg.pipeline.validate.check_feature_inputs`).
    """
    from pyspark.sql import functions as F

    ev = spec.events
    duration = F.col(ev.duration).cast("double")
    e = events.select(
        "user_id",
        F.to_date(ev.date).alias("_day"),
        F.col(ev.product).alias("_product"),
        F.col(ev.action).alias("_action"),
        F.when(~(F.isnan(duration) | (F.abs(duration) == F.lit(float("inf")))), duration).alias("_duration"),
    )
    per_user = e.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n_events"),
        *[F.count(F.when(F.col("_product") == p, 1)).alias(f"n_product_{_slug(p)}") for p in ev.products],
        *[F.count(F.when(F.col("_action") == a, 1)).alias(f"n_action_{_slug(a)}") for a in ev.actions],
        # greatest() skips nulls: test the duration first, so that a bad one is left out of the mean
        F.avg(F.when(F.col("_duration").isNotNull(), F.log1p(F.greatest("_duration", F.lit(0.0)))))
        .alias("mean_log_duration"),
        F.max("_day").alias("_last"),
        F.min("_day").alias("_first"),
    )
    if spec.reference_date is not None:
        ref = F.to_date(F.lit(spec.reference_date))
        joined = users.join(per_user, "user_id", "left")
    else:
        latest = e.agg(F.max("_day").alias("_reference"))
        joined = users.join(per_user, "user_id", "left").crossJoin(F.broadcast(latest))
        ref = F.col("_reference")

    age = (F.datediff(ref, F.to_date(spec.signup_date)).cast("double")
           if spec.signup_date else F.lit(None).cast("double"))
    counts = [c for c in _event_columns(spec) if c.startswith("n_")]
    out = [F.col("user_id")]
    out += [_finite_or_null(F.col(c)).alias(c) if isinstance(users.schema[c].dataType, _floating())
            else F.col(c) for c in spec.numeric]
    out += [F.col(c) for c in spec.categorical]
    out += [F.coalesce(F.col(c), F.lit(0)).alias(c) for c in counts]
    out += [
        F.col("mean_log_duration"),
        F.coalesce(F.datediff(ref, "_last").cast("double"), age).alias("recency_days"),
        F.coalesce(F.datediff("_last", "_first").cast("double"), age).alias("active_span_days"),
    ]
    if spec.signup_date:
        out.append(age.alias("account_age_days"))
    return joined.select(*out)


def _floating():
    from pyspark.sql import types as T

    return (T.FloatType, T.DoubleType)


def _finite_or_null(col):
    from pyspark.sql import functions as F

    return F.when(F.abs(col) != F.lit(float("inf")), col)  # NaN stays NaN; null, ±inf -> null


def feature_columns(spec: "FeatureSpec") -> list[str]:
    """The columns the features of `spec` come from, in order: the prefix of each
    :func:`feature_names` entry before ``=`` (a one-hot column has one entry per level)."""
    return [name for name, _ in _numeric_sql(spec)] + list(spec.categorical)


def _numeric_sql(spec: "FeatureSpec") -> list[tuple[str, str]]:
    """(output name, SQL expression) of every numeric input of the assembler."""
    log = lambda c: f"log1p(greatest(CAST(`{c}` AS DOUBLE), 0D))"  # noqa: E731
    cols = [(c, log(c) if c in spec.log1p else f"CAST(`{c}` AS DOUBLE)") for c in spec.numeric]
    ev = spec.events
    cols.append(("log_n_events", log("n_events")))
    cols += [(f"log_n_product_{_slug(p)}", log(f"n_product_{_slug(p)}")) for p in ev.products]
    cols += [(f"log_n_action_{_slug(a)}", log(f"n_action_{_slug(a)}")) for a in ev.actions]
    cols += [(f"frac_product_{_slug(p)}",
              f"CAST(`n_product_{_slug(p)}` AS DOUBLE) / greatest(`n_events`, 1)") for p in ev.products]
    cols.append(("mean_log_duration", "CAST(`mean_log_duration` AS DOUBLE)"))
    cols += [(f"log_{c}", log(c)) for c in ("recency_days", "active_span_days")]
    if spec.signup_date:
        cols.append(("log_account_age_days", log("account_age_days")))
    return cols


def fit_feature_pipeline(users: "DataFrame", spec: "FeatureSpec") -> "PipelineModel":
    """Fit the feature pipeline on :func:`aggregate_users` rows (cache them: it reads them thrice)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import (
        Imputer,
        OneHotEncoder,
        SQLTransformer,
        StandardScaler,
        StringIndexer,
        VectorAssembler,
    )

    numeric = _numeric_sql(spec)
    select = ["user_id"] + [f"{expr} AS `{_NUM}{name}`" for name, expr in numeric]
    select += [f"CAST(`{c}` AS STRING) AS `{_CAT}{c}`" for c in spec.categorical]
    stages = [SQLTransformer(statement=f"SELECT {', '.join(select)} FROM __THIS__")]
    num_cols = [_NUM + name for name, _ in numeric]
    stages.append(Imputer(strategy="mean", inputCols=num_cols, outputCols=num_cols))
    assembled = list(num_cols)
    if spec.categorical:
        cats = [_CAT + c for c in spec.categorical]
        idx = [_IDX + c for c in spec.categorical]
        # Unseen levels and nulls at scoring go to an extra index ("keep"); one-hot drops it.
        stages.append(StringIndexer(inputCols=cats, outputCols=idx, handleInvalid="keep",
                                    stringOrderType="alphabetAsc"))
        if spec.encoding == "onehot":
            vecs = [_VEC + c for c in spec.categorical]
            stages.append(OneHotEncoder(inputCols=idx, outputCols=vecs, handleInvalid="keep"))
            assembled += vecs
        else:
            assembled += idx
    stages.append(VectorAssembler(inputCols=assembled, outputCol=_RAW))
    stages.append(StandardScaler(inputCol=_RAW, outputCol=_SCALED, withMean=True, withStd=True))
    return Pipeline(stages=stages).fit(users)


def transform_features(pipeline: "PipelineModel", users: "DataFrame") -> "DataFrame":
    """``user_id, features`` (array<float>) of :func:`aggregate_users` rows."""
    from pyspark.ml.functions import vector_to_array

    return pipeline.transform(users).select("user_id", vector_to_array(_SCALED, "float32").alias("features"))


def with_feature_hash(features: "DataFrame") -> "DataFrame":
    """Adds ``feature_hash`` (xxhash64 of ``features``): tells users whose features changed."""
    from pyspark.sql import functions as F

    return features.withColumn("feature_hash", F.xxhash64("features"))


def feature_names(pipeline: "PipelineModel") -> list[str]:
    """Name of each position of ``features``: ``log_n_events``, ``plan=pro``, ``plan=<other>``."""
    from pyspark.ml.feature import OneHotEncoderModel, StringIndexerModel, VectorAssembler

    labels, sizes = {}, {}
    for s in pipeline.stages:
        if isinstance(s, StringIndexerModel):
            labels = dict(zip(s.getInputCols(), s.labelsArray))
        elif isinstance(s, OneHotEncoderModel):  # "keep" adds one slot for unseen levels/nulls
            sizes = dict(zip(s.getOutputCols(), s.categorySizes))
    assembler = next(s for s in pipeline.stages if isinstance(s, VectorAssembler))
    names = []
    for col in assembler.getInputCols():
        head, c = col.split("__", 1)
        if f"{head}__" == _VEC:
            levels = [f"{c}={lev}" for lev in labels[_CAT + c]]
            names += (levels + [f"{c}=<other>"] * sizes[col])[:sizes[col]]
        else:
            names.append(c)
    return names


# ------------------------------------------------------------------ the job
def feature_pipeline_path(cfg: "Config") -> str:
    """Where the features job leaves the pipeline that made the ``features`` table: beside a
    located table, else ``<data.root>/feature_pipeline``."""
    table = cfg.data.table("features")
    return table.path + "_pipeline" if table.path else cfg.data.under_root("feature_pipeline")


def current_features(spark: "SparkSession", cfg: "Config", pipeline: "PipelineModel") -> "DataFrame":
    """``user_id, features, feature_hash`` of today's users and events through `pipeline`."""
    users, events = read_table(spark, cfg, "users"), read_table(spark, cfg, "events")
    return with_feature_hash(transform_features(pipeline, aggregate_users(users, events, cfg.features)))


def features_job(spark: "SparkSession", cfg: "Config") -> dict:
    """Fit the feature pipeline on today's users and write the ``features`` table with it."""
    run_id = new_run_id()
    users, events = read_table(spark, cfg, "users"), read_table(spark, cfg, "events")
    imputed = check_feature_inputs(users, events, cfg)  # before anything is written
    rows = aggregate_users(users, events, cfg.features).persist()
    try:
        pipeline = fit_feature_pipeline(rows, cfg.features)
        pipeline.write().overwrite().save(feature_pipeline_path(cfg))
        names = feature_names(pipeline)
        path = cfg.data.table("features")
        write_table(with_feature_hash(transform_features(pipeline, rows)), path,
                    commit_metadata("features", run_id, feature_names=names))
    finally:
        rows.unpersist()
    log.info("features: %d per user -> %s", len(names), path)
    return {"run_id": run_id, "table": str(path), "n_features": len(names), "pipeline": feature_pipeline_path(cfg),
            "imputed": imputed}
