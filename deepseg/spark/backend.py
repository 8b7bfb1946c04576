"""Algorithm 1 with the unlabelled users in a Spark DataFrame.

Only data moves here; every number is computed by :mod:`deepseg.core`. The labelled users
(few) are collected to the driver, the unlabelled ones stay distributed:

* the TSVM sample is a seeded DataFrame sample collected through Arrow;
* the per-class TSVMs run as one Spark task each;
* each iteration's pseudo-labels are computed on the executors (broadcast labeller,
  ``mapInArrow``), grouped into random buckets of about ``batch_rows`` users, packed into one
  binary value per bucket and persisted; every epoch the driver fetches the buckets one at a
  time (one single-task job each, the next one prefetched while it trains), in a seeded order,
  and shuffles inside each bucket.

Randomly bucketing (a seeded hash of a row id, new each iteration) then shuffling each bucket is
Rao's two-pass shuffle: each epoch's order is a uniformly random permutation, as in the in-memory
backend; only the epochs of one iteration share their buckets. With one bucket
(``batch_rows >= #users``) the batches are exactly the in-memory backend's.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import replace
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepseg.core.loop import DeepSegConfig, DeepSegResult, fit_deep_segmentation
from deepseg.core.pseudo import EMAEnsemble
from deepseg.core.train import torch_threads

log = logging.getLogger("deepseg")

ROW_ID = "__deepseg_row_id"
FEATURES = "__deepseg_features"
DEFAULT_BATCH_ROWS = 32768


# ---------------------------------------------------------------------------------------------
# Arrow <-> numpy (no per-row Python)


def arrow_matrix(column: pa.Array | pa.ChunkedArray, n_features: int | None = None,
                 name: str = "features") -> np.ndarray:
    """An array<float|double> Arrow column as a float32 (rows, n_features) matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    n = len(column)
    if n == 0:
        return np.zeros((0, n_features or 0), dtype=np.float32)
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null rows")
    lengths = pc.min_max(pc.list_value_length(column))
    lo, hi = lengths["min"].as_py(), lengths["max"].as_py()
    if lo != hi:
        raise ValueError(f"column {name!r} has arrays of different lengths ({lo} to {hi})")
    if n_features is not None and lo != n_features:
        raise ValueError(f"column {name!r} has {lo} values per row; expected {n_features}")
    values = column.flatten()  # honours slicing offsets
    if values.null_count:
        raise ValueError(f"column {name!r} has {values.null_count} null array elements")
    # a writable copy: torch warns on (and must not write into) Arrow's read-only buffers
    return np.array(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, lo)


def arrow_list(matrix: np.ndarray) -> pa.ListArray:
    """A (rows, k) matrix as an Arrow list<float> column (k values per row)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, k = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


# ---------------------------------------------------------------------------------------------
# DataFrame helpers


def float_array_column(df, column: str):
    """`column` as an array<float> Column: arrays are cast, pyspark.ml Vectors converted."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if column not in df.columns:
        raise ValueError(f"features column {column!r} not in the DataFrame's columns {df.columns}")
    dtype = df.schema[column].dataType
    if isinstance(dtype, VectorUDT):
        return vector_to_array(F.col(column), "float32")
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.FloatType, T.DoubleType)):
        return F.col(column).cast(T.ArrayType(T.FloatType()))
    raise TypeError(
        f"features column {column!r} must be array<float>, array<double> or a pyspark.ml Vector; "
        f"got {dtype.simpleString()}")


def _arrow_table(df) -> pa.Table:
    return df.toArrow()


@contextlib.contextmanager
def job_description(sc, description: str):
    """Label the Spark jobs started in this block (Spark UI), restoring the previous label."""
    previous = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(description)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.job.description", previous)


def _storage_level():
    from pyspark import StorageLevel

    return StorageLevel.MEMORY_AND_DISK


# ---------------------------------------------------------------------------------------------
# Executor-side functions (module level: pickled by reference)

_PACKED_SCHEMA = "bucket int, n int, d int, c int, x binary, p binary"


def _label_and_pack(batches: Iterator[pa.RecordBatch], labeler_bc, n_features: int | None,
                    max_rows: int, column: str = "features") -> Iterator[pa.RecordBatch]:
    """One bucket: sort its users by row id (fetch order is not deterministic), apply the
    labeller, emit the features and probabilities as raw float32 bytes, <= max_rows per row."""
    from pyspark import TaskContext

    ids, feats = [], []
    for batch in batches:
        if batch.num_rows:
            ids.append(batch.column(ROW_ID).to_numpy())
            feats.append(arrow_matrix(batch.column(FEATURES), n_features, column))
    if not ids:
        return
    row_id = np.concatenate(ids)
    X = np.concatenate(feats) if len(feats) > 1 else feats[0]
    X = np.ascontiguousarray(X[np.argsort(row_id, kind="stable")])
    labeler = labeler_bc.value
    with torch_threads(1):  # one core per Spark task
        P = np.ascontiguousarray(labeler(X), dtype=np.float32)
    bucket = TaskContext.get().partitionId()
    for start in range(0, len(X), max_rows):
        x, p = X[start:start + max_rows], P[start:start + max_rows]
        yield pa.RecordBatch.from_arrays(
            [pa.array([v], pa.int32()) for v in (bucket, len(x), x.shape[1], p.shape[1])]
            + [pa.array([x.tobytes()], pa.binary()), pa.array([p.tobytes()], pa.binary())],
            names=["bucket", "n", "d", "c", "x", "p"])


def _unpack(table: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    if table.num_rows == 0:
        return None
    X, P = [], []
    for row in table.to_batches():
        for i in range(row.num_rows):
            n, d, c = (row.column(k)[i].as_py() for k in ("n", "d", "c"))
            X.append(np.frombuffer(row.column("x")[i].as_buffer(), np.float32).reshape(n, d))
            P.append(np.frombuffer(row.column("p")[i].as_buffer(), np.float32).reshape(n, c))
    return np.concatenate(X), np.concatenate(P)


def _score_batches(batches: Iterator[pa.RecordBatch], ensemble_bc, keep: list[str], n_features: int,
                   probability_col: str, prediction_col: str, embedding_col: str | None,
                   column: str = "features") -> Iterator[pa.RecordBatch]:
    ensemble = ensemble_bc.value
    with torch_threads(1):
        for batch in batches:
            X = arrow_matrix(batch.column(FEATURES), n_features, column)
            if len(X):
                P = ensemble(X)
                Z = ensemble.embed(X) if embedding_col else None
            else:
                P = np.zeros((0, ensemble.nets[0].g.dense.out_features), np.float32)
                Z = np.zeros((0, ensemble.nets[0].g.dense.in_features), np.float32)
            arrays = [batch.column(name) for name in keep]
            arrays += [arrow_list(P), pa.array(np.argmax(P, axis=1).astype(np.int32), pa.int32())]
            names = keep + [probability_col, prediction_col]
            if embedding_col:
                arrays.append(arrow_list(Z))
                names.append(embedding_col)
            yield pa.RecordBatch.from_arrays(arrays, names=names)


# ---------------------------------------------------------------------------------------------
# The backend


def partition_fetcher(df) -> Callable[[int], pa.Table] | None:
    """fetch(i): partition i of `df` as an Arrow table, in one single-task job.

    Uses classic PySpark internals (Dataset.toArrowBatchRdd, PythonRDD.runJob): measured 3x
    faster than DataFrame.rdd (which pickles rows) and without the K tasks per fetch of a
    filter + toArrow. Returns None where they are unavailable (e.g. Spark Connect).
    """
    try:
        from pyspark.serializers import NoOpSerializer
        from pyspark.sql.pandas.types import to_arrow_schema
        from pyspark.util import _load_from_socket

        session = df.sparkSession
        sc = session.sparkContext
        large = session.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false") == "true"
        schema = to_arrow_schema(df.schema, prefers_large_types=large)
        rdd = df._jdf.toArrowBatchRdd()
        jrdd = sc._jvm.org.apache.spark.api.java.JavaRDD.fromRDD(rdd, rdd.elementClassTag())
        n_partitions = jrdd.getNumPartitions()
    except Exception as e:  # pragma: no cover - depends on the PySpark flavour
        log.info("per-partition Arrow fetch unavailable (%s); using filter + toArrow", e)
        return None

    def fetch(i: int) -> pa.Table:
        sock = sc._jvm.PythonRDD.runJob(sc._jsc.sc(), jrdd, [i])
        with _load_from_socket(sock, NoOpSerializer()) as stream:
            batches = [pa.ipc.read_record_batch(pa.py_buffer(b), schema) for b in stream]
        return pa.Table.from_batches(batches, schema)

    fetch.n_partitions = n_partitions
    return fetch


class _Prefetch:
    """Run `fn()` in a Spark-aware thread (inherits the job description); `.result()` joins."""

    def __init__(self, fn: Callable[[], object]):
        from pyspark import InheritableThread

        self._value, self._error = None, None
        self._thread = InheritableThread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as e:  # re-raised in the consumer
            self._error = e

    def wait(self) -> None:
        self._thread.join()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class SparkPseudoLabeled:
    """One iteration's pseudo-labelled users: persisted buckets of packed (X, P), one per partition."""

    def __init__(self, packed, n_buckets: int, iteration: int = 0, fast: bool = True):
        self.packed, self.n_buckets, self.iteration = packed, n_buckets, iteration
        self.sc = packed.sparkSession.sparkContext
        self._inflight: set[_Prefetch] = set()
        self._fetch_partition = partition_fetcher(packed) if fast else None
        if self._fetch_partition is not None and self._fetch_partition.n_partitions != n_buckets:
            log.warning("pseudo-labels have %d partitions, expected %d buckets; using filter + toArrow",
                        self._fetch_partition.n_partitions, n_buckets)
            self._fetch_partition = None

    def fetch(self, bucket: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The users of one bucket in row-id order; None if it is empty."""
        from pyspark.sql import functions as F

        with job_description(self.sc, f"deepseg: stream pseudo-labels iteration {self.iteration}"):
            if self._fetch_partition is not None:
                table = self._fetch_partition(bucket)
            else:
                table = _arrow_table(self.packed.filter(F.col("bucket") == bucket))
        return _unpack(table)

    def batches(self, batch_size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch: buckets in a seeded order, each shuffled; <= 2 buckets on the driver at once."""
        rng = np.random.default_rng(seed)
        order = [int(b) for b in rng.permutation(self.n_buckets)]
        pending = self._prefetch(order[0]) if order else None
        carry = None
        try:
            for i in range(len(order)):
                bucket = pending.result()
                self._inflight.discard(pending)
                pending = self._prefetch(order[i + 1]) if i + 1 < len(order) else None
                if bucket is None:
                    continue
                X, P = bucket
                perm = rng.permutation(len(X))
                X, P = X[perm], P[perm]
                if carry is not None:
                    X, P = np.concatenate([carry[0], X]), np.concatenate([carry[1], P])
                full = len(X) - len(X) % batch_size
                for start in range(0, full, batch_size):
                    yield X[start:start + batch_size], P[start:start + batch_size]
                carry = (X[full:], P[full:]) if full < len(X) else None
            if carry is not None:
                yield carry
        finally:  # an abandoned epoch must not leave a fetch running
            if pending is not None:
                pending.wait()
                self._inflight.discard(pending)

    def _prefetch(self, bucket: int) -> _Prefetch:
        job = _Prefetch(partial(self.fetch, bucket))
        self._inflight.add(job)
        return job

    def close(self) -> None:
        """Wait for fetches still running (before the buckets are unpersisted)."""
        for job in list(self._inflight):
            job.wait()
        self._inflight.clear()


class SparkBackend:
    """Backend over a DataFrame of unlabelled users with an array<float> (or double) features column.

    `batch_rows` bounds the users the driver holds per bucket when streaming pseudo-labels
    (driver memory ≈ 3 · batch_rows · (n_features + n_classes) · 4 bytes). The input is
    persisted while the backend is open; use it as a context manager (or call `close`).
    """

    def __init__(self, unlabeled, features_col: str = "features", batch_rows: int = DEFAULT_BATCH_ROWS,
                 seed: int = 0, n_features: int | None = None, persist: bool = True,
                 fast_fetch: bool = True):
        from pyspark.sql import functions as F

        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1; got {batch_rows}")
        self.sc = unlabeled.sparkSession.sparkContext
        self.batch_rows, self.seed, self.n_features = int(batch_rows), int(seed), n_features
        self.features_col = features_col
        base = unlabeled.select(F.monotonically_increasing_id().alias(ROW_ID),
                                float_array_column(unlabeled, features_col).alias(FEATURES))
        self._persisted = persist
        self.base = base.persist(_storage_level()) if persist else base
        self._count: int | None = None
        self._iteration = 0
        self.fast_fetch = fast_fetch

    # context management -----------------------------------------------------------------
    def close(self) -> None:
        if self._persisted:
            self.base.unpersist()
            self._persisted = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Backend protocol ---------------------------------------------------------------------
    def count(self) -> int:
        if self._count is None:
            with job_description(self.sc, "deepseg: count unlabelled users"):
                self._count = self.base.count()
        return self._count

    def sample_unlabeled(self, max_rows: int | None, seed: int) -> np.ndarray:
        n = self.count()
        df = self.base
        if max_rows is not None and max_rows < n:
            # Oversample a little so that ≥ max_rows rows come back almost surely, then trim.
            fraction = min(1.0, (max_rows + 5.0 * math.sqrt(max_rows) + 20.0) / n)
            df = df.sample(withReplacement=False, fraction=fraction, seed=int(seed))
        with job_description(self.sc, "deepseg: collect TSVM sample"):
            table = _arrow_table(df.select(ROW_ID, FEATURES))
        X = arrow_matrix(table.column(FEATURES), self.n_features, self.features_col)
        if self.n_features is None and len(X):
            self.n_features = X.shape[1]
        if max_rows is not None and len(X) > max_rows:
            idx = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
            X = X[idx]
        return X

    def map(self, fn: Callable, items: Sequence) -> list:
        items = list(items)
        if not items:
            return []
        with job_description(self.sc, f"deepseg: TSVM fits iteration {self._iteration + 1}"):
            return self.sc.parallelize(items, len(items)).map(fn).collect()

    @contextlib.contextmanager
    def pseudo_label(self, labeler: Callable[[np.ndarray], np.ndarray]):
        from pyspark.sql import functions as F

        self._iteration += 1
        it = self._iteration
        n = self.count()
        n_buckets = max(1, math.ceil(n / self.batch_rows))
        bc = self.sc.broadcast(labeler)
        packed = data = None
        try:
            if n_buckets == 1:
                buckets = self.base.coalesce(1)
            else:
                entropy = [self.seed % 2**32, it]
                hash_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)
                buckets = self.base.repartition(n_buckets, F.xxhash64(F.col(ROW_ID), F.lit(hash_seed)))
            fn = partial(_label_and_pack, labeler_bc=bc, n_features=self.n_features,
                         max_rows=self.batch_rows, column=self.features_col)
            packed = buckets.mapInArrow(fn, _PACKED_SCHEMA).persist(_storage_level())
            with job_description(self.sc, f"deepseg: embed+TSVM scores iteration {it}"):
                packed.count()
            data = SparkPseudoLabeled(packed, n_buckets, it, fast=self.fast_fetch)
            yield data
        finally:
            if data is not None:
                data.close()
            if packed is not None:
                packed.unpersist()
            bc.destroy()


# ---------------------------------------------------------------------------------------------
# Training and scoring


def _labelled_arrays(df, features_col: str, label_col: str, n_classes: int | None
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if label_col not in df.columns:
        raise ValueError(f"label column {label_col!r} not in the DataFrame's columns {df.columns}")
    ltype = df.schema[label_col].dataType
    if not isinstance(ltype, T.NumericType):
        raise TypeError(f"label column {label_col!r} must be numeric class indices 0..k-1 "
                        f"(e.g. from StringIndexer); got {ltype.simpleString()}")
    table = _arrow_table(df.filter(_is_labelled(label_col, ltype)).select(
        float_array_column(df, features_col).alias(FEATURES), F.col(label_col)))
    X = arrow_matrix(table.column(FEATURES), None, features_col)
    y = table.column(label_col).to_numpy(zero_copy_only=False).astype(np.float64)
    if len(y) == 0:
        raise ValueError(f"no labelled rows: label column {label_col!r} is null for every row")
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError(f"label column {label_col!r} must hold class indices 0, 1, ..., k-1; "
                         f"got values {np.unique(y)[:10].tolist()}")
    y = y.astype(np.int64)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"label column {label_col!r} has labelled rows of only one class "
                         f"{classes.tolist()}; need at least 2 classes")
    if n_classes is None:
        n_classes = int(classes[-1]) + 1
    elif classes[-1] >= n_classes:
        raise ValueError(f"label column {label_col!r} has class index {int(classes[-1])} "
                         f">= n_classes={n_classes}")
    if len(classes) < n_classes:
        log.warning("label column %r: classes %s have no labelled rows",
                    label_col, sorted(set(range(n_classes)) - set(classes.tolist())))
    return X, y, n_classes


def _is_labelled(label_col: str, ltype):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cond = F.col(label_col).isNotNull()
    if isinstance(ltype, (T.FloatType, T.DoubleType)):
        cond = cond & ~F.isnan(F.col(label_col))
    return cond


def train_on_spark(df, *, features_col: str = "features", label_col: str = "label",
                   n_classes: int | None = None, config: DeepSegConfig = DeepSegConfig(),
                   seed: int = 0, tsvm_sample_size: int | None = None,
                   batch_rows: int = DEFAULT_BATCH_ROWS) -> DeepSegResult:
    """Fit Algorithm 1 on a DataFrame: rows with a label (class index, not null/NaN) are the
    labelled users, collected to the driver; the others stay distributed.

    `n_classes` defaults to the largest label + 1; `tsvm_sample_size` overrides the config's.
    """
    from pyspark.sql import functions as F

    sc = df.sparkSession.sparkContext
    with job_description(sc, "deepseg: collect labelled users"):
        X_l, y_l, n_classes = _labelled_arrays(df, features_col, label_col, n_classes)
    if tsvm_sample_size is not None:
        config = replace(config, tsvm_sample_size=tsvm_sample_size)
    ltype = df.schema[label_col].dataType
    unlabeled = df.filter(~F.coalesce(_is_labelled(label_col, ltype), F.lit(False)))
    log.info("deepseg on Spark: %d labelled users, %d classes, %d features",
             len(X_l), n_classes, X_l.shape[1])
    with SparkBackend(unlabeled, features_col, batch_rows=batch_rows, seed=seed,
                      n_features=X_l.shape[1]) as backend:
        return fit_deep_segmentation(X_l, y_l, backend, n_classes, config, seed)


def score_dataframe(df, model: DeepSegResult | EMAEnsemble, features_col: str = "features",
                    probability_col: str = "propensities", prediction_col: str = "segment",
                    embedding_col: str | None = None):
    """`df` with the EMA propensities (array<float>), the argmax segment (int) and, if
    `embedding_col` is given, the last embedding f(x) (array<float>) appended. Lazy: no collect."""
    from pyspark.sql import types as T

    ensemble = model.ensemble if hasattr(model, "ensemble") else model
    if not isinstance(ensemble, EMAEnsemble):
        raise TypeError(f"model must be a DeepSegResult or an EMAEnsemble; got {type(model).__name__}")
    outputs = [c for c in (probability_col, prediction_col, embedding_col) if c]
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"output columns must differ; got {outputs}")
    clash = [c for c in outputs if c in df.columns]
    if clash:
        raise ValueError(f"output column(s) {clash} already exist in the DataFrame")
    net = ensemble.nets[0]
    keep = list(df.columns)
    schema = T.StructType(
        list(df.schema.fields)
        + [T.StructField(probability_col, T.ArrayType(T.FloatType(), False), False),
           T.StructField(prediction_col, T.IntegerType(), False)]
        + ([T.StructField(embedding_col, T.ArrayType(T.FloatType(), False), False)] if embedding_col else []))
    bc = df.sparkSession.sparkContext.broadcast(ensemble)
    fn = partial(_score_batches, ensemble_bc=bc, keep=keep, n_features=net.f.dense1.in_features,
                 probability_col=probability_col, prediction_col=prediction_col,
                 embedding_col=embedding_col, column=features_col)
    return df.withColumn(FEATURES, float_array_column(df, features_col)).mapInArrow(fn, schema)
