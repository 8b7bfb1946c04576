"""⑦ Features -> ``user_segments`` rows, and which users need (re)scoring. Plain DataFrame functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["SEGMENT_COLUMNS", "rows_to_score", "score_users", "stale_users"]

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

    from deepseg.spark.backend import score_dataframe

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
