"""Scoring and embedding any DataFrame with a fitted model, lazily, on the executors.

The model is broadcast once and each task runs it over its Arrow batches (``mapInArrow``), so
the users never leave the cluster: the output DataFrame is the input's kept columns plus the
model's outputs, ready to write to a table.
"""

from __future__ import annotations

from functools import partial
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from deepseg.core.loop import DeepSegResult
from deepseg.core.pseudo import EMAEnsemble
from deepseg.core.train import embed, torch_threads
from deepseg.spark.arrow import FEATURES, arrow_list, arrow_matrix, float_array_column


# ---------------------------------------------------------------------------------------------
# Executor-side functions (module level: pickled by reference)


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
# DataFrame -> DataFrame


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
