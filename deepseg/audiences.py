"""Audiences: per segment, its members with the highest propensity, with the content to send them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["AUDIENCE_COLUMNS", "build_audiences", "export_csv"]

AUDIENCE_COLUMNS = ("segment", "rank", "user_id", "propensity", "content_id", "model_version",
                    "run_id", "created_at")


def build_audiences(user_segments: "DataFrame", *, top_k: int | None = None,
                    threshold: float | None = None, content: Mapping[int, str] | None = None,
                    default_content: str | None = None, run_id: str | None = None) -> "DataFrame":
    """:data:`AUDIENCE_COLUMNS` rows from ``user_segments``.

    A user belongs to the audience of its segment when its propensity for that segment is at
    least `threshold` and ranks within the segment's `top_k` (ties broken by ``user_id``);
    either may be None, not both. ``content_id`` comes from `content` (segment -> id), else
    `default_content`; ``created_at`` is the query's ``current_timestamp()``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if top_k is None and threshold is None:
        raise ValueError("set top_k, threshold or both")
    rows = user_segments.select(
        "segment", "user_id", F.element_at("propensities", F.col("segment") + 1).alias("propensity"),
        "model_version")
    if threshold is not None:
        rows = rows.filter(F.col("propensity") >= threshold)
    rows = rows.withColumn("rank", F.row_number().over(
        Window.partitionBy("segment").orderBy(F.desc("propensity"), "user_id")))
    if top_k is not None:
        rows = rows.filter(F.col("rank") <= top_k)
    content_map = F.create_map(*[F.lit(x) for seg, cid in sorted((content or {}).items()) for x in (seg, cid)])
    content_id = F.coalesce(content_map[F.col("segment")] if content else F.lit(None),
                            F.lit(default_content)).cast("string")
    return rows.select(
        "segment", "rank", "user_id", "propensity", content_id.alias("content_id"), "model_version",
        F.lit(run_id).cast("string").alias("run_id"), F.current_timestamp().alias("created_at"))


def export_csv(audiences: "DataFrame", directory: str) -> str:
    """Write one CSV file per segment (``<directory>/segment=<s>/part-*.csv``, with header)."""
    (audiences.drop("run_id", "created_at").repartition("segment")
     .write.mode("overwrite").option("header", True).partitionBy("segment").csv(directory))
    return directory
