"""⑦ Scoring: which users to (re)score, whose segments to delete, and a tiny model's rows."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

pytestmark = pytest.mark.spark

SEGMENTS = "user_id long, segment int, propensities array<float>, model_version string, run_id string, " \
           "scored_at timestamp, feature_hash long"


@pytest.fixture(scope="module")
def features(spark):
    """Users 1-4 today: ``user_id, features, feature_hash``."""
    X = np.array([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0], [-1.5, -0.5, 1.0], [0.3, 3.0, 2.0]], dtype=np.float32)
    return spark.createDataFrame([(u, x.tolist(), 100 + u) for u, x in zip((1, 2, 3, 4), X)],
                                 "user_id long, features array<float>, feature_hash long"), X


@pytest.fixture(scope="module")
def scored(spark):
    """``user_segments`` as yesterday left it: 1 unchanged (v1), 2 changed since, 3 scored by v0,
    5 deleted since; 4 is new."""
    then = datetime(2025, 1, 1)
    return spark.createDataFrame([
        (1, 0, [0.9, 0.1], "v1", "r0", then, 101),
        (2, 1, [0.2, 0.8], "v1", "r0", then, 999),
        (3, 0, [0.6, 0.4], "v0", "r0", then, 103),
        (5, 1, [0.3, 0.7], "v1", "r0", then, 105),
    ], SEGMENTS)


def test_rows_to_score_are_new_changed_or_another_versions(features, scored):
    from deepseg.pipeline.score import rows_to_score

    todo = rows_to_score(features[0], scored, "v1")
    assert todo.columns == ["user_id", "feature_hash", "features"]
    assert sorted(r.user_id for r in todo.collect()) == [2, 3, 4]
    assert sorted(r.user_id for r in rows_to_score(features[0], scored, "v2").collect()) == [1, 2, 3, 4]


def test_stale_users_are_the_scored_users_no_longer_in_users(spark, scored):
    from deepseg.pipeline.score import stale_users

    users = spark.createDataFrame([(u,) for u in (1, 2, 3, 4)], "user_id long")
    assert [r.user_id for r in stale_users(scored, users).collect()] == [5]
    assert stale_users(scored, users.union(spark.createDataFrame([(5,)], "user_id long"))).isEmpty()


def test_score_users_writes_a_tiny_models_segments(features):
    from deepseg.core.embed import SegmentationNet
    from deepseg.core.pseudo import EMAEnsemble, frozen_copy
    from deepseg.pipeline.score import SEGMENT_COLUMNS, score_users

    df, X = features
    model = EMAEnsemble([frozen_copy(SegmentationNet(3, 3)) for _ in range(2)], 0.8)
    out = score_users(df, model, model_version="v7", run_id="run-1")
    assert tuple(out.columns) == SEGMENT_COLUMNS
    rows = sorted(out.collect())
    expected = model(X)
    assert [r.user_id for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose(np.array([r.propensities for r in rows]), expected, rtol=1e-5, atol=1e-7)
    assert [r.segment for r in rows] == expected.argmax(1).tolist()
    assert {(r.model_version, r.run_id) for r in rows} == {("v7", "run-1")}
    assert [r.feature_hash for r in rows] == [101, 102, 103, 104]
    assert len({r.scored_at for r in rows}) == 1  # one time for the whole run
