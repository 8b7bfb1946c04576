"""Algorithm 1 with the unlabelled users in a Spark DataFrame.

Only data moves here; every number is computed by :mod:`deepseg.core`. The labelled users
(few) are collected to the driver, the unlabelled ones stay distributed:

* the TSVM sample is a seeded DataFrame sample collected through Arrow;
* the per-class TSVMs run as one Spark task each;
* each iteration's pseudo-labels are computed on the executors where the users are and streamed
  to the driver one random bucket at a time for retraining (:mod:`deepseg.spark.shuffle`).

Scoring and embedding a DataFrame with the fitted model is :mod:`deepseg.spark.scoring`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import replace
from functools import partial
from typing import Callable, Sequence

import numpy as np

from deepseg.core.loop import DeepSegConfig, DeepSegResult, fit_deep_segmentation
from deepseg.spark.arrow import (FEATURES, ROW_ID, arrow_matrix, float_array_column, is_labeled,
                                 job_description)
from deepseg.spark.shuffle import PACKED_SCHEMA, SparkPseudoLabeled, label_and_pack, partition_keys

log = logging.getLogger("deepseg")

DEFAULT_BATCH_ROWS = 32768


def _disk_storage_level():
    """Where the backend caches what it reads more than once: the executors' local disks.

    Not MEMORY_AND_DISK: unrolling the input and building the in-memory columnar cache of the
    pseudo-labels use buffers that Spark's storage memory does not count, so on tens of millions
    of users it does not spill in time and the JVM runs out of heap. The OS page cache still
    keeps recently written blocks in memory when there is room.
    """
    from pyspark import StorageLevel

    return StorageLevel.DISK_ONLY


class SparkBackend:
    """Backend over a DataFrame of unlabelled users with an array<float> (or double) features column.

    `batch_rows` bounds the users the driver holds per bucket when streaming pseudo-labels
    (driver memory ≈ 3 · batch_rows · (n_features + n_classes) · 4 bytes). The input is
    persisted while the backend is open; use it as a context manager (or call `close`).

    `stats` holds one dict per pseudo-labelling pass: `pseudo_label_s` (the Spark pass that
    embeds and labels every user), `unlabeled_epochs_s` (the retraining epochs on them, all
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
            table = df.select(ROW_ID, FEATURES).toArrow()
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
            fn = partial(label_and_pack, labeler_bc=bc, n_buckets=n_buckets, hash_seed=hash_seed,
                         keys=keys, n_features=self.n_features, max_rows=self.batch_rows,
                         column=self.features_col)
            if n_buckets == 1:
                packed = self.base.coalesce(1).mapInArrow(fn, PACKED_SCHEMA)
            else:  # label where the users are, then move only packed bytes: bucket b → partition b
                packed = self.base.mapInArrow(fn, PACKED_SCHEMA).repartition(n_buckets, F.col("key"))
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
                self.stats.append({"pseudo_label_s": seconds, "unlabeled_epochs_s": data.epochs_s,
                                   "stream_wait_s": data.wait_s, "streamed_rows": data.streamed_rows})
            if packed is not None:
                packed.unpersist()
            bc.destroy()


# ---------------------------------------------------------------------------------------------
# Training


def _labeled_arrays(df, features_col: str, label_col: str, n_classes: int | None
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if label_col not in df.columns:
        raise ValueError(f"label column {label_col!r} not in the DataFrame's columns {df.columns}")
    ltype = df.schema[label_col].dataType
    if not isinstance(ltype, T.NumericType):
        raise TypeError(f"label column {label_col!r} must be numeric class indices 0..k-1 "
                        f"(e.g. from StringIndexer); got {ltype.simpleString()}")
    table = df.filter(is_labeled(label_col, ltype)).select(
        float_array_column(df, features_col).alias(FEATURES), F.col(label_col)).toArrow()
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
    backend's timings (`pseudo_label_s`, `unlabeled_epochs_s`, `stream_wait_s`, `streamed_rows`).
    """
    from pyspark.sql import functions as F

    sc = df.sparkSession.sparkContext
    with job_description(sc, "deepseg: collect labelled users"):
        X_l, y_l, n_classes = _labeled_arrays(df, features_col, label_col, n_classes)
    if tsvm_sample_size is not None:
        config = replace(config, tsvm_sample_size=tsvm_sample_size)
    if unlabeled_rows_per_epoch is not None:
        config = replace(config, train=replace(config.train, unlabeled_rows_per_epoch=unlabeled_rows_per_epoch))
    ltype = df.schema[label_col].dataType
    unlabeled = df.filter(~F.coalesce(is_labeled(label_col, ltype), F.lit(False)))
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
