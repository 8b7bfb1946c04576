"""Small users DataFrames and an untrained model for the Spark tests (a plain module: conftest
files are not importable by name)."""
from __future__ import annotations

import numpy as np

from deepseg.core.embed import SegmentationNet
from deepseg.core.pseudo import EMAEnsemble, frozen_copy


def indexed_users(spark, n, d=3):
    """Users whose first feature is their index (exact in float32)."""
    X = np.column_stack([np.arange(n), np.random.default_rng(0).normal(size=(n, d - 1))]).astype(np.float32)
    return X, spark.createDataFrame([(x.tolist(),) for x in X], "features array<float>")


def untrained_ensemble(d, c=4):
    return EMAEnsemble([frozen_copy(SegmentationNet(d, c))], 0.8)
