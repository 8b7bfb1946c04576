"""score_dataframe and embed_dataframe append the model's outputs to any DataFrame, lazily."""
from __future__ import annotations

import numpy as np
import pytest

from deepseg.core.embed import SegmentationNet
from deepseg.core.pseudo import EMAEnsemble, frozen_copy
from tests.spark.users import indexed_users, untrained_ensemble

pytestmark = pytest.mark.spark


def test_score_dataframe_appends_columns_without_collecting(spark):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    from deepseg.spark.scoring import score_dataframe

    X, _ = indexed_users(spark, 300)
    schema = T.StructType([T.StructField("id", T.LongType()),
                           T.StructField("features", T.ArrayType(T.DoubleType())),
                           T.StructField("vec", VectorUDT())])
    df = spark.createDataFrame([(i, x.tolist(), Vectors.dense(x.tolist())) for i, x in enumerate(X)], schema)
    ensemble = untrained_ensemble(3)
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


def test_score_dataframe_keep_columns(spark):
    from deepseg.spark.scoring import score_dataframe

    X, _ = indexed_users(spark, 200)
    df = spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(X)], "id long, features array<float>")
    ensemble = untrained_ensemble(3)
    out = score_dataframe(df, ensemble, keep_columns=["id"])
    assert out.columns == ["id", "propensities", "segment"]
    rows = sorted(out.collect())
    np.testing.assert_allclose(np.array([r.propensities for r in rows]), ensemble(X), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"keep_columns \['nope'\]"):
        score_dataframe(df, ensemble, keep_columns=["nope"])


def test_embed_dataframe_appends_the_last_iterations_embedding(spark):
    from deepseg.core.train import embed
    from deepseg.spark.scoring import embed_dataframe

    X, _ = indexed_users(spark, 200)
    df = spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(X)], "id long, features array<double>")
    ensemble = EMAEnsemble([frozen_copy(SegmentationNet(3, 4)) for _ in range(2)], 0.8)
    out = embed_dataframe(df, ensemble, embedding_col="z", keep_columns=["id"])
    assert out.columns == ["id", "z"]
    rows = sorted(out.collect())
    np.testing.assert_allclose(np.array([r.z for r in rows]), embed(ensemble.nets[-1], X), rtol=1e-5, atol=1e-6)
    assert not np.allclose(embed(ensemble.nets[0], X), embed(ensemble.nets[-1], X))
    with pytest.raises(ValueError, match=r"already exist"):
        embed_dataframe(df, ensemble, embedding_col="id", keep_columns=["id"])
