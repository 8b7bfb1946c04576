"""Arrow columns become float32 matrices (and back) exactly, and bad columns are named."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from deepseg.spark.arrow import arrow_list, arrow_matrix, is_labeled


def test_arrow_list_and_arrow_matrix_round_trip():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = arrow_list(X)
    assert column.type == pa.list_(pa.float32())
    np.testing.assert_array_equal(arrow_matrix(column, 3), X)
    np.testing.assert_array_equal(arrow_matrix(column.slice(1, 2)), X[1:3])  # honours offsets
    chunked = pa.chunked_array([column.slice(0, 1), column.slice(1)])
    np.testing.assert_array_equal(arrow_matrix(chunked), X)
    assert arrow_matrix(pa.chunked_array([], column.type), 3).shape == (0, 3)
    assert arrow_matrix(column).flags.writeable


@pytest.mark.parametrize("values, n_features, match", [
    ([[1.0, 2.0], None], None, "'x' has 1 null rows"),
    ([[1.0, 2.0], [3.0]], None, r"'x' has arrays of different lengths \(1 to 2\)"),
    ([[1.0, 2.0], [3.0, 4.0]], 3, "'x' has 2 values per row; expected 3"),
    ([[1.0, None], [3.0, 4.0]], None, "'x' has 1 null array elements"),
])
def test_arrow_matrix_names_the_column_it_refuses(values, n_features, match):
    with pytest.raises(ValueError, match=match):
        arrow_matrix(pa.array(values, pa.list_(pa.float64())), n_features, "x")


@pytest.mark.spark
def test_is_labeled_leaves_out_null_and_nan_labels(spark):
    df = spark.createDataFrame([(0, 1, 1.0), (1, None, float("nan")), (2, 0, None)],
                               "id int, k int, w double")
    for column, labeled in (("k", [0, 2]), ("w", [0])):
        rows = df.filter(is_labeled(column, df.schema[column].dataType)).collect()
        assert sorted(r.id for r in rows) == labeled
