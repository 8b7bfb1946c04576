"""⑦ Features -> ``user_segments`` rows, and which users need (re)scoring.

:func:`rows_to_score`, :func:`stale_users` and :func:`score_users` are plain DataFrame
functions; :func:`score_job` runs a model version's feature pipeline on today's ``users`` and
``events`` and MERGEs the segments into ``user_segments`` (:func:`score_and_merge`, which the
refresh job also calls on features it has already computed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from deepseg.pipeline.features import current_features
from deepseg.pipeline.model_store import TrainedModel, load_trained
from deepseg.pipeline.runs import commit_metadata, new_run_id
from deepseg.pipeline.tables import merge_segments, read_table, retry_on_conflict, table_exists
from deepseg.pipeline.validate import check_feature_inputs

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config

__all__ = ["SEGMENT_COLUMNS", "rows_to_score", "score_and_merge", "score_job", "score_users", "stale_users"]

log = logging.getLogger("deepseg")

#: Columns of the ``user_segments`` table, in order.
SEGMENT_COLUMNS = ("user_id", "segment", "propensities", "model_version", "run_id", "scored_at",
                   "feature_hash")


def rows_to_score(features: "DataFrame", scored: "DataFrame", model_version: str) -> "DataFrame":
    """Rows of `features` (``user_id, features, feature_hash``) that `scored` (``user_segments``)
    lacks for this `model_version` and these features: new users, changed users, and everyone
    scored by another model version."""
    current = scored.filter(scored.model_version == model_version).select("user_id", "feature_hash")
    return features.join(current, ["user_id", "feature_hash"], "left_anti")


def stale_users(scored: "DataFrame", users: "DataFrame") -> "DataFrame":
    """``user_id`` of the rows of `scored` (``user_segments``) whose user is no longer in `users`:
    deleted users, whose segments must go."""
    return scored.select("user_id").join(users.select("user_id"), "user_id", "left_anti")


def score_users(features: "DataFrame", model, *, model_version: str, run_id: str) -> "DataFrame":
    """``user_segments`` rows (:data:`SEGMENT_COLUMNS`) of `features` scored by `model`.

    ``segment`` is the argmax of the EMA ``propensities``; ``scored_at`` is the query's
    ``current_timestamp()``: one time for the whole run.
    """
    from pyspark.sql import functions as F

    from deepseg.spark.scoring import score_dataframe

    scored = score_dataframe(features.select("user_id", "features", "feature_hash"), model,
                             features_col="features", probability_col="propensities",
                             prediction_col="segment")
    return scored.select(
        "user_id", "segment", "propensities",
        F.lit(model_version).alias("model_version"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("scored_at"),
        "feature_hash",
    )


# ------------------------------------------------------------------ the job
def score_job(spark: "SparkSession", cfg: "Config", only_changed: bool | None = None,
              trained: TrainedModel | None = None) -> dict:
    """Score users with the configured model into ``user_segments`` (one MERGE on user_id).

    `only_changed` (default ``scoring.only_changed``) scores only users that are new, whose
    features changed, or that another model version scored; False rescores everyone.
    """
    trained = trained or load_trained(cfg, cfg.scoring.model_version)
    check_feature_inputs(read_table(spark, cfg, "users"), read_table(spark, cfg, "events"), cfg)
    return score_and_merge(spark, cfg, trained, current_features(spark, cfg, trained.pipeline), only_changed)


def score_and_merge(spark: "SparkSession", cfg: "Config", trained: TrainedModel, features: "DataFrame",
                    only_changed: bool | None) -> dict:
    """Score `features` (today's users) into ``user_segments`` in one MERGE commit that also
    deletes the rows of users no longer in ``users``; nothing is committed when nothing changed.
    A commit that loses to a concurrent run is redone on the winner's version."""
    run_id = new_run_id()
    path = cfg.data.table("user_segments")
    only_changed = cfg.scoring.only_changed if only_changed is None else only_changed
    meta = commit_metadata("score", run_id, model_version=trained.version)

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
