"""①⑦ The only Delta Lake I/O of deepseg: read a table, overwrite one, merge segments into one.

Every write is one Delta commit stamped with job metadata (``userMetadata``: a JSON object with
the job name, ``run_id`` and, where there is one, ``model_version``), so ``DESCRIBE HISTORY``
tells which run wrote what. Table names come from the configuration (``data.tables``), never
from code.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config

__all__ = ["read_table", "write_table", "merge_segments", "table_exists", "last_commit"]

_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


def table_exists(spark: "SparkSession", path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def read_table(spark: "SparkSession", cfg: "Config", name: str) -> "DataFrame":
    """The Delta table of logical `name` (a key of ``data.tables``); error naming it if missing."""
    path = cfg.data.table_path(name)
    if not table_exists(spark, path):
        raise FileNotFoundError(
            f"Delta table {name!r} ({cfg.data.tables[name]}) not found at {path}: "
            f"run the stage that writes it first (or `deepseg generate` for the synthetic inputs)")
    return spark.read.format("delta").load(path)


def write_table(df: "DataFrame", path: str, metadata: Mapping | None = None) -> None:
    """Replace the table at `path` by `df` (schema included) in one Delta commit."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if metadata:
        writer = writer.option("userMetadata", _json(metadata))
    writer.save(path)


def merge_segments(spark: "SparkSession", df: "DataFrame", path: str,
                   keys: Iterable[str] = ("user_id",), metadata: Mapping | None = None) -> None:
    """Upsert `df` into the table at `path` on `keys` in one Delta commit (created if missing).

    Rows whose keys match are replaced, others inserted, so merging the same rows twice leaves
    the same table. `df` must hold each key at most once (Delta refuses ambiguous merges).
    """
    from delta.tables import DeltaTable

    if not table_exists(spark, path):
        write_table(df, path, metadata)
        return
    condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    merge = (DeltaTable.forPath(spark, path).alias("t")
             .merge(df.alias("s"), condition)
             .whenMatchedUpdateAll()
             .whenNotMatchedInsertAll())
    with _commit_metadata(spark, metadata):
        merge.execute()


def last_commit(spark: "SparkSession", path: str) -> dict:
    """The latest commit of the table at `path`: version, operation, and its job metadata."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).collect()[0]
    meta = json.loads(row.userMetadata) if row.userMetadata else {}
    return {"version": row.version, "operation": row.operation, "timestamp": row.timestamp, **meta}


@contextlib.contextmanager
def _commit_metadata(spark: "SparkSession", metadata: Mapping | None):
    """MERGE takes no writer options: set the session's commit metadata around it."""
    if not metadata:
        yield
        return
    previous = spark.conf.get(_USER_METADATA_CONF, None)
    spark.conf.set(_USER_METADATA_CONF, _json(metadata))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(_USER_METADATA_CONF)
        else:
            spark.conf.set(_USER_METADATA_CONF, previous)


def _json(metadata: Mapping) -> str:
    return json.dumps(dict(metadata), sort_keys=True, default=str)
