"""Streaming each iteration's pseudo-labelled users from the executors to the driver.

The pseudo-labels are computed on the executors where the users are (broadcast labeller,
``mapInArrow``: one Arrow pass, the cost floor of any Python work on the table); each task groups
its users into random buckets of about ``batch_rows`` users and emits them as packed float32
bytes, so the shuffle that gathers bucket b into partition b moves a few large binary values, not
rows; the result is persisted. Every epoch the driver fetches the buckets one at a time (one
single-task job each, the next one prefetched while it trains), in a seeded order, and shuffles
inside each bucket.

Randomly bucketing (a seeded hash of a row id, new each iteration) then shuffling each bucket is
Rao's two-pass shuffle: each epoch's order is a uniformly random permutation, as in the in-memory
backend; only the epochs of one iteration share their buckets. With one bucket
(``batch_rows >= #users``) the batches are exactly the in-memory backend's.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepseg.core.train import torch_threads
from deepseg.spark.arrow import FEATURES, ROW_ID, arrow_matrix, job_description

log = logging.getLogger("deepseg")


# ---------------------------------------------------------------------------------------------
# Executor-side functions (module level: pickled by reference)

#: One packed row per bucket a task flushes: the users' row ids, features and probabilities as bytes.
PACKED_SCHEMA = "bucket int, key int, n int, d int, c int, ids binary, x binary, p binary"
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


def label_and_pack(batches: Iterator[pa.RecordBatch], labeler_bc, n_buckets: int, hash_seed: int,
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


# ---------------------------------------------------------------------------------------------
# Streaming the buckets to the driver


def partition_fetcher(df) -> Callable[[int], pa.Table] | None:
    """fetch(i): partition i of `df` as an Arrow table, in one single-task job.

    Uses classic PySpark internals (Dataset.toArrowBatchRdd, PythonRDD.runJob): faster than
    DataFrame.rdd (which pickles rows) and without the K tasks per fetch of a filter + toArrow. Returns None where they are unavailable (e.g. Spark Connect).
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
                table = self.packed.filter(F.col("bucket") == bucket).toArrow()
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
