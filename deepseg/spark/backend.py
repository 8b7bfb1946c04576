"""Algorithm 1 with the unlabelled users in a Spark DataFrame.

Only data moves here; every number is computed by :mod:`deepseg.core`. The labelled users
(few) are collected to the driver, the unlabelled ones stay distributed:

* the TSVM sample is a seeded DataFrame sample collected through Arrow;
* the per-class TSVMs run as one Spark task each;
* each iteration's pseudo-labels are computed on the executors where the users are (broadcast
  labeller, ``mapInArrow``: one Arrow pass, the cost floor of any Python work on the table);
  each task groups its users into random buckets of about ``batch_rows`` users and emits them
  as packed float32 bytes, so the shuffle that gathers bucket b into partition b moves a few
  large binary values, not rows; the result is persisted. Every epoch the driver fetches the
  buckets one at a time (one single-task job each, the next one prefetched while it trains),
  in a seeded order, and shuffles inside each bucket.

Randomly bucketing (a seeded hash of a row id, new each iteration) then shuffling each bucket is
Rao's two-pass shuffle: each epoch's order is a uniformly random permutation, as in the in-memory
backend; only the epochs of one iteration share their buckets. With one bucket
(``batch_rows >= #users``) the batches are exactly the in-memory backend's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import replace
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepseg.core.loop import DeepSegConfig, DeepSegResult, fit_deep_segmentation
from deepseg.core.pseudo import EMAEnsemble
from deepseg.core.train import embed, torch_threads

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


def _disk_storage_level():
    """Where the backend caches what it reads more than once: the executors' local disks.

    MEMORY_AND_DISK ran the 4 GB local JVM out of heap at 10M users twice (unrolling the input,
    then building the in-memory columnar cache of the pseudo-labels): those buffers are not
    counted by Spark's storage memory, so it does not spill in time. The OS page cache still
    keeps recently written blocks in memory when there is room.
    """
    from pyspark import StorageLevel

    return StorageLevel.DISK_ONLY


# ---------------------------------------------------------------------------------------------
# Executor-side functions (module level: pickled by reference)

_PACKED_SCHEMA = "bucket int, key int, n int, d int, c int, ids binary, x binary, p binary"
_PACKED_NAMES = ["bucket", "key", "n", "d", "c", "ids", "x", "p"]
#: Rows a pseudo-labelling task gathers before it emits them grouped by bucket (bounds its memory).
FLUSH_ROWS = 131072


def bucket_of(row_id: np.ndarray, n_buckets: int, seed: int) -> np.ndarray:
    """Seeded random bucket per row id (splitmix64 of id and seed): independent, uniform."""
    z = row_id.astype(np.uint64) + np.uint64((seed + 1) * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z % np.uint64(n_buckets)).astype(np.int32)


def _murmur3_int(value: int, seed: int = 42) -> int:
    """Spark's Murmur3 hash of an int column (``F.hash``, and what hash partitioning uses)."""
    m = 0xFFFFFFFF

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m

    h = rotl(seed ^ (rotl((value & m) * 0xCC9E2D51 & m, 15) * 0x1B873593 & m), 13)
    h = (h * 5 + 0xE6546B64) & m
    h ^= 4
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & m
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & m
    h ^= h >> 16
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_keys(n: int) -> list[int]:
    """keys[b]: an int that ``repartition(n, key)`` sends to partition b (Spark hash-partitions
    by pmod(Murmur3(key, 42), n)), so that partition b holds exactly bucket b."""
    keys: list[int | None] = [None] * n
    found, value = 0, 0
    while found < n:
        b = _murmur3_int(value) % n
        if keys[b] is None:
            keys[b], found = value, found + 1
        value += 1
    return keys  # type: ignore[return-value]


def _binary(values: np.ndarray, offsets_rows: np.ndarray) -> pa.Array:
    """Rows [offsets[i], offsets[i+1]) of a C-contiguous array as one binary value each (no copy)."""
    row_bytes = values.itemsize * (values.shape[1] if values.ndim > 1 else 1)
    offsets = pa.py_buffer((offsets_rows * row_bytes).astype(np.int32))
    return pa.Array.from_buffers(pa.binary(), len(offsets_rows) - 1,
                                 [None, offsets, pa.py_buffer(np.ascontiguousarray(values))])


def _packed_batch(bucket, key, row_id, X, P, bounds) -> pa.RecordBatch:
    """One packed row per group: rows [bounds[i], bounds[i+1]) of (row_id, X, P)."""
    n = np.diff(bounds).astype(np.int32)
    const = lambda v: pa.array(np.full(len(n), v, np.int32))  # noqa: E731
    return pa.RecordBatch.from_arrays(
        [pa.array(np.asarray(bucket, np.int32)), pa.array(np.asarray(key, np.int32)), pa.array(n),
         const(X.shape[1]), const(P.shape[1]),
         _binary(row_id, bounds), _binary(X, bounds), _binary(P, bounds)], names=_PACKED_NAMES)


def _label_and_pack(batches: Iterator[pa.RecordBatch], labeler_bc, n_buckets: int, hash_seed: int,
                    keys: list[int], n_features: int | None, max_rows: int,
                    column: str = "features") -> Iterator[pa.RecordBatch]:
    """Label the users of one partition (Arrow batch by Arrow batch) and emit them grouped by
    their random bucket: every FLUSH_ROWS users, one packed row (row ids, features and
    probabilities as raw bytes) per bucket, keyed so that hash partitioning puts bucket b in
    partition b. With one bucket (the input coalesced to one partition) the users are sorted
    by row id and labelled at once, exactly as the in-memory backend labels them."""
    labeler = labeler_bc.value
    ids, feats, probs, held = [], [], [], 0
    one = n_buckets == 1

    def flush():
        row_id = np.concatenate(ids)
        X = np.concatenate(feats) if len(feats) > 1 else feats[0]
        if one:
            order = np.argsort(row_id, kind="stable")
            row_id, X = row_id[order], np.ascontiguousarray(X[order])
            with torch_threads(1):
                P = np.ascontiguousarray(labeler(X), dtype=np.float32)
            return [_packed_batch([0], [keys[0]], row_id[a:a + max_rows], X[a:a + max_rows],
                                  P[a:a + max_rows], np.array([0, len(X[a:a + max_rows])]))
                    for a in range(0, len(X), max_rows)]
        P = np.concatenate(probs) if len(probs) > 1 else probs[0]
        bucket = bucket_of(row_id, n_buckets, hash_seed)
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=n_buckets)
        present = np.flatnonzero(counts)
        bounds = np.r_[0, np.cumsum(counts[present])]
        return [_packed_batch(present, np.asarray(keys)[present], np.ascontiguousarray(row_id[order]),
                              np.ascontiguousarray(X[order]), np.ascontiguousarray(P[order]), bounds)]

    for batch in batches:
        if not batch.num_rows:
            continue
        X = arrow_matrix(batch.column(FEATURES), n_features, column)
        ids.append(batch.column(ROW_ID).to_numpy().astype(np.int64))
        feats.append(X)
        if not one:
            with torch_threads(1):  # one core per Spark task
                probs.append(np.asarray(labeler(X), dtype=np.float32))
        held += len(X)
        if held >= FLUSH_ROWS and not one:
            yield from flush()
            ids, feats, probs, held = [], [], [], 0
    if held:
        yield from flush()


def _unpack(table: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    """Packed rows (any order) → (X, P) of their users in row-id order; None if no users."""
    ids, X, P = [], [], []
    for batch in table.to_batches():
        cols = {name: batch.column(name) for name in ("n", "d", "c", "ids", "x", "p")}
        n, d, c = (cols[k].to_numpy() for k in ("n", "d", "c"))
        for i in np.flatnonzero(n):
            ids.append(np.frombuffer(cols["ids"][i].as_buffer(), np.int64))
            X.append(np.frombuffer(cols["x"][i].as_buffer(), np.float32).reshape(n[i], d[i]))
            P.append(np.frombuffer(cols["p"][i].as_buffer(), np.float32).reshape(n[i], c[i]))
    if not ids:
        return None
    if len(ids) == 1:
        return X[0], P[0]
    order = np.argsort(np.concatenate(ids), kind="stable")
    return np.concatenate(X)[order], np.concatenate(P)[order]


def _score_batches(batches: Iterator[pa.RecordBatch], ensemble_bc, keep: list[str], n_features: int,
                   probability_col: str, prediction_col: str, embedding_col: str | None,
                   column: str = "features", source: str = FEATURES) -> Iterator[pa.RecordBatch]:
    ensemble = ensemble_bc.value
    with torch_threads(1):
        for batch in batches:
            X = arrow_matrix(batch.column(source), n_features, column)
            if len(X):
                P, Z = ensemble.predict_with_embedding(X) if embedding_col else (ensemble(X), None)
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


def _embed_batches(batches: Iterator[pa.RecordBatch], net_bc, keep: list[str], n_features: int,
                   embedding_col: str, column: str = "features", source: str = FEATURES
                   ) -> Iterator[pa.RecordBatch]:
    net = net_bc.value
    with torch_threads(1):
        for batch in batches:
            Z = embed(net, arrow_matrix(batch.column(source), n_features, column))
            if not len(Z):
                Z = np.zeros((0, net.f.dense2.out_features), np.float32)
            yield pa.RecordBatch.from_arrays([batch.column(name) for name in keep] + [arrow_list(Z)],
                                             names=keep + [embedding_col])


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

    def __init__(self, packed, n_buckets: int, iteration: int = 0, fast: bool = True,
                 n_rows: int | None = None):
        self.packed, self.n_buckets, self.iteration, self.n_rows = packed, n_buckets, iteration, n_rows
        self.sc = packed.sparkSession.sparkContext
        # driver time in epochs (training included), blocked on fetches; rows yielded
        self.epochs_s, self.wait_s, self.streamed_rows = 0.0, 0.0, 0
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
            fetch_partition = self._fetch_partition
            if fetch_partition is not None:
                table = fetch_partition(bucket)
                found = pc.unique(table.column("bucket")).to_pylist() if table.num_rows else []
                if found and found != [bucket]:  # this Spark does not hash-partition as expected
                    log.warning("partition %d holds buckets %s; using filter + toArrow", bucket, found)
                    self._fetch_partition = fetch_partition = None
            if fetch_partition is None:
                table = _arrow_table(self.packed.filter(F.col("bucket") == bucket))
        return _unpack(table)

    def batches(self, batch_size: int, seed: int, max_rows: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch: buckets in a seeded order, each shuffled; <= 2 buckets on the driver at once.

        With `max_rows` (< the users) only the first ceil(max_rows · buckets / users) buckets of
        the seeded order are used: a fresh random subset of users every epoch.
        """
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        order = [int(b) for b in rng.permutation(self.n_buckets)]
        n = self.n_rows
        if max_rows is not None and n and max_rows < n:
            order = order[:max(1, math.ceil(max_rows * self.n_buckets / n))]
        pending = self._prefetch(order[0]) if order else None
        carry = None
        try:
            for i in range(len(order)):
                t = time.perf_counter()
                bucket = pending.result()
                self.wait_s += time.perf_counter() - t
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
                self.streamed_rows += full
                for start in range(0, full, batch_size):
                    yield X[start:start + batch_size], P[start:start + batch_size]
                carry = (X[full:], P[full:]) if full < len(X) else None
            if carry is not None:
                self.streamed_rows += len(carry[0])
                yield carry
        finally:  # an abandoned epoch must not leave a fetch running
            if pending is not None:
                pending.wait()
                self._inflight.discard(pending)
            self.epochs_s += time.perf_counter() - started

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

    `stats` holds one dict per pseudo-labelling pass: `pseudo_label_s` (the Spark pass that
    embeds and labels every user), `unlabelled_epochs_s` (the retraining epochs on them, all
    included), `stream_wait_s` (of which the driver was blocked on bucket fetches),
    `streamed_rows` (unlabelled rows trained on, all epochs).
    """

    def __init__(self, unlabeled, features_col: str = "features", batch_rows: int = DEFAULT_BATCH_ROWS,
                 seed: int = 0, n_features: int | None = None, persist: bool = True,
                 fast_fetch: bool = True):
        from pyspark.sql import functions as F

        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1; got {batch_rows}")
        self.stats: list[dict] = []
        self.sc = unlabeled.sparkSession.sparkContext
        self.batch_rows, self.seed, self.n_features = int(batch_rows), int(seed), n_features
        self.features_col = features_col
        base = unlabeled.select(F.monotonically_increasing_id().alias(ROW_ID),
                                float_array_column(unlabeled, features_col).alias(FEATURES))
        self._persisted = persist
        self.base = base.persist(_disk_storage_level()) if persist else base
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

    def resume_from(self, iteration: int) -> None:
        """Continue a checkpointed run after `iteration` iterations (the buckets' hash seeds
        are numbered by iteration)."""
        self._iteration = int(iteration)

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
            entropy = [self.seed % 2**32, it]
            hash_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)
            keys = partition_keys(n_buckets)
            fn = partial(_label_and_pack, labeler_bc=bc, n_buckets=n_buckets, hash_seed=hash_seed,
                         keys=keys, n_features=self.n_features, max_rows=self.batch_rows,
                         column=self.features_col)
            if n_buckets == 1:
                packed = self.base.coalesce(1).mapInArrow(fn, _PACKED_SCHEMA)
            else:  # label where the users are, then move only packed bytes: bucket b → partition b
                packed = self.base.mapInArrow(fn, _PACKED_SCHEMA).repartition(n_buckets, F.col("key"))
            packed = packed.persist(_disk_storage_level())
            t = time.perf_counter()
            with job_description(self.sc, f"deepseg: embed+TSVM scores iteration {it}"):
                packed.count()
            seconds = time.perf_counter() - t
            data = SparkPseudoLabeled(packed, n_buckets, it, fast=self.fast_fetch, n_rows=n)
            yield data
        finally:
            if data is not None:
                data.close()
                self.stats.append({"pseudo_label_s": seconds, "unlabelled_epochs_s": data.epochs_s,
                                   "stream_wait_s": data.wait_s, "streamed_rows": data.streamed_rows})
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
                   unlabeled_rows_per_epoch: int | None = None,
                   batch_rows: int = DEFAULT_BATCH_ROWS, checkpoint=None) -> DeepSegResult:
    """Fit Algorithm 1 on a DataFrame: rows with a label (class index, not null/NaN) are the
    labelled users, collected to the driver; the others stay distributed.

    `n_classes` defaults to the largest label + 1; `tsvm_sample_size` overrides the config's;
    `checkpoint` is passed to :func:`~deepseg.core.loop.fit_deep_segmentation` (save/resume).
    `unlabeled_rows_per_epoch` overrides the config's cap on the users each retraining epoch
    streams (``TrainConfig.unlabeled_rows_per_epoch``). Each iteration's history entry also gets the
    backend's timings (`pseudo_label_s`, `unlabelled_epochs_s`, `stream_wait_s`, `streamed_rows`).
    """
    from pyspark.sql import functions as F

    sc = df.sparkSession.sparkContext
    with job_description(sc, "deepseg: collect labelled users"):
        X_l, y_l, n_classes = _labelled_arrays(df, features_col, label_col, n_classes)
    if tsvm_sample_size is not None:
        config = replace(config, tsvm_sample_size=tsvm_sample_size)
    if unlabeled_rows_per_epoch is not None:
        config = replace(config, train=replace(config.train, unlabeled_rows_per_epoch=unlabeled_rows_per_epoch))
    ltype = df.schema[label_col].dataType
    unlabeled = df.filter(~F.coalesce(_is_labelled(label_col, ltype), F.lit(False)))
    log.info("deepseg on Spark: %d labelled users, %d classes, %d features",
             len(X_l), n_classes, X_l.shape[1])
    if config.train.unlabeled_rows_per_epoch is not None:
        log.info("retraining streams about %d unlabelled users per epoch",
                 config.train.unlabeled_rows_per_epoch)
    with SparkBackend(unlabeled, features_col, batch_rows=batch_rows, seed=seed,
                      n_features=X_l.shape[1]) as backend:
        result = fit_deep_segmentation(X_l, y_l, backend, n_classes, config, seed, checkpoint=checkpoint)
    if backend.stats:  # this run's passes are the last iterations (earlier ones may be restored)
        for entry, stats in zip(result.history[-len(backend.stats):], backend.stats):
            entry.update(stats)
    return result


def _mapped_inputs(df, features_col: str, keep_columns: Sequence[str] | None, outputs: list[str]):
    """(kept columns, features source column, input DataFrame) for a mapInArrow that appends
    `outputs` to the kept columns of `df`; the features converted to array<float> once."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    features = float_array_column(df, features_col)
    col = lambda name: F.col("`" + name.replace("`", "``") + "`")  # noqa: E731 - any column name
    keep = list(df.columns) if keep_columns is None else list(dict.fromkeys(keep_columns))
    missing = [c for c in keep if c not in df.columns]
    if missing:
        raise ValueError(f"keep_columns {missing} not in the DataFrame's columns {df.columns}")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"output columns must differ; got {outputs}")
    clash = [c for c in outputs if c in keep]
    if clash:
        raise ValueError(f"output column(s) {clash} already exist in the DataFrame")
    dtype = df.schema[features_col].dataType
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.FloatType):
        return keep, features_col, df.select(*map(col, dict.fromkeys(keep + [features_col])))
    # one converted copy of the features, the original only if kept
    return keep, FEATURES, df.select(*map(col, keep), features.alias(FEATURES))


def _float_array_field(name: str):
    from pyspark.sql import types as T

    return T.StructField(name, T.ArrayType(T.FloatType(), False), False)


def _ensemble_of(model) -> EMAEnsemble:
    ensemble = model.ensemble if hasattr(model, "ensemble") else model
    if not isinstance(ensemble, EMAEnsemble):
        raise TypeError(f"model must be a DeepSegResult or an EMAEnsemble; got {type(model).__name__}")
    return ensemble


def score_dataframe(df, model: DeepSegResult | EMAEnsemble, features_col: str = "features",
                    probability_col: str = "propensities", prediction_col: str = "segment",
                    embedding_col: str | None = None, keep_columns: Sequence[str] | None = None):
    """`df` with the EMA propensities (array<float>), the argmax segment (int) and, if
    `embedding_col` is given, the last embedding f(x) (array<float>) appended. Lazy: no collect.

    `keep_columns` (default: all) are the columns of `df` carried into the output: leaving out
    the features column spares sending every user's features back from Python to the JVM.
    """
    from pyspark.sql import types as T

    ensemble = _ensemble_of(model)
    outputs = [c for c in (probability_col, prediction_col, embedding_col) if c]
    keep, source, inputs = _mapped_inputs(df, features_col, keep_columns, outputs)
    schema = T.StructType(
        [df.schema[c] for c in keep]
        + [_float_array_field(probability_col), T.StructField(prediction_col, T.IntegerType(), False)]
        + ([_float_array_field(embedding_col)] if embedding_col else []))
    bc = df.sparkSession.sparkContext.broadcast(ensemble)
    fn = partial(_score_batches, ensemble_bc=bc, keep=keep, n_features=ensemble.nets[0].f.dense1.in_features,
                 probability_col=probability_col, prediction_col=prediction_col,
                 embedding_col=embedding_col, column=features_col, source=source)
    return inputs.mapInArrow(fn, schema)


def embed_dataframe(df, model: DeepSegResult | EMAEnsemble, features_col: str = "features",
                    embedding_col: str = "embedding", keep_columns: Sequence[str] | None = None):
    """`df` with the embedding f(x) of the model's last iteration appended (array<float>): the
    space the TSVMs separate, e.g. for look-alike search or clustering. Lazy: no collect.
    `keep_columns` as in :func:`score_dataframe`."""
    from pyspark.sql import types as T

    net = _ensemble_of(model).nets[-1]
    keep, source, inputs = _mapped_inputs(df, features_col, keep_columns, [embedding_col])
    schema = T.StructType([df.schema[c] for c in keep] + [_float_array_field(embedding_col)])
    bc = df.sparkSession.sparkContext.broadcast(net)
    fn = partial(_embed_batches, net_bc=bc, keep=keep, n_features=net.f.dense1.in_features,
                 embedding_col=embedding_col, column=features_col, source=source)
    return inputs.mapInArrow(fn, schema)
