"""Audiences: top-k and threshold per segment, content ids, and the CSV export."""

from __future__ import annotations

import csv
from datetime import datetime

import pytest

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def user_segments(spark):
    """Five users in two segments (``propensities[segment]`` is their propensity); 2 and 4 tie."""
    then = datetime(2025, 1, 1)
    rows = [(1, 0, [0.9, 0.1]), (2, 0, [0.6, 0.4]), (3, 1, [0.3, 0.7]), (4, 0, [0.6, 0.4]), (5, 1, [0.45, 0.55])]
    return spark.createDataFrame([(u, s, p, "v1", "r0", then, u) for u, s, p in rows],
                                 "user_id long, segment int, propensities array<float>, model_version string, "
                                 "run_id string, scored_at timestamp, feature_hash long")


def _rows(audiences):
    return sorted((r.segment, r.rank, r.user_id, round(r.propensity, 4), r.content_id)
                  for r in audiences.collect())


def test_top_k_per_segment_ties_broken_by_user_id(user_segments):
    from deepseg.pipeline.audiences import AUDIENCE_COLUMNS, build_audiences

    audiences = build_audiences(user_segments, top_k=2, content={0: "welcome", 1: "upgrade"},
                                names={0: "starters", 1: "teams"}, run_id="run-1")
    assert tuple(audiences.columns) == AUDIENCE_COLUMNS
    assert sorted({(r.segment, r.segment_name) for r in audiences.collect()}) == [(0, "starters"), (1, "teams")]
    assert _rows(audiences) == [(0, 1, 1, 0.9, "welcome"), (0, 2, 2, 0.6, "welcome"),
                                (1, 1, 3, 0.7, "upgrade"), (1, 2, 5, 0.55, "upgrade")]
    rows = audiences.collect()
    assert {(r.model_version, r.run_id) for r in rows} == {("v1", "run-1")} and len({r.created_at for r in rows}) == 1


def test_threshold_and_default_content(user_segments):
    from deepseg.pipeline.audiences import build_audiences

    audiences = build_audiences(user_segments, threshold=0.6, content={1: "upgrade"}, default_content="generic")
    assert _rows(audiences) == [(0, 1, 1, 0.9, "generic"), (0, 2, 2, 0.6, "generic"), (0, 3, 4, 0.6, "generic"),
                                (1, 1, 3, 0.7, "upgrade")]
    both = build_audiences(user_segments, top_k=1, threshold=0.8)
    assert _rows(both) == [(0, 1, 1, 0.9, None)] and both.first().segment_name is None
    with pytest.raises(ValueError, match="set top_k, threshold or both"):
        build_audiences(user_segments)


def test_csv_export_one_folder_per_segment_with_its_stamp(user_segments, tmp_path):
    from deepseg.pipeline.audiences import build_audiences, export_csv, export_stamp

    directory = tmp_path / "audiences"
    assert export_stamp(str(directory)) is None
    audiences = build_audiences(user_segments, top_k=2, default_content="c", names={0: "a", 1: "b"}, run_id="run-1")
    assert export_csv(audiences, str(directory), stamp={"table": "t", "version": 3}) == str(directory)
    assert export_stamp(str(directory)) == {"table": "t", "version": 3}
    assert sorted(p.name for p in directory.glob("segment=*")) == ["segment=0", "segment=1"]
    exported = {}
    for part in directory.glob("segment=*/*.csv"):
        with part.open(newline="") as f:
            for row in csv.DictReader(f):
                assert list(row) == ["segment_name", "rank", "user_id", "propensity", "content_id", "model_version"]
                exported[int(part.parent.name.split("=")[1]), int(row["rank"])] = (
                    row["segment_name"], row["user_id"], row["content_id"])
    assert exported == {(0, 1): ("a", "1", "c"), (0, 2): ("a", "2", "c"), (1, 1): ("b", "3", "c"),
                        (1, 2): ("b", "5", "c")}


def test_a_failed_or_killed_csv_export_never_leaves_a_partial_export(spark, tmp_path):
    from pyspark.sql import functions as F

    from deepseg.pipeline.audiences import AUDIENCE_COLUMNS, export_csv, export_stamp

    now = datetime(2025, 1, 1)
    audiences = spark.createDataFrame(
        [(s, f"name{s}", r, 100 * s + r, 1.0 - r / 10, f"content{s}", "v1", "run", now)
         for s in range(5) for r in (1, 2, 3)],
        list(AUDIENCE_COLUMNS))
    directory = tmp_path / "exports" / "audiences"

    def listing():
        return sorted((str(p.relative_to(directory)), p.read_bytes()) for p in directory.rglob("*") if p.is_file())

    def leftovers():
        return sorted(p.name for p in directory.parent.iterdir() if p.name not in ("audiences", ".audiences.lock"))

    export_csv(audiences, str(directory), stamp={"version": 1})
    first = listing()
    assert export_stamp(str(directory)) == {"version": 1}
    assert len([name for name, _ in first if name.endswith(".csv")]) == 5

    # the write fails after some segments' files are written: the previous export stays whole
    last = audiences.agg(F.max("segment")).first()[0]
    failing = audiences.withColumn("rank", F.when(F.col("segment") == last, F.raise_error(F.lit("boom")))
                                   .otherwise(F.col("rank")))
    with pytest.raises(Exception, match="boom"):
        export_csv(failing, str(directory), stamp={"version": 2})
    assert listing() == first and leftovers() == []

    # a run killed while writing (a staged folder left) or between its two renames (no export,
    # the previous one set aside): the next export cleans up and swaps its own in
    (directory.parent / ".audiences.tmp-killed" / "segment=0").mkdir(parents=True)
    (directory.parent / ".audiences.tmp-killed" / "segment=0" / "part-0.csv").write_text("rank,user_id\n1,")
    directory.rename(directory.parent / ".audiences.old-killed")
    assert export_stamp(str(directory)) is None
    export_csv(audiences.filter("segment < 2"), str(directory), stamp={"version": 3})
    assert export_stamp(str(directory)) == {"version": 3} and leftovers() == []
    assert sorted(p.name for p in directory.glob("segment=*")) == ["segment=0", "segment=1"]
