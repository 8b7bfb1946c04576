"""DeepSegmentation in pyspark.ml Pipelines: fit, transform, save, load."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from sklearn.datasets import make_moons

pytestmark = pytest.mark.spark

#: tests/conftest.py's FAST settings
FAST = dict(supervisedEpochs=30, numIter=2, unlabeledEpochs=2, labeledEpochs=2)


@pytest.fixture(scope="module")
def users(spark):
    """Two moons as columns x0, x1; 4 labelled users per class, the rest with a null label."""
    X, y_true = make_moons(300, noise=0.08, random_state=0)
    labeled = np.zeros(len(X), bool)
    for k in (0, 1):
        labeled[np.flatnonzero(y_true == k)[:4]] = True
    rows = [(i, float(x[0]), float(x[1]), float(y) if lab else None)
            for i, (x, y, lab) in enumerate(zip(X, y_true, labeled))]
    return spark.createDataFrame(rows, "id long, x0 double, x1 double, label double")


@pytest.fixture(scope="module")
def pipeline_model(users):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    from deepseg.spark.ml import DeepSegmentation

    stages = [VectorAssembler(inputCols=["x0", "x1"], outputCol="features"),
              DeepSegmentation(embeddingCol="embedding", seed=0, **FAST)]
    return Pipeline(stages=stages).fit(users)


def _rows(df):
    return [r.asDict() for r in df.orderBy("id").select("id", "probability", "prediction", "embedding").collect()]


def test_pipeline_appends_typed_columns(users, pipeline_model):
    from pyspark.sql import types as T

    out = pipeline_model.transform(users)
    types = {f.name: f.dataType for f in out.schema.fields}
    assert out.columns == users.columns + ["features", "probability", "prediction", "embedding"]
    assert types["probability"] == T.ArrayType(T.FloatType(), False)
    assert types["prediction"] == T.IntegerType()
    assert types["embedding"] == T.ArrayType(T.FloatType(), False)
    rows = _rows(out)
    P = np.array([r["probability"] for r in rows])
    assert P.shape == (300, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)
    assert [r["prediction"] for r in rows] == P.argmax(1).tolist()
    assert len(rows[0]["embedding"]) == 32
    model = pipeline_model.stages[-1]
    assert model.numClasses == 2 and model.numFeatures == 2 and len(model.history) == 2


def test_save_load_gives_identical_transform_and_no_pickle(users, pipeline_model, tmp_path):
    from pyspark.ml import PipelineModel

    path = str(tmp_path / "segmentation")
    pipeline_model.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    assert _rows(loaded.transform(users)) == _rows(pipeline_model.transform(users))
    assert loaded.stages[-1].getOrDefault("numIter") == 2

    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    assert any(f.endswith("deepseg-model.json") for f in files)
    for f in files:
        assert not f.endswith((".pkl", ".pickle", ".pt", ".pth")), f
        with open(f, "rb") as fh:
            assert not fh.read(2).startswith(b"\x80"), f"{f} looks like a pickle"
        if zipfile.is_zipfile(f):
            members = zipfile.ZipFile(f).namelist()
            assert all(m.endswith(".npy") for m in members), members


def test_estimator_save_load_keeps_params(tmp_path):
    from deepseg.spark.ml import DeepSegmentation

    est = DeepSegmentation(numIter=3, CUnlabeled=0.5, l2=[0.1, 0.2, 0.3], tsvmSampleSize=1000, seed=7)
    est.save(str(tmp_path / "est"))
    again = DeepSegmentation.load(str(tmp_path / "est"))
    assert again.uid == est.uid
    assert again.toConfig() == est.toConfig()
    assert again.getSeed() == 7


@pytest.mark.parametrize("param, value, error", [
    ("numIter", -1, ValueError), ("dropout", 1.5, ValueError), ("hiddenSize", 0, ValueError),
    ("l2", [1e-3], ValueError), ("emaDecay", 1.0, ValueError), ("tsvmSampleSize", 0, ValueError),
    ("batchRows", 0, ValueError), ("learningRate", "fast", TypeError), ("inputNoise", "loud", TypeError),
    ("inputNoise", -0.1, ValueError), ("unlabeledEpochs", "many", TypeError), ("unlabeledEpochs", -1, ValueError),
    ("sparseComponents", -1, ValueError),
])
def test_bad_param_values_raise_errors_naming_the_param(param, value, error):
    from deepseg.spark.ml import DeepSegmentation

    with pytest.raises(error, match=param):
        DeepSegmentation(**{param: value})
    est = DeepSegmentation()
    with pytest.raises(error, match=param):
        getattr(est, "set" + param[0].upper() + param[1:])(value)
    if error is ValueError:  # Params.set bypasses the setters: caught when fitting
        est.set(est.getParam(param), value)
        with pytest.raises(ValueError, match=param):
            est.toConfig()


def test_load_refuses_unknown_format_versions(pipeline_model, tmp_path):
    from deepseg.spark.persistence import MODEL_FILE, load_model, save_model

    path = tmp_path / "m"
    save_model(pipeline_model.stages[-1].result, path, {"owner": "tests"})
    model, metadata = load_model(path)
    assert metadata == {"owner": "tests"}
    with pytest.raises(FileExistsError):
        save_model(model, path)
    document = json.loads((path / MODEL_FILE).read_text())
    document["format_version"] = 99
    (path / MODEL_FILE).write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"format version 99.*\[1, 2, 3, 4, 5, 6\]") as info:
        load_model(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ input validation at fit
def _with(users, column, value, n=3):
    from pyspark.sql import functions as F

    return users.withColumn(column, F.when(F.col("id") < n, F.lit(value)).otherwise(F.col(column)))


@pytest.mark.parametrize("value, match", [
    (float("nan"), "3 row\\(s\\) with null, NaN or ±inf"),
    (float("inf"), "3 row\\(s\\) with null, NaN or ±inf"),
    (float("-inf"), "3 row\\(s\\) with null, NaN or ±inf"),
])
def test_fit_refuses_non_finite_features(users, value, match):
    from pyspark.ml.feature import VectorAssembler

    from deepseg.spark.ml import DeepSegmentation

    bad = VectorAssembler(inputCols=["x0", "x1"], outputCol="features", handleInvalid="keep").transform(
        _with(users, "x1", value))
    with pytest.raises(ValueError, match="Param 'featuresCol' of DeepSegmentation: column 'features' has " + match):
        DeepSegmentation(seed=0, **FAST).fit(bad)


def test_fit_refuses_null_feature_rows_and_one_class(users):
    from pyspark.sql import functions as F

    from deepseg.spark.ml import DeepSegmentation

    arrays = users.withColumn("features", F.array("x0", "x1"))
    nulls = arrays.withColumn("features", F.when(F.col("id") == 5, F.lit(None)).otherwise(F.col("features")))
    with pytest.raises(ValueError, match="column 'features' has 1 null row"):
        DeepSegmentation(seed=0, **FAST).fit(nulls)
    one_class = arrays.withColumn("label", F.when(F.col("label") == 0, F.col("label")))
    with pytest.raises(ValueError, match=r"only one class \[0\]; need at least 2"):
        DeepSegmentation(seed=0, **FAST).fit(one_class)
    with pytest.raises(ValueError, match="Param 'labelCol' of DeepSegmentation: column 'segment' not in"):
        DeepSegmentation(labelCol="segment", seed=0, **FAST).fit(arrays)


def test_fit_without_unlabeled_rows_warns_and_fits(users):
    """As DeepSegmentationClassifier: a warning, and the fit runs on the labelled rows."""
    from pyspark.sql import functions as F

    from deepseg.spark.ml import DeepSegmentation

    labeled = users.filter(F.col("label").isNotNull()).withColumn("features", F.array("x0", "x1"))
    with pytest.warns(UserWarning, match="no unlabelled row"):
        model = DeepSegmentation(seed=0, **FAST).fit(labeled)
    assert model.numClasses == 2 and len(model.transform(labeled).collect()) == 8


def test_load_refuses_pickled_artefacts_without_running_them(pipeline_model, tmp_path):
    """A pickle (or an object array, which numpy pickles) in place of the weights is refused
    before anything in it runs: loading never unpickles."""
    import pickle
    from pathlib import Path

    from deepseg.spark.persistence import WEIGHTS_FILE, load_model, save_model

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "m"
    save_model(pipeline_model.stages[-1].result, path)
    (path / WEIGHTS_FILE).write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="refusing .*pickled.*never unpickles"):
        load_model(path)
    with open(path / WEIGHTS_FILE, "wb") as fh:  # a valid .npz holding an object array
        np.savez(fh, **{"supervised/x": np.array([Payload()], dtype=object)})
    with pytest.raises(ValueError, match="refusing .*Object arrays cannot be loaded"):
        load_model(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def sparse_users(spark):
    """600 users, 300-wide sparse Vectors (~5% non-zero; a block of columns per segment), 3
    segments, 8 labelled users each: tests/core/test_sparse.py's `wide` rows."""
    import scipy.sparse as sp
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(0)
    n, d, c = 600, 300, 3
    y_true = rng.integers(0, c, n)
    X = sp.random(n, d, density=0.03, random_state=1, format="lil", dtype=np.float32)
    for k in range(c):
        rows = np.flatnonzero(y_true == k)
        for r, cs in zip(rows, rng.integers(k * 100, k * 100 + 100, size=(len(rows), 6))):
            X[r, cs] = rng.exponential(1.0, size=len(cs)) + 0.5
    X = X.tocsr()
    labeled = np.zeros(n, bool)
    for k in range(c):
        labeled[np.flatnonzero(y_true == k)[:8]] = True
    rows = [(i, Vectors.sparse(d, X[i].indices.tolist(), X[i].data.astype(float).tolist()),
             float(y_true[i]) if labeled[i] else None, int(y_true[i])) for i in range(n)]
    return spark.createDataFrame(rows, ["id", "features", "label", "truth"]).repartition(3)


def test_sparse_vectors_are_reduced_and_scored_without_densifying(sparse_users, tmp_path):
    from deepseg.spark.ml import DeepSegmentation, DeepSegmentationModel

    model = DeepSegmentation(seed=0, sparseComponents=16, **FAST).fit(sparse_users)
    assert model.reduction is not None and model.reduction.components.shape == (16, 300)
    assert model.numFeatures == 300 and model.result.supervised.f.dense1.in_features == 16
    out = model.transform(sparse_users)
    assert out.columns == sparse_users.columns + ["probability", "prediction"]  # the reduced column is dropped
    rows = out.orderBy("id").select("id", "features", "probability", "prediction", "label", "truth").collect()
    assert rows[0]["features"].size == 300  # the input column as it came
    unlabeled = [r for r in rows if r["label"] is None]
    assert np.mean([r["prediction"] == r["truth"] for r in unlabeled]) > 0.85

    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = DeepSegmentationModel.load(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.reduction.components, model.reduction.components)
    again = loaded.transform(sparse_users).orderBy("id").select("probability").collect()
    assert [r["probability"] for r in again] == [r["probability"] for r in rows]


def test_the_data_check_reads_only_the_stored_values_of_sparse_vectors(spark):
    """A NaN stored in a sparse vector is found, a null vector row is counted as such, and a vector
    10 million wide is checked without being expanded to its width."""
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import functions as F

    from deepseg.spark.arrow import vector_check_counts
    from deepseg.spark.ml import DeepSegmentation

    d = 10_000_000
    rows = [(Vectors.sparse(d, [3, d - 1], [1.0, float("nan") if i == 4 else 2.0]), None if i % 2 else 1.0)
            for i in range(40)] + [(None, 0.0)]
    df = spark.createDataFrame(rows, ["features", "label"]).repartition(3)
    assert vector_check_counts(df, "features", F.col("label").isNull()) == (1, 1, 20)
    with pytest.raises(ValueError, match="column 'features' has 1 null row"):
        DeepSegmentation(seed=0, **FAST).fit(df)
    with pytest.raises(ValueError, match=r"column 'features' has 1 row\(s\) with null, NaN or ±inf"):
        DeepSegmentation(seed=0, **FAST).fit(df.where(F.col("features").isNotNull()))


def test_sparse_components_zero_reads_sparse_vectors_as_dense_arrays(sparse_users):
    from deepseg.spark.ml import DeepSegmentation

    model = DeepSegmentation(seed=0, sparseComponents=0, **dict(FAST, numIter=1)).fit(sparse_users)
    assert model.reduction is None and model.numFeatures == 300
    assert model.transform(sparse_users).count() == 600


def test_arrow_csr_reads_sparse_and_dense_vector_rows():
    """Spark's Arrow form of a Vector column (struct<type, size, indices, values>), sliced."""
    import pyarrow as pa

    from deepseg.spark.lsa import arrow_csr

    struct = pa.struct([("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                        ("values", pa.list_(pa.float64()))])
    column = pa.array([
        {"type": 0, "size": 4, "indices": [0], "values": [9.0]},  # sliced off below
        {"type": 0, "size": 4, "indices": [1, 3], "values": [1.0, 2.0]},
        {"type": 1, "size": None, "indices": None, "values": [5.0, 0.0, 6.0, 7.0]},
        {"type": 0, "size": 4, "indices": [], "values": []},
    ], struct)[1:]
    X = arrow_csr(column, 4)
    np.testing.assert_array_equal(X.toarray(), [[0, 1, 0, 2], [5, 0, 6, 7], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="size 4; expected 5"):
        arrow_csr(column, 5, "features")


def test_only_wide_vectors_mostly_stored_sparse_are_reduced(spark, sparse_users):
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from deepseg.spark.lsa import fit_reduction

    assert fit_reduction(sparse_users, "features", 16, seed=0).components.shape == (16, 300)
    assert fit_reduction(sparse_users, "features", 300, seed=0) is None  # not wider
    dense = sparse_users.withColumn("features", array_to_vector(vector_to_array("features")))
    assert fit_reduction(dense, "features", 16, seed=0) is None  # stored dense: read as arrays
    assert fit_reduction(sparse_users, "id", 16, seed=0) is None  # not a Vector column
