"""Pseudo-labelled users reach the driver in bounded, seeded random buckets, each user once per epoch."""
from __future__ import annotations

import numpy as np
import pytest

from tests.spark.users import indexed_users, untrained_ensemble

pytestmark = pytest.mark.spark


@pytest.mark.parametrize("fast", [True, False], ids=["arrow-partition-fetch", "filter-toArrow"])
def test_pseudo_label_streams_every_row_once_per_epoch_in_bounded_buckets(spark, fast):
    from deepseg.spark.backend import SparkBackend

    n, batch_rows, batch_size = 1000, 128, 50
    X, df = indexed_users(spark, n)
    labeler = untrained_ensemble(X.shape[1])
    with SparkBackend(df, batch_rows=batch_rows, seed=1, fast_fetch=fast) as backend:
        with backend.pseudo_label(labeler) as data:
            fetched = []
            fetch = data.fetch
            data.fetch = lambda b: fetched.append(fetch(b)) or fetched[-1]

            def epoch(seed):
                batches = list(data.batches(batch_size, seed))
                sizes = [len(xb) for xb, _ in batches]
                assert sizes == [batch_size] * (n // batch_size)  # like the in-memory backend
                xs = np.concatenate([xb for xb, _ in batches])
                ps = np.concatenate([pb for _, pb in batches])
                np.testing.assert_allclose(ps, labeler(xs), rtol=1e-6)  # rows keep their labels
                assert sorted(xs[:, 0].astype(int).tolist()) == list(range(n))  # each row once
                return xs[:, 0]

            a, b, a_again = epoch(10), epoch(11), epoch(10)
            np.testing.assert_array_equal(a, a_again)  # seeded
            assert not np.array_equal(a, b)
            assert data.n_buckets == 8
            sizes = [len(f[0]) for f in fetched if f is not None]
            assert sum(sizes) == 3 * n and max(sizes) < n / 2  # never the whole table at once
        assert not data.packed.is_cached  # unpersisted on exit
    assert not backend.base.is_cached


def test_partition_keys_put_bucket_b_in_spark_partition_b(spark):
    """The keys hash-partition exactly as Spark does (Murmur3, seed 42), one bucket per partition."""
    from pyspark.sql import functions as F

    from deepseg.spark.shuffle import partition_keys

    for n in (1, 7, 64):
        keys = partition_keys(n)
        df = spark.createDataFrame([(b, k) for b, k in enumerate(keys)], "bucket int, key int")
        rows = df.repartition(n, "key").select("bucket", F.spark_partition_id().alias("pid")).collect()
        assert sorted((r.bucket, r.pid) for r in rows) == [(b, b) for b in range(n)]


def test_unlabeled_rows_per_epoch_streams_a_fresh_random_subset_each_epoch(spark):
    from deepseg.spark.backend import SparkBackend

    n = 1000
    X, df = indexed_users(spark, n)
    labeler = untrained_ensemble(X.shape[1])
    with SparkBackend(df, batch_rows=100, seed=1) as backend:
        with backend.pseudo_label(labeler) as data:
            epochs = []
            for seed in (0, 1, 0):
                batches = list(data.batches(50, seed, max_rows=300))
                xs = np.concatenate([xb for xb, _ in batches])
                np.testing.assert_allclose(np.concatenate([pb for _, pb in batches]), labeler(xs), rtol=1e-6)
                epochs.append(xs[:, 0].astype(int))
    for ids in epochs:  # 3 of the 10 buckets of ~100 users, each user at most once
        assert 240 <= len(ids) <= 360 and len(set(ids.tolist())) == len(ids)
    assert set(epochs[0].tolist()) != set(epochs[1].tolist())  # a new subset each epoch
    np.testing.assert_array_equal(epochs[0], epochs[2])  # seeded
    stats = backend.stats[0]
    assert stats["streamed_rows"] == sum(len(e) for e in epochs)
    assert stats["pseudo_label_s"] > 0 and stats["unlabeled_epochs_s"] >= stats["stream_wait_s"] >= 0
