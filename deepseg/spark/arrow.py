"""Arrow <-> numpy conversions and the DataFrame column helpers the Spark modules share.

Users cross between the JVM and Python as Arrow batches; these helpers turn an array column into a
float32 matrix (and back) without per-row Python, and build the Spark columns and labels the
backend and scoring functions use.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Columns of the internal DataFrames: a row id, and the features as array<float>.
ROW_ID = "__deepseg_row_id"
FEATURES = "__deepseg_features"


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


@contextlib.contextmanager
def job_description(sc, description: str):
    """Label the Spark jobs started in this block (Spark UI), restoring the previous label."""
    previous = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(description)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.job.description", previous)


def vector_check_counts(df, column: str, flag) -> tuple[int, int, int]:
    """(null rows, rows with a NaN or ±inf value, rows where the boolean Column `flag` holds) of the
    Vector column `column`, in one pass over the stored values as Arrow carries them
    (struct<type, size, indices, values>): a wide sparse vector is never expanded to its width."""
    from pyspark.sql import functions as F

    def counts(batches):
        for batch in batches:
            vectors, flags = batch.column(0), batch.column(1)
            values = vectors.flatten()[3]  # null where the vector is
            lengths = np.asarray(pc.list_value_length(values).fill_null(0), dtype=np.int64)
            stored = np.asarray(values.flatten(), dtype=np.float64)
            rows = np.repeat(np.arange(len(batch)), lengths)[~np.isfinite(stored)]
            yield pa.RecordBatch.from_pydict({"n_null": [vectors.null_count], "n_bad": [len(np.unique(rows))],
                                              "n_flag": [int(np.sum(np.asarray(flags.fill_null(False))))]})

    totals = (df.select(F.col(column), flag.alias("flag")).mapInArrow(counts, "n_null long, n_bad long, n_flag long")
              .agg(F.sum("n_null"), F.sum("n_bad"), F.sum("n_flag")).first())
    return tuple(int(v or 0) for v in totals)


def is_labeled(label_col: str, ltype):
    """A Column: true where `label_col` (of Spark type `ltype`) holds a label (not null/NaN)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cond = F.col(label_col).isNotNull()
    if isinstance(ltype, (T.FloatType, T.DoubleType)):
        cond = cond & ~F.isnan(F.col(label_col))
    return cond
