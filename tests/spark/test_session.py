"""get_spark gives a working Delta Lake session: write, MERGE, history."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.spark


def test_delta_write_merge_history(spark, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "users")
    spark.range(4).selectExpr("id", "id * 10 AS score").write.format("delta").save(path)

    updates = spark.range(2, 6).selectExpr("id", "id * 100 AS score")
    (DeltaTable.forPath(spark, path).alias("t")
        .merge(updates.alias("s"), "t.id = s.id")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())

    rows = {r.id: r.score for r in spark.read.format("delta").load(path).collect()}
    assert rows == {0: 0, 1: 10, 2: 200, 3: 300, 4: 400, 5: 500}
    ops = [r.operation for r in
           DeltaTable.forPath(spark, path).history().orderBy("version").collect()]
    assert ops == ["WRITE", "MERGE"]


def test_session_uses_local_jars_not_packages(spark):
    from deepseg.spark.session import local_jars

    if not local_jars():
        pytest.skip("no .jars/ installed (run scripts/install_jars.py)")
    assert "delta" in spark.conf.get("spark.jars", "")
    assert spark.conf.get("spark.jars.packages", None) is None
