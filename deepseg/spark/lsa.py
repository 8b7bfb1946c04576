"""Wide sparse Vector columns on Spark: the LSA reduction of :mod:`deepseg.core.lsa`.

A ``pyspark.ml`` Vector column wider than ``sparseComponents`` whose rows are mostly stored
sparse (in the sample below; VectorAssembler stores each row the shorter way) is reduced before training, as ``DeepSegmentationClassifier`` reduces ``scipy.sparse`` input: the
truncated SVD is fitted on the driver on a seeded sample of rows (at most :data:`SAMPLE_ROWS`,
collected as CSR), and every row is reduced on the executors (``mapInArrow``), to a new
``array<float>`` column that training and scoring read. No row is densified to its full width.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from deepseg.core.lsa import SparseReduction
from deepseg.spark.arrow import arrow_list

#: The reduced features column added next to the input's columns.
LSA_FEATURES = "__deepseg_lsa"
#: Rows the SVD is fitted on (a seeded sample of the DataFrame beyond that).
SAMPLE_ROWS = 100_000


def vector_width(df, column: str) -> int | None:
    """The vectors' size where `column` is a Vector column (that of its first row), else None."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    if column not in df.columns or not isinstance(df.schema[column].dataType, VectorUDT):
        return None
    first = df.select(column).where(F.col(column).isNotNull()).first()
    return None if first is None else first[0].size


def arrow_csr(column: pa.Array | pa.ChunkedArray, width: int, name: str = "features") -> sp.csr_matrix:
    """A Vector column as Arrow carries it (struct<type, size, indices, values>; type 0 sparse,
    1 dense) as a float32 CSR matrix of `width` columns, without a per-row Python loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null rows")
    kind, size, indices, values = column.flatten()  # honours slicing offsets
    n = len(column)
    lengths = np.asarray(pc.list_value_length(values).fill_null(0), dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    dense = np.asarray(kind) == 1
    sizes = np.where(dense, lengths, np.asarray(size.fill_null(0), dtype=np.int64))
    if n and (sizes != width).any():
        raise ValueError(f"column {name!r} has vectors of size {int(sizes[sizes != width][0])}; expected {width}")
    cols = np.empty(indptr[-1], dtype=np.int32)
    in_dense = np.repeat(dense, lengths)
    cols[~in_dense] = np.asarray(indices.flatten(), dtype=np.int32)
    cols[in_dense] = (np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths))[in_dense]
    data = np.asarray(values.flatten(), dtype=np.float32)
    return sp.csr_matrix((data, cols, indptr), shape=(n, width))


def fit_reduction(df, column: str, n_components: int, seed: int,
                  max_rows: int = SAMPLE_ROWS) -> SparseReduction | None:
    """The reduction of `column`'s rows (fitted on a sample of them), or None where the column is
    not a Vector column wider than `n_components`, its sampled rows are mostly stored dense, or
    there are too few of them."""
    width = vector_width(df, column)
    if width is None or width <= n_components:
        return None
    n = df.count()
    sample = df if n <= max_rows else df.sample(fraction=min(1.0, max_rows / n), seed=seed)
    vectors = sample.select(column).toArrow().column(0)
    stored_sparse = np.mean(np.asarray(pc.struct_field(vectors, [0])) == 0) if len(vectors) else 0.0
    if stored_sparse < 0.5 or len(vectors) <= n_components:
        return None
    return SparseReduction.fit(arrow_csr(vectors, width, column), n_components, seed)


def with_reduction(df, column: str, reduction: SparseReduction):
    """`df` plus :data:`LSA_FEATURES`: `column` reduced, row by row, on the executors."""
    from pyspark.sql import types as T

    width = reduction.components.shape[1]
    schema = T.StructType(df.schema.fields + [T.StructField(LSA_FEATURES, T.ArrayType(T.FloatType()))])

    def reduce(batches):
        for batch in batches:
            X = arrow_csr(batch.column(column), width, column)
            yield batch.append_column(LSA_FEATURES, arrow_list(reduction.transform(X)))

    return df.mapInArrow(reduce, schema)


def reduction_arrays(reduction: SparseReduction) -> dict[str, np.ndarray]:
    return {"components": reduction.components, "mean": reduction.mean, "scale": np.float32(reduction.scale)}


def reduction_from_arrays(arrays: dict[str, np.ndarray]) -> SparseReduction:
    return SparseReduction(arrays["components"].astype(np.float32), arrays["mean"].astype(np.float32),
                           float(arrays["scale"]))
