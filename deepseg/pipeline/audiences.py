"""Audiences: per segment, its members with the highest propensity, with the content to send them.

:func:`build_audiences` and :func:`export_csv` are plain functions of a DataFrame;
:func:`audiences_job` reads ``user_segments``, writes ``audiences`` and exports it as CSV.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import deepseg.storage as storage
from deepseg.locations import join
from deepseg.pipeline.runs import commit_metadata, new_run_id
from deepseg.pipeline.tables import (
    last_commit,
    load_table,
    read_table,
    retry_on_conflict,
    same_rows,
    table_exists,
    write_table,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config

__all__ = ["AUDIENCE_COLUMNS", "audiences_job", "build_audiences", "export_csv", "export_stamp"]

log = logging.getLogger("deepseg")

#: File in an export folder naming what it was exported from (e.g. a table version).
EXPORT_STAMP = "_deepseg_export.json"

AUDIENCE_COLUMNS = ("segment", "segment_name", "rank", "user_id", "propensity", "content_id",
                    "model_version", "run_id", "created_at")


def build_audiences(user_segments: "DataFrame", *, top_k: int | None = None,
                    threshold: float | None = None, content: Mapping[int, str] | None = None,
                    default_content: str | None = None, names: Mapping[int, str] | None = None,
                    run_id: str | None = None) -> "DataFrame":
    """:data:`AUDIENCE_COLUMNS` rows from ``user_segments``.

    A user belongs to the audience of its segment when its propensity for that segment is at
    least `threshold` and ranks within the segment's `top_k` (ties broken by ``user_id``);
    either may be None, not both. ``content_id`` comes from `content` (segment -> id), else
    `default_content`; ``segment_name`` from `names` (``segments.names``; null without);
    ``created_at`` is the query's ``current_timestamp()``.
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
    content_id = F.coalesce(_lookup(content), F.lit(default_content)).cast("string")
    return rows.select(
        "segment", _lookup(names).cast("string").alias("segment_name"), "rank", "user_id", "propensity", content_id.alias("content_id"), "model_version",
        F.lit(run_id).cast("string").alias("run_id"), F.current_timestamp().alias("created_at"))


def _lookup(mapping: Mapping[int, str] | None):
    """``mapping[segment]`` as a column (null for a segment it lacks, or without a mapping)."""
    from pyspark.sql import functions as F

    if not mapping:
        return F.lit(None)
    return F.create_map(*[F.lit(x) for seg, v in sorted(mapping.items()) for x in (seg, v)])[F.col("segment")]


def export_csv(audiences: "DataFrame", directory: str, stamp: Mapping | None = None) -> str:
    """Write one CSV file per segment (``<directory>/segment=<s>/part-*.csv``, with header), and
    `stamp` (e.g. the table and version exported) to ``<directory>/_deepseg_export.json``.

    The files are written to a fresh sibling folder, then swapped in by renames: `directory`
    holds the previous export or the new one, never a partial one. Exports of one directory run
    one at a time (a lock file beside it); leftovers of a killed export (``.<name>.tmp-*``,
    ``.<name>.old-*``) are removed by the next one. `directory` is a local or FUSE-mounted path
    (``/dbfs/...``, ``/Volumes/...``); a URI goes to :func:`_export_to_object_store`.
    """
    if storage.is_remote(directory):
        return _export_to_object_store(audiences, directory, stamp)
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    staged, old = (target.parent / f".{target.name}.{kind}-{token}" for kind in ("tmp", "old"))
    with _export_lock(target):
        olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for leftover in olds:  # newest first
            if not target.exists():  # killed between the two renames: put the last export back
                os.rename(leftover, target)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
        for leftover in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            (audiences.drop("run_id", "created_at").repartition("segment")
             .write.option("header", True).partitionBy("segment").csv(str(staged)))
            (staged / EXPORT_STAMP).write_text(json.dumps(dict(stamp or {}), default=str))
            if target.exists():
                os.rename(target, old)
            os.rename(staged, target)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return directory


def _export_to_object_store(audiences: "DataFrame", directory: str, stamp: Mapping | None) -> str:
    """:func:`export_csv` where folders cannot be renamed (``s3a://``, ``abfss://``, ``gs://``).

    Each export goes to a fresh folder ``<directory>/export-<token>/segment=<s>/``; writing the
    stamp (``_deepseg_export.json``, one PUT) with that folder's name in ``"folder"`` publishes it,
    and then the other ``export-*`` folders (the previous export, leftovers of killed ones) are
    deleted. Readers take the folder the stamp names.
    """
    folder = f"export-{uuid.uuid4().hex[:12]}"
    (audiences.drop("run_id", "created_at").repartition("segment")
     .write.option("header", True).partitionBy("segment").csv(join(directory, folder)))
    storage.write_text(join(directory, EXPORT_STAMP),
                       json.dumps({**dict(stamp or {}), "folder": folder}, default=str))
    for name in storage.list_dir(directory):
        if name.startswith("export-") and name != folder:
            storage.remove_tree(join(directory, name))
    return directory


def export_stamp(directory: str) -> dict | None:
    """The `stamp` of the export in `directory` (None: no complete export there)."""
    try:
        stamp = json.loads(storage.read_text(join(directory, EXPORT_STAMP)))
    except (OSError, ValueError):
        return None
    stamp.pop("folder", None)
    return stamp


@contextlib.contextmanager
def _export_lock(target: Path):
    """An exclusive lock on ``.<name>.lock`` beside `target` (none where the file system has no locks)."""
    import fcntl

    with open(target.parent / f".{target.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # e.g. some FUSE mounts
            pass
        yield


# ------------------------------------------------------------------ the job
def audiences_job(spark: "SparkSession", cfg: "Config") -> dict:
    """Write the ``audiences`` table from ``user_segments`` and export it as CSV.

    Audiences equal to the table's (``run_id`` and ``created_at`` aside) are not rewritten: a
    rerun commits nothing. The CSV export is redone whenever it is not of the table's latest
    version (its ``_deepseg_export.json`` says which).
    """
    run_id, a = new_run_id(), cfg.audiences
    path = cfg.data.table("audiences")
    export_dir = join(cfg.data.root, a.export_dir)

    def attempt(i: int) -> bool:
        audiences = build_audiences(read_table(spark, cfg, "user_segments"), top_k=a.top_k,
                                    threshold=a.threshold, content=a.content,
                                    default_content=a.default_content, names=cfg.segments.names,
                                    run_id=run_id).persist()
        try:
            if table_exists(spark, path) and same_rows(audiences, read_table(spark, cfg, "audiences"),
                                                       ignore=("run_id", "created_at")):
                return False
            write_table(audiences, path, commit_metadata("audiences", run_id))
            return True
        finally:
            audiences.unpersist()

    changed = retry_on_conflict(attempt, f"audiences into {path}")
    commit = last_commit(spark, path)
    version = commit["version"]
    written = load_table(spark, path, version)
    stamp = {"table": str(path), "version": version, "committed_at": str(commit["timestamp"])}
    if export_stamp(export_dir) != stamp:
        export_csv(written, export_dir, stamp=stamp)
    sizes = {r.segment: r["count"] for r in written.groupBy("segment").count().collect()}
    log.info("audiences: %s users per segment -> %s (%s), %s", dict(sorted(sizes.items())), path,
             f"version {version}" if changed else f"unchanged at version {version}", export_dir)
    return {"run_id": run_id, "table": str(path), "version": version, "changed": changed,
            "export_dir": export_dir, "sizes": dict(sorted(sizes.items()))}
