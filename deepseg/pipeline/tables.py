"""①⑦ The only Delta Lake I/O of deepseg: read a table, overwrite or append to one, merge segments into one.

Every write is one Delta commit stamped with job metadata (``userMetadata``: a JSON object with
the job name, ``run_id`` and, where there is one, ``model_version``), so ``DESCRIBE HISTORY``
tells which run wrote what. Tables come from the configuration (``data.tables``, resolved by
:mod:`deepseg.locations` into a :class:`~deepseg.locations.Table`), never from code: a catalog
name is read and written by name (``saveAsTable``, ``DeltaTable.forName``: managed tables), a
location by path. Every function here takes either; a plain string is a path.

Atomicity comes from Delta: a write puts its data files next to the table's, then commits them
by adding one file to ``_delta_log``. A job killed before that commit leaves the table at its
previous version (its orphan data files are invisible to readers and removed by ``VACUUM``), and
a reader always reads one committed version, never a mix of two. Two jobs that commit to the same
table at the same time are serialised by Delta: the second one fails its commit with a conflict,
raised here as :class:`ConcurrentWriteError` (see :func:`retry_on_conflict`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config
    from deepseg.locations import Table

__all__ = [
    "CONFLICT_RETRIES",
    "ConcurrentWriteError",
    "append_table",
    "delta_table",
    "history",
    "last_commit",
    "load_table",
    "merge_segments",
    "read_table",
    "retry_on_conflict",
    "same_rows",
    "table_exists",
    "write_table",
]

log = logging.getLogger("deepseg")

_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
_DELETE_FLAG = "_deepseg_delete"

#: Times :func:`retry_on_conflict` reruns a step whose commit lost to a concurrent job.
CONFLICT_RETRIES = 2

T = TypeVar("T")


class ConcurrentWriteError(RuntimeError):
    """Another job committed to the same Delta table while this one was writing to it.

    Nothing of this job's write is in the table (Delta refused the commit); rerunning the job
    reads the winner's version and redoes only what is still missing.
    """


def _as_table(table: "Table | str") -> "Table":
    from deepseg.locations import Table

    return Table(path=table) if isinstance(table, str) else table


def table_exists(spark: "SparkSession", table: "Table | str") -> bool:
    """Whether `table` (a :class:`~deepseg.config.Table`, or a path) is a Delta table.

    A name in an unknown catalog or schema is not one (Spark's error is logged at debug level)."""
    from delta.tables import DeltaTable
    from pyspark.errors import AnalysisException

    table = _as_table(table)
    if table.path is not None:
        return DeltaTable.isDeltaTable(spark, table.path)
    try:
        return spark.catalog.tableExists(table.name) and DeltaTable.isDeltaTable(
            spark, spark.sql(f"DESCRIBE DETAIL {table.name}").first().location)
    except AnalysisException as e:
        log.debug("table %s: %s", table.name, e)
        return False


def load_table(spark: "SparkSession", table: "Table | str", version: int | None = None) -> "DataFrame":
    """The Delta table `table` (at `version`, default the latest) as a DataFrame."""
    table = _as_table(table)
    if table.name is not None:
        return spark.sql(f"SELECT * FROM {table.name}" + (f" VERSION AS OF {int(version)}" if version is not None
                                                           else ""))
    reader = spark.read.format("delta")
    return (reader.option("versionAsOf", int(version)) if version is not None else reader).load(table.path)


def delta_table(spark: "SparkSession", table: "Table | str"):
    """The :class:`delta.tables.DeltaTable` of `table` (for MERGE and history)."""
    from delta.tables import DeltaTable

    table = _as_table(table)
    return DeltaTable.forName(spark, table.name) if table.name else DeltaTable.forPath(spark, table.path)


def read_table(spark: "SparkSession", cfg: "Config", name: str) -> "DataFrame":
    """The Delta table of logical `name` (a key of ``data.tables``); error naming it if missing."""
    table = cfg.data.table(name)
    if not table_exists(spark, table):
        where = "in the catalog (or its catalog or schema does not exist)" if table.name else "at that location"
        raise FileNotFoundError(
            f"Delta table {name!r} ({table}) not found {where}: "
            f"run the stage that writes it first (or `deepseg generate` for the synthetic inputs)")
    return load_table(spark, table)


def _save(writer, table: "Table") -> None:
    if table.name is not None:
        writer.saveAsTable(table.name)  # a managed table when new
    else:
        writer.save(table.path)


def write_table(df: "DataFrame", table: "Table | str", metadata: Mapping | None = None) -> None:
    """Replace `table` by `df` (schema included) in one Delta commit."""
    table = _as_table(table)
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if metadata:
        writer = writer.option("userMetadata", _json(metadata))
    with _conflicts_raised(table, "overwrite", metadata):
        _save(writer, table)


def append_table(df: "DataFrame", table: "Table | str", metadata: Mapping | None = None,
                 txn: tuple[str, int] | None = None) -> None:
    """Append `df` to `table` (created if missing) in one Delta commit.

    With `txn` (application id, version) the append is idempotent: Delta skips it when that
    application already committed this version or a later one to the table.
    """
    table = _as_table(table)
    writer = df.write.format("delta").mode("append")
    if metadata:
        writer = writer.option("userMetadata", _json(metadata))
    if txn:
        writer = writer.option("txnAppId", txn[0]).option("txnVersion", str(int(txn[1])))
    with _conflicts_raised(table, "append", metadata):
        _save(writer, table)


def merge_segments(spark: "SparkSession", df: "DataFrame", table: "Table | str",
                   keys: Iterable[str] = ("user_id",), metadata: Mapping | None = None,
                   delete: "DataFrame | None" = None) -> None:
    """Upsert `df` into `table` on `keys`, and delete the rows whose keys are in
    `delete`, in one Delta commit (the table is created from `df` if missing).

    Rows of `df` whose keys match are replaced, others inserted, so merging the same rows twice
    leaves the same table; rows matching neither `df` nor `delete` are not rewritten. `df` must
    hold each key at most once (Delta refuses ambiguous merges) and share no key with `delete`
    (a DataFrame of the key columns).
    """
    from pyspark.sql import functions as F

    keys, table = list(keys), _as_table(table)
    if not table_exists(spark, table):
        write_table(df, table, metadata)
        return
    source = df.withColumn(_DELETE_FLAG, F.lit(False))
    if delete is not None:
        source = source.unionByName(delete.select(*keys).withColumn(_DELETE_FLAG, F.lit(True)),
                                    allowMissingColumns=True)
    condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    values = {f"`{c}`": f"s.`{c}`" for c in df.columns}
    merge = (delta_table(spark, table).alias("t")
             .merge(source.alias("s"), condition)
             .whenMatchedDelete(condition=f"s.`{_DELETE_FLAG}`")
             .whenMatchedUpdate(set=values)
             .whenNotMatchedInsert(condition=f"NOT s.`{_DELETE_FLAG}`", values=values))
    with _commit_metadata(spark, metadata), _conflicts_raised(table, "merge", metadata):
        merge.execute()


def retry_on_conflict(step: Callable[[int], T], what: str, retries: int | None = None) -> T:
    """Run ``step(attempt)``; when its commit loses to a concurrent job, run it again.

    `step` must read the tables it writes afresh on every call, so that a rerun sees the
    winner's commit and redoes only what is still missing (for scoring: usually nothing). After
    `retries` reruns (default :data:`CONFLICT_RETRIES`) the last :class:`ConcurrentWriteError`
    is raised.
    """
    retries = CONFLICT_RETRIES if retries is None else retries
    for attempt in range(retries + 1):
        try:
            return step(attempt)
        except ConcurrentWriteError as e:
            if attempt == retries:
                raise ConcurrentWriteError(
                    f"{what}: gave up after {retries + 1} attempt{'s' if retries else ''}: {e}") from e
            log.warning("%s: a concurrent job committed first (%s); retrying on its version", what, e)
    raise AssertionError("unreachable")  # pragma: no cover


def same_rows(a: "DataFrame", b: "DataFrame", ignore: Iterable[str] = ()) -> bool:
    """Whether `a` and `b` hold the same multiset of rows, columns `ignore` left out."""
    ignore = set(ignore)
    if set(a.columns) != set(b.columns):
        return False
    cols = [c for c in a.columns if c not in ignore]
    a, b = a.select(*cols), b.select(*cols)
    return a.exceptAll(b).isEmpty() and b.exceptAll(a).isEmpty()


def history(spark: "SparkSession", table: "Table | str", limit: int | None = None) -> list:
    """`table`'s commits, newest first (``DESCRIBE HISTORY`` rows)."""
    rows = delta_table(spark, table).history(limit) if limit else delta_table(spark, table).history()
    return rows.orderBy("version", ascending=False).collect()


def last_commit(spark: "SparkSession", table: "Table | str") -> dict:
    """The latest commit of `table`: version, operation, and its job metadata."""
    row = history(spark, table, 1)[0]
    meta = json.loads(row.userMetadata) if row.userMetadata else {}
    return {"version": row.version, "operation": row.operation, "timestamp": row.timestamp, **meta}


@contextlib.contextmanager
def _conflicts_raised(table, operation: str, metadata: Mapping | None):
    """Delta's commit conflicts (ConcurrentAppendException, ...) as :class:`ConcurrentWriteError`."""
    import delta.exceptions as dx  # importing it also makes PySpark raise these classes

    conflicts = (dx.DeltaConcurrentModificationException, dx.ConcurrentWriteException,
                 dx.MetadataChangedException, dx.ProtocolChangedException, dx.ConcurrentAppendException,
                 dx.ConcurrentDeleteReadException, dx.ConcurrentDeleteDeleteException,
                 dx.ConcurrentTransactionException)
    try:
        yield
    except conflicts as e:
        job = f" by job {metadata['job']!r} run {metadata.get('run_id')!r}" if metadata and "job" in metadata else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConcurrentWriteError(
            f"Delta table {table}: {operation}{job} lost to a concurrent commit and was not applied "
            f"({type(e).__name__}: {first[:300]})") from e


@contextlib.contextmanager
def _commit_metadata(spark: "SparkSession", metadata: Mapping | None):
    """MERGE takes no writer options: set the session's commit metadata around it.

    The setting is per SparkSession: jobs merging from several threads need a session each
    (``spark.newSession()``).
    """
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
