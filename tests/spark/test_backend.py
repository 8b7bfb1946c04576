"""The Spark backend moves data only: same seed, same answer as the in-memory backend."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from deepseg.core._local import LocalBackend
from deepseg.core.embed import SegmentationNet
from deepseg.core.loop import DeepSegConfig, fit_deep_segmentation
from deepseg.core.pseudo import EMAEnsemble, frozen_copy
from deepseg.core.train import TrainConfig

pytestmark = pytest.mark.spark

#: tests/conftest.py's FAST settings, with small unlabelled batches so that batch order matters
#: and in-sample TSVM temperatures (3 TSVM tasks per iteration instead of 12).
CONFIG = DeepSegConfig(n_iter=2, tsvm_calibration_folds=0, train=TrainConfig(
    supervised_epochs=30, unlabeled_epochs=2, labeled_epochs=2, unlabeled_batch_size=32))


@pytest.fixture(scope="module")
def blobs():
    """600 users, 8 features, 3 segments, 5 labelled per segment; label None = unlabelled."""
    X, y_true = make_classification(600, 8, n_informative=4, n_redundant=0, n_classes=3,
                                    n_clusters_per_class=1, class_sep=2.0, random_state=0)
    X = X.astype(np.float32)
    y = np.full_like(y_true, -1)
    for k in range(3):
        y[np.flatnonzero(y_true == k)[:5]] = k
    return X, y


@pytest.fixture(scope="module")
def blobs_df(spark, blobs):
    X, y = blobs
    rows = [(i, x.tolist(), int(label) if label >= 0 else None) for i, (x, label) in enumerate(zip(X, y))]
    return spark.createDataFrame(rows, "id long, features array<float>, label int")


@pytest.fixture(scope="module")
def local_result(blobs):
    X, y = blobs
    lab = y != -1
    return fit_deep_segmentation(X[lab], y[lab], LocalBackend(X[~lab]), 3, CONFIG, seed=3)


def test_one_bucket_reproduces_the_in_memory_backend_exactly(blobs, blobs_df, local_result):
    """batch_rows >= #unlabelled: one bucket, whose permutation is the in-memory backend's."""
    from deepseg.spark.backend import train_on_spark

    X, _ = blobs
    result = train_on_spark(blobs_df, features_col="features", label_col="label", n_classes=3,
                            config=CONFIG, seed=3, batch_rows=10_000)
    np.testing.assert_array_equal(result.ensemble(X), local_result.ensemble(X))
    np.testing.assert_array_equal(result.tsvm.coef, local_result.tsvm.coef)


def test_many_buckets_agree_with_the_in_memory_backend(blobs, blobs_df, local_result):
    """Four buckets: another (equally uniform) batch order, so near-equal, not equal, answers.
    Measured: 99.8-100% of segments agree, as between two in-memory runs whose batch orders differ."""
    from deepseg.spark.backend import train_on_spark

    X, _ = blobs
    result = train_on_spark(blobs_df, features_col="features", label_col="label",
                            config=CONFIG, seed=3, batch_rows=150)
    agreement = np.mean(result.ensemble(X).argmax(1) == local_result.ensemble(X).argmax(1))
    assert agreement >= 0.99


def _indexed(spark, n, d=3):
    """Users whose first feature is their index (exact in float32)."""
    X = np.column_stack([np.arange(n), np.random.default_rng(0).normal(size=(n, d - 1))]).astype(np.float32)
    return X, spark.createDataFrame([(x.tolist(),) for x in X], "features array<float>")


def _ensemble(d, c=4):
    return EMAEnsemble([frozen_copy(SegmentationNet(d, c))], 0.8)


@pytest.mark.parametrize("fast", [True, False], ids=["arrow-partition-fetch", "filter-toArrow"])
def test_pseudo_label_streams_every_row_once_per_epoch_in_bounded_buckets(spark, fast):
    from deepseg.spark.backend import SparkBackend

    n, batch_rows, batch_size = 1000, 128, 50
    X, df = _indexed(spark, n)
    labeler = _ensemble(X.shape[1])
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


def test_sample_and_map(spark):
    from deepseg.spark.backend import SparkBackend

    X, df = _indexed(spark, 500)
    with SparkBackend(df) as backend:
        np.testing.assert_array_equal(backend.sample_unlabeled(None, 0), X)
        np.testing.assert_array_equal(backend.sample_unlabeled(10_000, 0), X)
        sample = backend.sample_unlabeled(100, seed=4)
        assert sample.shape == (100, 3)
        np.testing.assert_array_equal(sample, X[sample[:, 0].astype(int)])  # real rows
        np.testing.assert_array_equal(backend.sample_unlabeled(100, seed=4), sample)
        assert backend.map(abs, [-1, -2, 3]) == [1, 2, 3]


def test_score_dataframe_appends_columns_without_collecting(spark):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    from deepseg.spark.backend import score_dataframe

    X, _ = _indexed(spark, 300)
    schema = T.StructType([T.StructField("id", T.LongType()),
                           T.StructField("features", T.ArrayType(T.DoubleType())),
                           T.StructField("vec", VectorUDT())])
    df = spark.createDataFrame([(i, x.tolist(), Vectors.dense(x.tolist())) for i, x in enumerate(X)], schema)
    ensemble = _ensemble(3)
    for column in ("features", "vec"):
        out = score_dataframe(df, ensemble, column, embedding_col="embedding")
        types = {f.name: f.dataType for f in out.schema.fields}
        assert out.columns[:3] == df.columns
        assert types["propensities"] == T.ArrayType(T.FloatType(), False)
        assert types["segment"] == T.IntegerType()
        assert types["embedding"] == T.ArrayType(T.FloatType(), False)
        rows = sorted(out.select("id", "propensities", "segment", "embedding").collect())
        P = np.array([r.propensities for r in rows])
        np.testing.assert_allclose(P, ensemble(X), rtol=1e-5, atol=1e-7)
        assert [r.segment for r in rows] == ensemble(X).argmax(1).tolist()
        np.testing.assert_allclose(np.array([r.embedding for r in rows]), ensemble.embed(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already exist"):
        score_dataframe(df, ensemble, "features", probability_col="id")
    with pytest.raises(TypeError, match="'id'"):
        score_dataframe(df, ensemble, "id")


def test_train_on_spark_names_the_label_column_when_labels_are_missing(spark):
    from deepseg.spark.backend import train_on_spark

    X, _ = _indexed(spark, 50)
    none = spark.createDataFrame([(x.tolist(), None) for x in X], "features array<float>, segment_label int")
    with pytest.raises(ValueError, match="'segment_label'.*null for every row"):
        train_on_spark(none, label_col="segment_label", config=CONFIG)
    one = spark.createDataFrame([(x.tolist(), 1 if i < 5 else None) for i, x in enumerate(X)],
                                "features array<float>, segment_label int")
    with pytest.raises(ValueError, match="'segment_label'.*only one class"):
        train_on_spark(one, label_col="segment_label", config=CONFIG)


# ------------------------------------------------------------------ scale knobs (benchmarks/scale.py)
def test_partition_keys_put_bucket_b_in_spark_partition_b(spark):
    """The keys hash-partition exactly as Spark does (Murmur3, seed 42), one bucket per partition."""
    from pyspark.sql import functions as F

    from deepseg.spark.backend import partition_keys

    for n in (1, 7, 64):
        keys = partition_keys(n)
        df = spark.createDataFrame([(b, k) for b, k in enumerate(keys)], "bucket int, key int")
        rows = df.repartition(n, "key").select("bucket", F.spark_partition_id().alias("pid")).collect()
        assert sorted((r.bucket, r.pid) for r in rows) == [(b, b) for b in range(n)]


def test_unlabeled_rows_per_epoch_streams_a_fresh_random_subset_each_epoch(spark):
    from deepseg.spark.backend import SparkBackend

    n = 1000
    X, df = _indexed(spark, n)
    labeler = _ensemble(X.shape[1])
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
    assert stats["pseudo_label_s"] > 0 and stats["unlabelled_epochs_s"] >= stats["stream_wait_s"] >= 0


def test_score_dataframe_keep_columns(spark):
    from deepseg.spark.backend import score_dataframe

    X, _ = _indexed(spark, 200)
    df = spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(X)], "id long, features array<float>")
    ensemble = _ensemble(3)
    out = score_dataframe(df, ensemble, keep_columns=["id"])
    assert out.columns == ["id", "propensities", "segment"]
    rows = sorted(out.collect())
    np.testing.assert_allclose(np.array([r.propensities for r in rows]), ensemble(X), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"keep_columns \['nope'\]"):
        score_dataframe(df, ensemble, keep_columns=["nope"])


def test_embed_dataframe_appends_the_last_iterations_embedding(spark):
    from deepseg.core.train import embed
    from deepseg.spark.backend import embed_dataframe

    X, _ = _indexed(spark, 200)
    df = spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(X)], "id long, features array<double>")
    ensemble = EMAEnsemble([frozen_copy(SegmentationNet(3, 4)) for _ in range(2)], 0.8)
    out = embed_dataframe(df, ensemble, embedding_col="z", keep_columns=["id"])
    assert out.columns == ["id", "z"]
    rows = sorted(out.collect())
    np.testing.assert_allclose(np.array([r.z for r in rows]), embed(ensemble.nets[-1], X), rtol=1e-5, atol=1e-6)
    assert not np.allclose(embed(ensemble.nets[0], X), embed(ensemble.nets[-1], X))
    with pytest.raises(ValueError, match=r"already exist"):
        embed_dataframe(df, ensemble, embedding_col="id", keep_columns=["id"])
